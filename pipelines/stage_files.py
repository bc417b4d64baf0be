"""Writing and reading a stage's output shards (parquet with zstd, or jsonl.zst), deterministically.

A shard keeps its documents in file order and `RecordWriter` writes fixed row groups, so the bytes
written depend only on the documents, never on how many workers or batches produced them.
"""

from __future__ import annotations

import functools
import io
import json
from pathlib import Path
from typing import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import zstandard

from pipelines import storage
from pipelines.hashing import sha256_file
from pipelines.records import RECORD_SCHEMA

DROPPED_SCHEMA = RECORD_SCHEMA.append(pa.field("reason", pa.string()))
FORMATS = {"parquet": ".parquet", "jsonl.zst": ".jsonl.zst"}
# Character-length histogram bins (powers of two), shared by every stage so plots compare.
LENGTH_BINS = np.array([0] + [2**k for k in range(4, 25)], dtype=np.int64)


def file_identity(path) -> str:
    """What a model file is, for digests and resume keys: its sha256, never where it lies (two identical runs in
    different workdirs have the same digests). Cached in this process by (path, size, mtime)."""
    st = storage.path(path).stat()
    return _sha256_cached(str(path), st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=64)
def _sha256_cached(path: str, size: int, mtime_ns: int) -> str:
    return sha256_file(path)


def content_params(params: dict) -> dict:
    """`params` with every `*model_path` (at any depth) replaced by `*model_sha256`: the file's content, not
    its location."""
    out = {}
    for k, v in params.items():
        if isinstance(v, dict):
            out[k] = content_params(v)
        elif k.endswith("model_path") and isinstance(v, str) and v:
            out[k.removesuffix("path") + "sha256"] = file_identity(v)
        else:
            out[k] = v
    return out


def length_histogram(texts: pa.ChunkedArray) -> list[int]:
    lengths = pc.utf8_length(texts).to_numpy(zero_copy_only=False) if len(texts) else np.zeros(0)
    idx = np.searchsorted(LENGTH_BINS, lengths, side="right") - 1
    return np.bincount(idx, minlength=len(LENGTH_BINS)).tolist()


def read_parquet(path, columns: list[str] | None = None, filters=None) -> pa.Table:
    """A parquet file (local or a URI), or some of its columns, or the rows `filters` selects."""
    fs, where = storage.pyarrow_location(path)
    return pq.read_table(where, columns=columns, filters=filters, filesystem=fs)


def read_shard(path, batch_docs: int = 1000) -> Iterator[pa.Table]:
    """Yield a shard's documents (a local path or a URI) as tables of at most `batch_docs` rows."""
    path = storage.path(path)
    if path.name.endswith(".parquet"):
        fs, where = storage.pyarrow_location(path)
        for batch in pq.ParquetFile(where, filesystem=fs).iter_batches(batch_size=batch_docs):
            yield pa.Table.from_batches([batch])
    elif path.name.endswith(".jsonl.zst"):
        with path.open("rb") as f, zstandard.ZstdDecompressor().stream_reader(f) as reader:
            rows: list[dict] = []
            for line in io.TextIOWrapper(reader, encoding="utf-8"):
                rows.append(json.loads(line))
                if len(rows) == batch_docs:
                    yield pa.Table.from_pylist(rows)
                    rows = []
            if rows:
                yield pa.Table.from_pylist(rows)
    else:
        raise ValueError(f"{path}: not a tokenmill shard (.parquet or .jsonl.zst)")


class RecordWriter:
    """One output file written while batches stream in, with bytes that depend only on the rows: rows
    are buffered and written in groups of exactly `group_rows` (parquet row groups, or jsonl.zst chunks),
    whatever the sizes of the incoming batches. Written to a local scratch file (`path.tmp` on a local
    disk), published on close (renamed, or uploaded to object storage); a writer that got no rows leaves no
    file (and removes a stale one from an earlier run)."""

    def __init__(self, path, fmt: str, schema: pa.Schema, group_rows: int = 1024):
        if fmt not in FORMATS:
            raise ValueError(f"unknown output format {fmt!r}")
        self.path, self.fmt, self.schema, self.group_rows = storage.path(path), fmt, schema, group_rows
        self.tmp: Path | None = None
        self.rows = 0
        self._buf: list[pa.Table] = []
        self._buffered = 0
        self._out = None

    def _open(self) -> None:
        self.tmp = storage.scratch_for(self.path)
        if self.fmt == "parquet":
            self._out = pq.ParquetWriter(self.tmp, self.schema, compression="zstd")
        else:
            self._raw = open(self.tmp, "wb")
            self._out = zstandard.ZstdCompressor(level=3).stream_writer(self._raw)

    def _emit(self, table: pa.Table) -> None:
        if self._out is None:
            self._open()
        if self.fmt == "parquet":
            self._out.write_table(table, row_group_size=self.group_rows)
        else:
            lines = [json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n" for r in table.to_pylist()]
            self._out.write("".join(lines).encode("utf-8"))

    def write(self, table: pa.Table) -> None:
        if table.num_rows == 0:
            return
        self._buf.append(table.select(self.schema.names).cast(self.schema))
        self._buffered += table.num_rows
        self.rows += table.num_rows
        if self._buffered >= self.group_rows:
            data = pa.concat_tables(self._buf)
            n = (data.num_rows // self.group_rows) * self.group_rows
            self._emit(data.slice(0, n).combine_chunks())
            rest = data.slice(n)
            self._buf, self._buffered = ([rest] if rest.num_rows else []), rest.num_rows

    def close(self, root) -> dict | None:
        """Finish the file; its entry (path relative to root, docs, bytes, sha256), or None if empty."""
        if self._buffered:
            self._emit(pa.concat_tables(self._buf).combine_chunks())
        self._buf, self._buffered = [], 0
        if self._out is None:
            self.path.unlink(missing_ok=True)
            return None
        self._out.close()
        if self.fmt != "parquet":
            self._raw.close()
        entry = {"path": str(self.path.relative_to(storage.path(root))), "docs": self.rows,
                 "bytes": self.tmp.stat().st_size, "sha256": sha256_file(self.tmp)}
        storage.publish(self.tmp, self.path)
        return entry
