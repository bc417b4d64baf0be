"""Writing a stage's Ray Dataset as deterministic shards (hash of id -> shard, sorted by id)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import ray

from pipelines.records import REASON
from pipelines.stage_files import read_shard, shard_of, write_shard

SHARD_COL = "_shard"
SIDE_COL = "_side"  # True on rows of the side table joined during the write
SIDE_VALUE_COL = "value"


def _add_shard(batch: pa.Table, shards: int) -> pa.Table:
    return batch.append_column(SHARD_COL, pa.array(shard_of(batch.column("id").to_pylist(), shards)))


def _write_group(group: pa.Table, out_dir: str, shards: int, fmt: str, merge: Callable | None) -> pa.Table:
    shard = int(group.column(SHARD_COL)[0].as_py())
    group = group.drop_columns([SHARD_COL])
    if merge is not None:
        is_side = group.column(SIDE_COL)
        side = group.filter(is_side).select(["id", SIDE_VALUE_COL])
        docs = group.filter(pc.invert(is_side)).drop_columns([SIDE_COL, SIDE_VALUE_COL])
        group = merge(docs, side)
    result = write_shard(group, Path(out_dir), shard, shards, fmt)
    return pa.table({"shard": [shard], "result": [json.dumps(result)]})


def _tag_docs(batch: pa.Table) -> pa.Table:
    n = batch.num_rows
    return batch.append_column(SIDE_COL, pa.array([False] * n)).append_column(SIDE_VALUE_COL, pa.nulls(n, pa.string()))


def _tag_side(batch: pa.Table) -> pa.Table:
    n = batch.num_rows
    cols = {"id": batch.column("id")}
    for name in ("text", "source", "url", "metadata", REASON):
        cols[name] = pa.nulls(n, pa.string())
    cols[SIDE_COL] = pa.array([True] * n)
    cols[SIDE_VALUE_COL] = batch.column(SIDE_VALUE_COL).cast(pa.string())
    return pa.table(cols)


def write_stage(
    ds: ray.data.Dataset,
    out_dir: Path,
    shards: int,
    fmt: str,
    side: ray.data.Dataset | None = None,
    merge: Callable[[pa.Table, pa.Table], pa.Table] | None = None,
) -> list[dict]:
    """Shuffle documents to their shard (on the cluster, not the driver) and write each shard once.

    `side` (columns id, value) is co-partitioned with the documents by id and handed with each shard's
    documents to `merge(docs, side) -> docs`: a hash join that rides on the write's own shuffle.
    Returns one small result per shard: file entries, counts by reason, length histograms.
    """
    if side is not None:
        ds = ds.map_batches(_tag_docs, batch_format="pyarrow").union(side.map_batches(_tag_side, batch_format="pyarrow"))
    ds = ds.map_batches(_add_shard, batch_format="pyarrow", fn_kwargs={"shards": shards}, zero_copy_batch=True)
    results = ds.groupby(SHARD_COL, num_partitions=shards).map_groups(
        _write_group,
        batch_format="pyarrow",
        fn_kwargs={"out_dir": str(out_dir), "shards": shards, "fmt": fmt, "merge": merge},
    )
    return [json.loads(r["result"]) for r in sorted(results.take_all(), key=lambda r: r["shard"])]


def _read_files(batch: dict, batch_docs: int):
    for path in batch["path"]:
        yield from read_shard(Path(path), batch_docs)


def read_stage(files: list[Path], batch_docs: int) -> ray.data.Dataset:
    """A Dataset over a previous stage's kept shards, one read task per file."""
    items = [{"path": str(p)} for p in files]
    ds = ray.data.from_items(items, override_num_blocks=max(1, len(items)))
    return ds.map_batches(_read_files, batch_size=1, batch_format="numpy", fn_kwargs={"batch_docs": batch_docs})


def merge_results(results: list[dict], docs_in: int | None = None) -> dict:
    """Sum per-shard results into the stage's accounting."""
    dropped, quarantined = Counter(), Counter()
    kept = text_bytes = 0
    hist_kept = hist_dropped = None
    for r in results:
        kept += r["kept"]
        text_bytes += r["text_bytes_kept"]
        dropped.update(r["dropped"])
        quarantined.update(r["quarantined"])
        hk, hd = np.array(r["length_hist_kept"]), np.array(r["length_hist_dropped"])
        hist_kept = hk if hist_kept is None else hist_kept + hk
        hist_dropped = hd if hist_dropped is None else hist_dropped + hd
    return {
        "kept": kept,
        "dropped": dict(sorted(dropped.items())),
        "quarantined": dict(sorted(quarantined.items())),
        "text_bytes_kept": text_bytes,
        "length_hist_kept": [] if hist_kept is None else hist_kept.tolist(),
        "length_hist_dropped": [] if hist_dropped is None else hist_dropped.tolist(),
        "files": [f for r in results for f in r["files"]],
    }
