"""Writing and reading a stage's output shards (parquet with zstd, or jsonl.zst), deterministically.

A stage's output is partitioned by a hash of the document id into a fixed number of shards, and each
shard is sorted by id, so the bytes written depend only on the documents, never on how many workers
or blocks produced them.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections import Counter
from pathlib import Path
from typing import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import xxhash
import zstandard

from pipelines.records import REASON, RECORD_COLUMNS, RECORD_SCHEMA, is_quarantined

DROPPED_SCHEMA = RECORD_SCHEMA.append(pa.field("reason", pa.string()))
FORMATS = {"parquet": ".parquet", "jsonl.zst": ".jsonl.zst"}
# Character-length histogram bins (powers of two), shared by every stage so plots compare.
LENGTH_BINS = np.array([0] + [2**k for k in range(4, 25)], dtype=np.int64)


def shard_of(ids: list[str], shards: int) -> np.ndarray:
    return np.fromiter((xxhash.xxh64_intdigest(i.encode("utf-8")) % shards for i in ids), dtype=np.int64, count=len(ids))


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _write_table(table: pa.Table, path: Path, fmt: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    if fmt == "parquet":
        pq.write_table(table, tmp, compression="zstd")
    elif fmt == "jsonl.zst":
        buf = io.StringIO()
        for row in table.to_pylist():
            buf.write(json.dumps(row, ensure_ascii=False, sort_keys=True))
            buf.write("\n")
        tmp.write_bytes(zstandard.ZstdCompressor(level=3).compress(buf.getvalue().encode("utf-8")))
    else:
        raise ValueError(f"unknown output format {fmt!r}")
    tmp.replace(path)  # a crashed writer never leaves a half file under the final name


def shard_name(kind: str, shard: int, shards: int, fmt: str) -> str:
    return f"{kind}/part-{shard:05d}-of-{shards:05d}{FORMATS[fmt]}"


def write_shard(table: pa.Table, out_dir: Path, shard: int, shards: int, fmt: str) -> dict:
    """Write one shard's kept and dropped/quarantined documents; return file entries and stats.

    `table` holds the record columns plus REASON. Rows are sorted by id first.
    """
    table = table.sort_by("id")
    reasons = table.column(REASON)
    kept_mask = pc.equal(reasons, "")
    kept = table.filter(kept_mask).select(list(RECORD_COLUMNS)).cast(RECORD_SCHEMA)
    dropped = table.filter(pc.invert(kept_mask))
    dropped = dropped.select([*RECORD_COLUMNS, REASON]).rename_columns([*RECORD_COLUMNS, "reason"])
    dropped = dropped.cast(DROPPED_SCHEMA)

    files = []
    for kind, part in (("kept", kept), ("dropped", dropped)):
        if part.num_rows == 0:
            continue
        rel = shard_name(kind, shard, shards, fmt)
        _write_table(part, out_dir / rel, fmt)
        files.append(
            {
                "path": rel,
                "kind": kind,
                "docs": part.num_rows,
                "bytes": (out_dir / rel).stat().st_size,
                "sha256": sha256_file(out_dir / rel),
            }
        )
    counts = Counter(dropped.column("reason").to_pylist())
    return {
        "files": files,
        "kept": kept.num_rows,
        "dropped": {r: n for r, n in counts.items() if not is_quarantined(r)},
        "quarantined": {r: n for r, n in counts.items() if is_quarantined(r)},
        "text_bytes_kept": int(pc.sum(pc.binary_length(kept.column("text"))).as_py() or 0),
        "length_hist_kept": length_histogram(kept.column("text")),
        "length_hist_dropped": length_histogram(dropped.column("text")),
    }


def length_histogram(texts: pa.ChunkedArray) -> list[int]:
    lengths = pc.utf8_length(texts).to_numpy(zero_copy_only=False) if len(texts) else np.zeros(0)
    idx = np.searchsorted(LENGTH_BINS, lengths, side="right") - 1
    return np.bincount(idx, minlength=len(LENGTH_BINS)).tolist()


def read_shard(path: Path, batch_docs: int = 1000) -> Iterator[pa.Table]:
    """Yield a shard's documents as tables of at most `batch_docs` rows."""
    path = Path(path)
    if path.name.endswith(".parquet"):
        pf = pq.ParquetFile(path)
        for batch in pf.iter_batches(batch_size=batch_docs):
            yield pa.Table.from_batches([batch])
    elif path.name.endswith(".jsonl.zst"):
        with open(path, "rb") as f, zstandard.ZstdDecompressor().stream_reader(f) as reader:
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
    whatever the sizes of the incoming batches. Written to `path.tmp`, renamed on close; a writer that
    got no rows leaves no file (and removes a stale one from an earlier run)."""

    def __init__(self, path: Path, fmt: str, schema: pa.Schema, group_rows: int = 1024):
        if fmt not in FORMATS:
            raise ValueError(f"unknown output format {fmt!r}")
        self.path, self.fmt, self.schema, self.group_rows = Path(path), fmt, schema, group_rows
        self.tmp = self.path.with_name(self.path.name + ".tmp")
        self.rows = 0
        self._buf: list[pa.Table] = []
        self._buffered = 0
        self._out = None

    def _open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
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

    def close(self, root: Path) -> dict | None:
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
        self.tmp.replace(self.path)
        return {"path": str(self.path.relative_to(root)), "docs": self.rows,
                "bytes": self.path.stat().st_size, "sha256": sha256_file(self.path)}
