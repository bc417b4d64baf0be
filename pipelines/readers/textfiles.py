"""One document per file: `text` (UTF-8, else quarantined) and `html` (any charset, for extraction).

Files may be compressed (detected from magic bytes, like every reader here).
"""

from __future__ import annotations

import codecs
from typing import Iterator

from pipelines.readers.compression import is_corrupt_stream_error, open_decompressed
from pipelines.readers.encoding import decode_html
from pipelines.readers.rows import MAX_DOC_BYTES, Row, capped, corrupt_row, too_large
from pipelines.records import quarantine
from pipelines.reasons import INVALID_UTF8


def _read_bytes(path: str, limit: int) -> bytes | Row:
    try:
        with open_decompressed(path) as f:
            data = f.read(limit + 1)
            if len(data) > limit:  # the file is the one record: quarantined without reading it whole
                size = len(data)
                while chunk := f.read(1 << 20):
                    size += len(chunk)
                return too_large(0, size, limit)
            return data
    except Exception as e:
        if not is_corrupt_stream_error(e):
            raise
        return corrupt_row(0, e, records_lost=1)  # the file is the one record


def iter_text(path: str, max_doc_bytes: int = MAX_DOC_BYTES) -> Iterator[Row]:
    data = _read_bytes(path, max_doc_bytes)
    if isinstance(data, Row):
        yield data
        return
    if data.startswith(codecs.BOM_UTF8):
        data = data[len(codecs.BOM_UTF8):]
    meta = {"content_type": "text/plain"}
    try:
        yield Row(0, text=data.decode("utf-8"), meta=meta)
    except UnicodeDecodeError:
        yield Row(0, text=capped(data.decode("utf-8", "replace")), meta=meta, reason=quarantine(INVALID_UTF8))


def iter_html(path: str, max_doc_bytes: int = MAX_DOC_BYTES) -> Iterator[Row]:
    data = _read_bytes(path, max_doc_bytes)
    if isinstance(data, Row):
        yield data
        return
    text, charset = decode_html(data)
    yield Row(0, text=text, meta={"content_type": "text/html", "charset": charset})
