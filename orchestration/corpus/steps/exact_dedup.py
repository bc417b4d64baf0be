"""Exact dedup's cluster step: one Ray task per key partition groups its (hash, id, shard, row) rows by hash; all
but the first of a group (smallest key) are dropped. Drop rows (id, survivor, shard) go to one file per partition,
sorted by shard, which the next pass's shard tasks read with a shard filter."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import ray

from orchestration.corpus.dedup_index import load_previous, previous_files, read_previous
from orchestration.corpus.passes import peak_rss_mb, reset_peak_rss
from orchestration.corpus.steps import StepContext, cached, key_files, read_keys, results_shard_ranks, step
from pipelines import storage
from pipelines.hashing import canonical_sha256, sha256_file
from pipelines.stages.dedup_common import ROW_COL, doc_keys, key_run, write_drops
from pipelines.stages.exact_dedup import ExactDedupStage


@ray.remote(num_cpus=1, max_retries=3)
def _exact_partition(files: list[str], root: str, out: str, ranks: dict[str, int], run: int,
                     previous: list, run_ids: list[str]) -> dict:
    """One hash partition (with the same partition of earlier runs' indexes): in each group of equal
    hashes the smallest key survives; only this run's documents are dropped."""
    reset_peak_rss()
    t = read_keys(files, root, ["hash", "id", "shard", ROW_COL])
    key = doc_keys(t.column("shard"), t.column(ROW_COL).to_numpy(), ranks, run)
    t = pa.table({"hash": t.column("hash"), "id": t.column("id"), "shard": t.column("shard"), "key": key})
    old = read_previous(previous, ["hash", "id"])
    if old is not None:
        old = pa.table({"hash": old.column("hash"), "id": old.column("id"),
                        "shard": pa.nulls(old.num_rows, pa.string()), "key": old.column("doc")})
        t = pa.concat_tables([t, old])
    t = t.sort_by([("hash", "ascending"), ("key", "ascending")])
    h = t.column("hash").combine_chunks()
    first = np.r_[True, pc.not_equal(h[1:], h[:-1]).to_numpy(zero_copy_only=False)] if len(h) else np.zeros(0, bool)
    group = np.cumsum(first) - 1
    starts = np.flatnonzero(first)
    ids, keys = t.column("id").combine_chunks(), t.column("key").to_numpy()
    dup = ~first & (key_run(keys) == run)
    survivor = starts[group[dup]]
    rows = pa.table({"id": ids.filter(pa.array(dup)), "survivor": ids.take(pa.array(survivor)),
                     "shard": t.column("shard").combine_chunks().filter(pa.array(dup)),
                     "survivor_run": pa.array(run_ids + [""], pa.string()).take(pa.array(key_run(keys[survivor])))})
    mine = key_run(keys) == run
    sizes = Counter(np.bincount(group[mine]).tolist()) if mine.any() else Counter()
    sizes.pop(0, None)
    entry = write_drops(rows, storage.path(out))
    return {**entry, "sizes": {str(k): v for k, v in sizes.items()}, "peak_rss_mb": peak_rss_mb()}


def exact_dedup(workdir: storage.StoragePath, results: list[dict], previous: list[dict], name: str = "exact_dedup") -> dict:
    parts = key_files(results, name)
    stamps = {"keys": {p: [sha256_file(workdir / f) for f in fs] for p, fs in parts.items()},
              "previous": [m["digest"] for m in previous]}

    def run() -> dict:
        ranks = ray.put(results_shard_ranks(results))
        run_ids = [m["mlflow_run_id"] for m in previous]
        refs = [_exact_partition.remote(fs, str(workdir), str(workdir / "dedup" / name / f"drops-p{p:04d}.parquet"),
                                        ranks, len(previous), previous_files(previous, name, p), run_ids)
                for p, fs in parts.items()]
        outs = ray.get(refs)
        sizes = Counter()
        for o in outs:
            sizes.update({int(k): v for k, v in o["sizes"].items()})
        return {"drop_files": [o["path"] for o in outs], "files": [o["path"] for o in outs],
                "peak_rss_mb": round(max((o["peak_rss_mb"] for o in outs), default=0.0), 1),
                "duplicates": sum(o["rows"] for o in outs), "group_sizes": {str(k): v for k, v in sorted(sizes.items())},
                "inputs": canonical_sha256(stamps)}

    return cached(workdir, name, stamps, run)




@step(ExactDedupStage)
def _step(stage: ExactDedupStage, ctx: StepContext) -> dict:
    return exact_dedup(ctx.workdir, ctx.results, load_previous(ctx.cfg), stage.name)
