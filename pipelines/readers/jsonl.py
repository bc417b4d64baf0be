"""JSON lines (plain, gzip, zstd, ...): one row per non-blank line, decoded line by line.

Each line is decoded and parsed on its own, so one bad line (invalid UTF-8, bad JSON, not an
object, no text) becomes one quarantined row and the rest of the file is still read. A corrupt
or truncated compressed stream keeps every line before the damage and becomes one "corrupt_stream"
row describing the damaged span (rows.corrupt_row); reading resumes at the next gzip member or
zstd frame that decompresses, if any. The lines lost in a span cannot be counted (`records_lost`
is null), and lines after it are numbered on from the span's row.
"""

from __future__ import annotations

import json
from typing import Iterator

from pipelines.readers.compression import CorruptStream, damage, open_decompressed
from pipelines.readers.rows import MAX_DOC_BYTES, Row, capped, corrupt_row, record_to_row, too_large
from pipelines.records import quarantine
from pipelines.reasons import BAD_JSON, INVALID_UTF8, NOT_OBJECT

_BOM = b"\xef\xbb\xbf"


def _lines(f, limit: int) -> Iterator[bytes | int]:
    """The stream's lines, each read at most `limit` + 1 bytes at a time: a longer line is not held whole, it is
    skipped to its end and yields its size (an int) instead."""
    while True:
        raw = f.readline(limit + 1)
        if not raw:
            return
        if len(raw) <= limit or raw.endswith(b"\n"):
            yield raw
            continue
        size = len(raw)
        while raw and not raw.endswith(b"\n"):
            raw = f.readline(1 << 20)
            size += len(raw)
        yield size


def iter_jsonl(path: str, text_field: str, id_field: str | None, url_field: str | None,
               max_doc_bytes: int = MAX_DOC_BYTES) -> Iterator[Row]:
    index = 0  # the line number is the record index (blank lines are not records but keep numbering)
    start: int | None = 0
    while start is not None:
        try:
            with open_decompressed(path, start) as f:
                for raw in _lines(f, max_doc_bytes):
                    if isinstance(raw, int):
                        yield too_large(index, raw, max_doc_bytes)
                        index += 1
                        continue
                    if not raw.endswith(b"\n") and damage(f) is not None:
                        break  # a line cut by the damage belongs to the lost span
                    line = raw.rstrip(b"\r\n")
                    if index == 0 and line.startswith(_BOM):
                        line = line[len(_BOM):]
                    if line.strip():
                        yield line_row(index, line, text_field, id_field, url_field)
                    index += 1
            start = None
        except CorruptStream as e:
            yield corrupt_row(index, e, records_lost=None)
            index, start = index + 1, e.resume


def line_row(index: int, line: bytes, text_field: str, id_field: str | None, url_field: str | None) -> Row:
    try:
        s = line.decode("utf-8")
    except UnicodeDecodeError:
        return Row(index, text=capped(line.decode("utf-8", "replace")), reason=quarantine(INVALID_UTF8))
    try:
        rec = json.loads(s)
    except (ValueError, RecursionError):
        return Row(index, text=capped(s), reason=quarantine(BAD_JSON))
    if not isinstance(rec, dict):
        return Row(index, text=capped(s), reason=quarantine(NOT_OBJECT))
    return record_to_row(index, rec, text_field, id_field, url_field)
