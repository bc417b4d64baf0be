"""What exact and near-duplicate removal share: key partitioning and a shard's drop list."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import xxhash

from pipelines.duplicates import mark_duplicates

PART_COL = "part"
DROP_SCHEMA = pa.schema([("id", pa.string()), ("survivor", pa.string()), ("shard", pa.string())])


def partition_of(values: list, partitions: int) -> np.ndarray:
    """Stable partition of a key (int or str): the same on every machine and process."""
    if len(values) and isinstance(values[0], str):
        return np.fromiter((xxhash.xxh64_intdigest(v.encode("utf-8")) % partitions for v in values), np.int64, len(values))
    return (np.asarray(values, dtype=np.uint64) % np.uint64(partitions)).astype(np.int64)


def load_drops(files: list[str], shard: str) -> dict[str, str]:
    """id -> survivor for the documents of one shard, read from the global step's drop files (sorted by
    shard, so parquet's row-group statistics skip other shards' rows)."""
    out: dict[str, str] = {}
    for f in files:
        t = pq.read_table(f, columns=["id", "survivor"], filters=[("shard", "=", shard)])
        out.update(zip(t.column("id").to_pylist(), t.column("survivor").to_pylist()))
    return out


def write_drops(rows: pa.Table, path: Path) -> dict:
    """Write (id, survivor, shard) rows sorted by (shard, id) with small row groups; return its entry."""
    rows = rows.cast(DROP_SCHEMA).sort_by([("shard", "ascending"), ("id", "ascending")])
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    pq.write_table(rows, tmp, compression="zstd", row_group_size=8192)
    tmp.replace(path)
    return {"path": str(path), "rows": rows.num_rows}


class DropListStage:
    """apply(): mark the documents named by this shard's drop list with `reason` and duplicate_of."""

    reason: str

    def open_shard(self, ctx) -> None:
        drops = load_drops(ctx.state.get(self.name, {}).get("drop_files", []), ctx.shard)
        self._dups = pa.table({"id": list(drops), "value": list(drops.values())}) if drops else None

    def apply(self, batch: pa.Table, ctx) -> pa.Table:
        return batch if self._dups is None else mark_duplicates(batch, self._dups, self.reason)
