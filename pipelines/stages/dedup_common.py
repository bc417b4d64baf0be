"""What exact and near-duplicate removal share: document keys, key partitioning and a shard's drop list.

Inside the dedup steps a document is an int64 key, not its string id:

    key = run << 56 | shard rank << 32 | row

`row` is the document's position among the rows its shard passed to collect() (the order they are
written in), `shard rank` the shard's position among all shard names in byte order, and `run` 0 for
the documents of an earlier run's dedup index named first, 1 for the next, ..., len(indexes) for this
run. Keys are unique by construction (no hash, so nothing to collide), and key order is corpus order:
earlier runs first, then shard name, then position. Every group of duplicates keeps its smallest key,
so an earlier run's document always wins, and in one run the first occurrence does (for ids made by
`records.make_id`, that is also the smallest id).
"""

from __future__ import annotations


import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import xxhash

from pipelines import storage
from pipelines.duplicates import mark_duplicates
from pipelines.stage_files import read_parquet

# the layout of the collected key rows (2: with `row` and, for MinHash, `fp`): in the stages' params, so a
# workdir written with another layout re-collects its keys instead of feeding them to the new steps
KEY_FORMAT = 2
PART_COL = "part"
ROW_COL = "row"
# survivor_run: "" when the survivor is in this run, else the MLflow run id of the earlier run that kept it
DROP_SCHEMA = pa.schema([("id", pa.string()), ("survivor", pa.string()), ("shard", pa.string()),
                         ("survivor_run", pa.string())])
RUN_SHIFT, RANK_SHIFT = 56, 32
MAX_RUNS, MAX_SHARDS, MAX_ROWS = 1 << 7, 1 << 24, 1 << 32  # run < 128 keeps keys positive in int64


def partition_of(values: list, partitions: int) -> np.ndarray:
    """Stable partition of a key (int or str): the same on every machine and process."""
    if len(values) and isinstance(values[0], str):
        return np.fromiter((xxhash.xxh64_intdigest(v.encode("utf-8")) % partitions for v in values), np.int64, len(values))
    return (np.asarray(values, dtype=np.uint64) % np.uint64(partitions)).astype(np.int64)


def shard_ranks(shards: list[str]) -> dict[str, int]:
    names = sorted(set(shards))
    if len(names) > MAX_SHARDS:
        raise ValueError(f"dedup keys hold at most {MAX_SHARDS:,} shards; this run has {len(names):,}: "
                         "raise output.shard_mb")
    return {s: i for i, s in enumerate(names)}


def doc_keys(shard: pa.Array | pa.ChunkedArray, row: np.ndarray, ranks: dict[str, int], run: int) -> np.ndarray:
    """int64 keys of rows given their shard names and rows (see the module docstring)."""
    if not 0 <= run < MAX_RUNS:
        raise ValueError(f"at most {MAX_RUNS - 1} earlier dedup indexes can be named, got {run}")
    row = np.asarray(row, dtype=np.int64)
    if len(row) and row.max() >= MAX_ROWS:
        raise ValueError(f"a shard holds {row.max() + 1:,} documents, more than dedup keys allow ({MAX_ROWS:,}): "
                         "lower output.shard_mb")
    enc = pc.dictionary_encode(shard).combine_chunks() if isinstance(shard, pa.ChunkedArray) else pc.dictionary_encode(shard)
    lookup = np.array([ranks[s] for s in enc.dictionary.to_pylist()], dtype=np.int64)
    rank = lookup[enc.indices.to_numpy(zero_copy_only=False)] if len(enc.dictionary) else np.zeros(0, np.int64)
    return (np.int64(run) << RUN_SHIFT) | (rank << RANK_SHIFT) | row


def key_run(keys: np.ndarray) -> np.ndarray:
    return keys >> RUN_SHIFT


def key_rank(keys: np.ndarray) -> np.ndarray:
    return (keys >> RANK_SHIFT) & (MAX_SHARDS - 1)


def shard_rows(batch: pa.Table, ctx) -> pa.Array:
    """Each row's position among the rows of its shard passed to collect() (see the module docstring)."""
    return pa.array(np.arange(ctx.rows_before, ctx.rows_before + batch.num_rows, dtype=np.int64))


def load_drops(files: list[str], shard: str) -> pa.Table | None:
    """(id, value=survivor, run=survivor_run) for the documents of one shard, read from the global step's
    drop files (sorted by shard, so parquet's row-group statistics skip other shards' rows)."""
    tables = [read_parquet(f, ["id", "survivor", "survivor_run"], filters=[("shard", "=", shard)]) for f in files]
    tables = [t for t in tables if t.num_rows]
    if not tables:
        return None
    return pa.concat_tables(tables).rename_columns(["id", "value", "run"])


def write_drops(rows: pa.Table, path) -> dict:
    """Write (id, survivor, shard, survivor_run) rows sorted by (shard, id) with small row groups."""
    if "survivor_run" not in rows.column_names:
        rows = rows.append_column("survivor_run", pa.array([""] * rows.num_rows, pa.string()))
    rows = rows.select(DROP_SCHEMA.names).cast(DROP_SCHEMA).sort_by([("shard", "ascending"), ("id", "ascending")])
    tmp = storage.scratch_for(path)
    pq.write_table(rows, tmp, compression="zstd", row_group_size=8192)
    storage.publish(tmp, path)
    return {"path": str(path), "rows": rows.num_rows}


class DropListStage:
    """apply(): mark the documents named by this shard's drop list with `reason` and duplicate_of."""

    reason: str

    def open_shard(self, ctx) -> None:
        self._dups = load_drops(ctx.state.get(self.name, {}).get("drop_files", []), ctx.shard)

    def apply(self, batch: pa.Table, ctx) -> pa.Table:
        return batch if self._dups is None else mark_duplicates(batch, self._dups, self.reason)
