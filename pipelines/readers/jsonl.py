"""JSON lines (plain, gzip, zstd, ...): one row per non-blank line, decoded line by line.

Each line is decoded and parsed on its own, so one bad line (invalid UTF-8, bad JSON, not an
object, no text) becomes one quarantined row and the rest of the file is still read. A corrupt
or truncated compressed stream ends the file with one "corrupt_stream" quarantine row: the
records before it are kept, the pipeline goes on, and the counts show the file needs a look.
"""

from __future__ import annotations

import json
from typing import Iterator

from pipelines.readers.compression import CorruptStream, error_text, iter_lines
from pipelines.readers.rows import Row, capped, record_to_row
from pipelines.records import quarantine

_BOM = b"\xef\xbb\xbf"


def iter_jsonl(path: str, text_field: str, id_field: str | None, url_field: str | None) -> Iterator[Row]:
    index = -1  # the line number is the record index (blank lines are not records but keep numbering)
    try:
        for index, raw in enumerate(iter_lines(path)):
            line = raw.rstrip(b"\r\n")
            if index == 0 and line.startswith(_BOM):
                line = line[len(_BOM):]
            if line.strip():
                yield line_row(index, line, text_field, id_field, url_field)
    except CorruptStream as e:
        yield Row(index + 1, reason=quarantine("corrupt_stream"), meta={"error": error_text(e)})


def line_row(index: int, line: bytes, text_field: str, id_field: str | None, url_field: str | None) -> Row:
    try:
        s = line.decode("utf-8")
    except UnicodeDecodeError:
        return Row(index, text=capped(line.decode("utf-8", "replace")), reason=quarantine("invalid_utf8"))
    try:
        rec = json.loads(s)
    except (ValueError, RecursionError):
        return Row(index, text=capped(s), reason=quarantine("bad_json"))
    if not isinstance(rec, dict):
        return Row(index, text=capped(s), reason=quarantine("not_object"))
    return record_to_row(index, rec, text_field, id_field, url_field)
