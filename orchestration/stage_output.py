"""Writing a stage's Ray Dataset as deterministic shards (hash of id -> shard, sorted by id)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import ray

from pipelines.stage_files import shard_of, write_shard
from pipelines.stage_files import read_shard

SHARD_COL = "_shard"


def _add_shard(batch: pa.Table, shards: int) -> pa.Table:
    return batch.append_column(SHARD_COL, pa.array(shard_of(batch.column("id").to_pylist(), shards)))


def _write_group(group: pa.Table, out_dir: str, shards: int, fmt: str) -> pa.Table:
    shard = int(group.column(SHARD_COL)[0].as_py())
    result = write_shard(group.drop_columns([SHARD_COL]), Path(out_dir), shard, shards, fmt)
    import json

    return pa.table({"shard": [shard], "result": [json.dumps(result)]})


def write_stage(ds: ray.data.Dataset, out_dir: Path, shards: int, fmt: str) -> list[dict]:
    """Shuffle documents to their shard (on the cluster, not the driver) and write each shard once.

    Returns one small result per shard: file entries, counts by reason, length histograms.
    """
    import json

    ds = ds.map_batches(_add_shard, batch_format="pyarrow", fn_kwargs={"shards": shards}, zero_copy_batch=True)
    results = ds.groupby(SHARD_COL).map_groups(
        _write_group,
        batch_format="pyarrow",
        fn_kwargs={"out_dir": str(out_dir), "shards": shards, "fmt": fmt},
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
    from collections import Counter

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
