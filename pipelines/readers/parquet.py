"""Parquet files: one row per parquet row, read a batch at a time within each row group.

A row group that cannot be decoded gives one quarantine row per row it holds (its row count is in
the footer), so docs in = kept + dropped + quarantined stays exact; a file whose footer cannot be
read at all gives a single "unreadable_file" row.
"""

from __future__ import annotations

from typing import Any, Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from pipelines import storage
from pipelines.readers.rows import Row, capped, record_to_row, to_json_value
from pipelines.records import quarantine
from pipelines.reasons import INVALID_UTF8, UNREADABLE_FILE, UNREADABLE_ROW_GROUP


def _unreadable(exc: BaseException) -> bool:
    # Arrow's decoding errors; an OSError with an errno is a real I/O error and propagates.
    return isinstance(exc, pa.ArrowException) and not (isinstance(exc, OSError) and exc.errno is not None)


def iter_parquet(
    path: str, text_field: str, id_field: str | None, url_field: str | None, batch_size: int = 1000
) -> Iterator[Row]:
    try:
        fs, where = storage.pyarrow_location(path)
        pf = pq.ParquetFile(where, filesystem=fs)
    except Exception as e:
        if not _unreadable(e):
            raise
        yield Row(0, reason=quarantine(UNREADABLE_FILE), meta={"error": f"{type(e).__name__}: {e}"})
        return
    index = 0
    for rg in range(pf.num_row_groups):
        rows_in_group, done = pf.metadata.row_group(rg).num_rows, 0
        try:
            for batch in pf.iter_batches(batch_size=batch_size, row_groups=[rg]):
                for rec in batch.to_pylist():
                    yield parquet_row(index, rec, text_field, id_field, url_field)
                    index, done = index + 1, done + 1
        except Exception as e:
            if not _unreadable(e):
                raise
            meta = {"error": f"{type(e).__name__}: {e}", "row_group": rg}
            for _ in range(rows_in_group - done):
                yield Row(index, reason=quarantine(UNREADABLE_ROW_GROUP), meta=dict(meta))
                index += 1


def parquet_row(index: int, rec: dict[str, Any], text_field: str, id_field: str | None, url_field: str | None) -> Row:
    text = rec.pop(text_field, None)
    rec = {k: to_json_value(v) for k, v in rec.items()}
    if isinstance(text, (bytes, bytearray)):  # a binary text column: decode it here
        try:
            text = bytes(text).decode("utf-8")
        except UnicodeDecodeError:
            row = record_to_row(index, rec, text_field, id_field, url_field)
            row.text, row.reason = capped(bytes(text).decode("utf-8", "replace")), quarantine(INVALID_UTF8)
            return row
    if text is not None:
        rec[text_field] = text if isinstance(text, str) else to_json_value(text)
    return record_to_row(index, rec, text_field, id_field, url_field)
