"""Raw input files -> record batches: one row per input record, whatever its fate.

read_file yields dicts of equal-length column lists (id, text, source, url, metadata, _reason);
a malformed record becomes a quarantined row (records.quarantine(reason)), never a skipped one,
so that every stage can check docs in = kept + dropped + quarantined.

Formats (FORMATS): jsonl (plain/gzip/zstd/bz2/xz by magic bytes), parquet, warc and wet (the same
reader: HTML responses and WET conversion records), text and html (one document per file).
"""

from __future__ import annotations

from typing import Iterator

from pipelines.readers.jsonl import iter_jsonl
from pipelines.readers.parquet import iter_parquet
from pipelines.readers.paths import list_inputs
from pipelines.readers.rows import MAX_DOC_BYTES, Row, batch_rows
from pipelines.readers.textfiles import iter_html, iter_text
from pipelines.readers.warc import iter_warc

FORMATS = frozenset({"jsonl", "parquet", "warc", "wet", "text", "html"})

__all__ = ["FORMATS", "list_inputs", "read_file"]


def read_file(
    path: str,
    relpath: str,
    fmt: str,
    source: str,
    *,
    text_field: str = "text",
    id_field: str | None = None,
    url_field: str | None = "url",
    batch_size: int = 1000,
    max_doc_bytes: int = MAX_DOC_BYTES,
) -> Iterator[dict[str, list]]:
    """Batches of at most batch_size rows from one file; ids from relpath + record index (or id_field). A JSON
    line, WARC record, text or HTML file over max_doc_bytes is quarantined ("too_large", its size) without being
    read whole (parquet reads whole row groups: its records are not checked)."""
    rows: Iterator[Row]
    if fmt == "jsonl":
        rows = iter_jsonl(path, text_field, id_field, url_field, max_doc_bytes)
    elif fmt == "parquet":
        rows = iter_parquet(path, text_field, id_field, url_field, batch_size)
    elif fmt in ("warc", "wet"):
        rows = iter_warc(path, max_doc_bytes)
    elif fmt == "text":
        rows = iter_text(path, max_doc_bytes)
    elif fmt == "html":
        rows = iter_html(path, max_doc_bytes)
    else:
        raise ValueError(f"unknown input format {fmt!r}; expected one of {', '.join(sorted(FORMATS))}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    return batch_rows(rows, relpath, source, batch_size)
