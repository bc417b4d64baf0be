"""Raw input files -> record batches: one row per input record, whatever its fate.

read_file yields dicts of equal-length column lists (id, text, source, url, metadata, _reason);
a malformed record becomes a quarantined row (records.quarantine(reason)), never a skipped one,
so that every stage can check docs in = kept + dropped + quarantined.

Formats (InputFormat): jsonl (plain/gzip/zstd/bz2/xz by magic bytes), parquet, warc and wet (the same
reader: HTML responses and WET conversion records), text and html (one document per file), and hf (a Hugging
Face dataset, read by index range with `read_hf`).
"""

from __future__ import annotations

from typing import Iterator, Literal, get_args

from pipelines.readers.hf import iter_hf
from pipelines.readers.jsonl import iter_jsonl
from pipelines.readers.parquet import iter_parquet
from pipelines.readers.paths import list_inputs
from pipelines.readers.rows import MAX_DOC_BYTES, Row, batch_rows
from pipelines.readers.textfiles import iter_html, iter_text
from pipelines.readers.warc import iter_warc

FileFormat = Literal["jsonl", "parquet", "warc", "wet", "text", "html"]
InputFormat = Literal[FileFormat, "hf"]  # what a pipeline config's `inputs[].format` may say
FORMATS = frozenset(get_args(FileFormat))

__all__ = ["FORMATS", "FileFormat", "InputFormat", "list_inputs", "read_file", "read_hf"]


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


def read_hf(name_or_path: str, split: str, source: str, start: int, stop: int, *, text_field: str = "text",
            id_field: str | None = None, url_field: str | None = "url", batch_size: int = 1000) -> Iterator[dict[str, list]]:
    """Batches of rows [start, stop) of a Hugging Face dataset split, as read_file yields them (ids name
    `{source}/{split}` and the row index, or the id_field)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    rows = iter_hf(name_or_path, split, start, stop, text_field, id_field, url_field, batch_size)
    return batch_rows(rows, f"{source}/{split}", source, batch_size)
