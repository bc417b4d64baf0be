"""MinHash's cluster step: one task per band-key partition turns each bucket into star edges (key, smallest key
of the bucket), skipping exact duplicates; distributed connected components (`orchestration.corpus.components`)
make every component a star around its smallest key; two more rounds give members and survivors their string
ids, and the drops are written partitioned like exact dedup's. Every task holds one partition's rows: memory
per task is set by `ray.shuffle_partitions`, not by the corpus."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pyarrow as pa
import ray

from orchestration.corpus.components import star_components
from orchestration.corpus.dedup_index import load_previous, previous_files, read_previous
from orchestration.corpus.passes import peak_rss_mb, reset_peak_rss
from orchestration.corpus.steps import StepContext, cached, key_files, read_keys, results_shard_ranks, step
from pipelines import storage
from pipelines.components import both_directions, bucket_edges, partition_of_keys, route_rows
from pipelines.hashing import canonical_sha256, sha256_file
from pipelines.stages.dedup_common import ROW_COL, doc_keys, key_rank, key_run, partition_of, write_drops
from pipelines.stages.minhash import MinHashStage


@ray.remote(num_cpus=1, max_retries=3)
def _bucket_partition(files: list[str], root: str, ranks: dict[str, int], run: int, partitions: int,
                      previous: list, senders: int):
    """One band-key partition (with the same partition of earlier runs' indexes) -> star edges (both
    directions, routed by their first key) and the string ids of the documents in them (routed by key):
    2 * partitions + 1 return values."""
    reset_peak_rss()
    t = read_keys(files, root, None)
    cols = ["key", "id"] + (["fp"] if "fp" in t.column_names else [])
    key = doc_keys(t.column("shard"), t.column(ROW_COL).to_numpy(), ranks, run)
    t = pa.table({**{c: t.column(c) for c in cols}, "doc": key})
    old = read_previous(previous, cols)
    if old is not None:
        t = pa.concat_tables([t, old.select([*cols, "doc"])])
    key = t.column("doc").to_numpy()
    fp = t.column("fp").to_numpy() if "fp" in cols else None
    edges = bucket_edges(t.column("key").to_numpy(), key, fp)
    nodes = np.isin(key, edges.reshape(-1))
    names = pa.table({"doc": key[nodes], "id": t.column("id").combine_chunks().filter(pa.array(nodes))})
    routed = route_rows(both_directions(edges), partitions, senders=senders)
    part = partition_of_keys(names.column("doc").to_numpy(), partitions)
    named = [names.filter(pa.array(part == p)) for p in range(partitions)]
    return (*routed, *named, {"rows": t.num_rows, "edges": len(edges), "peak_rss_mb": peak_rss_mb()})


def _names(tables: tuple[pa.Table, ...]) -> tuple[np.ndarray, pa.Array]:
    """Sorted distinct doc keys and their ids, from one partition's name tables."""
    t = pa.concat_tables(tables) if tables else pa.table({"doc": pa.array([], pa.int64()), "id": pa.array([], pa.string())})
    doc = t.column("doc").to_numpy()
    order = np.argsort(doc, kind="stable")
    doc = doc[order]
    first = np.r_[True, doc[1:] != doc[:-1]] if len(doc) else np.zeros(0, bool)
    return doc[first], t.column("id").combine_chunks().take(pa.array(order[first]))


def _lookup(doc: np.ndarray, ids: pa.Array, want: np.ndarray) -> pa.Array:
    pos = np.searchsorted(doc, want)
    if len(want) and (pos.max(initial=0) >= len(doc) or not np.array_equal(doc[pos], want)):
        raise RuntimeError("minhash: a component member has no id (the bucket step's names are incomplete)")
    return ids.take(pa.array(pos))


@ray.remote(num_cpus=1, max_retries=3)
def _name_members(partitions: int, n_names: int, run: int, *parts):
    """Partition p of the final stars: each non-survivor x (of this run) gets its id; rows go on to the
    survivor's partition as (m, x's id, x)."""
    names, stars = parts[:n_names], parts[n_names:]
    doc, ids = _names(names)
    e = np.concatenate(stars) if stars else np.zeros((0, 2), np.int64)
    e = np.unique(e[(e[:, 0] > e[:, 1]) & (key_run(e[:, 0]) == run)], axis=0)  # sliced keys' extremes travel twice
    t = pa.table({"m": e[:, 1], "id": _lookup(doc, ids, e[:, 0]), "x": e[:, 0]})
    part = partition_of_keys(e[:, 1], partitions)
    return tuple(t.filter(pa.array(part == p)) for p in range(partitions))


@ray.remote(num_cpus=1, max_retries=3)
def _name_survivors(partitions: int, n_names: int, shards: list[str], run_ids: list[str], *parts):
    """Partition q: each survivor m gets its id; drop rows (id, survivor, shard) go on to the partition
    of the dropped document's shard. Also the component sizes (survivors are whole here)."""
    names, members = parts[:n_names], parts[n_names:]
    doc, ids = _names(names)
    t = pa.concat_tables(members) if members else None
    if t is None or t.num_rows == 0:
        empty = pa.table({c: pa.array([], pa.string()) for c in ("id", "survivor", "shard", "survivor_run")})
        return (*([empty] * partitions), {})
    m = t.column("m").to_numpy()
    shard = pa.array(shards).take(pa.array(key_rank(t.column("x").to_numpy())))
    rows = pa.table({"id": t.column("id"), "survivor": _lookup(doc, ids, m), "shard": shard,
                     "survivor_run": pa.array(run_ids + [""], pa.string()).take(pa.array(key_run(m)))})
    part = partition_of(shard.to_pylist(), partitions)
    _, counts = np.unique(m, return_counts=True)
    sizes = Counter((counts + 1).tolist())
    return (*(rows.filter(pa.array(part == p)) for p in range(partitions)), {str(k): v for k, v in sizes.items()})


@ray.remote(num_cpus=1, max_retries=3)
def _write_drops(out: str, *tables: pa.Table) -> dict:
    return write_drops(pa.concat_tables(tables), storage.path(out))


def minhash(workdir: storage.StoragePath, results: list[dict], partitions: int, previous: list[dict],
            name: str = "minhash") -> dict:
    """Band buckets -> star edges -> distributed connected components -> drop lists by shard. Every step
    is one task per partition; rows move through the object store (see orchestration.corpus.components)."""
    parts = key_files(results, name)
    stamps = {"keys": {p: [sha256_file(workdir / f) for f in fs] for p, fs in parts.items()}, "partitions": partitions,
              "previous": [m["digest"] for m in previous]}

    def run() -> dict:
        out = workdir / "dedup" / name
        ranks = results_shard_ranks(results)
        shards = sorted(ranks, key=ranks.get)
        ranks_ref = ray.put(ranks)
        P, run, run_ids = partitions, len(previous), [m["mlflow_run_id"] for m in previous]
        buckets = [_bucket_partition.options(num_returns=2 * P + 1).remote(
                       fs, str(workdir), ranks_ref, run, P, previous_files(previous, name, p), len(parts))
                   for p, fs in parts.items()]
        bucket_stats = ray.get([b[2 * P] for b in buckets])
        final, rounds = star_components([list(b[:P]) for b in buckets], P)
        names = [[b[P + p] for b in buckets] for p in range(P)]
        members = [_name_members.options(num_returns=P).remote(P, len(buckets), run, *names[p], *[f[p] for f in final])
                   for p in range(P)]
        members = [m if isinstance(m, list) else [m] for m in members]
        named = [_name_survivors.options(num_returns=P + 1).remote(P, len(buckets), shards, run_ids, *names[q],
                                                                  *[m[q] for m in members])
                 for q in range(P)]
        sizes = Counter()
        for s in ray.get([n[P] for n in named]):
            sizes.update({int(k): v for k, v in s.items()})
        written = ray.get([_write_drops.remote(str(out / f"drops-p{r:04d}.parquet"), *[n[r] for n in named])
                           for r in range(P)])
        files = [w["path"] for w in written]
        return {"drop_files": files, "files": files, "duplicates": sum(w["rows"] for w in written),
                "candidate_edges": sum(b["edges"] for b in bucket_stats), "rounds": len(rounds),
                "round_rows": [r["rows"] for r in rounds], "max_task_rows": max(r["max_task_rows"] for r in rounds),
                "components_peak_heap_mb": max(r["peak_heap_mb"] for r in rounds),
                "peak_rss_mb": round(max([b["peak_rss_mb"] for b in bucket_stats] + [r["peak_rss_mb"] for r in rounds]
                                         + [0.0]), 1),
                "clusters": sum(sizes.values()), "cluster_sizes": {str(k): v for k, v in sorted(sizes.items())},
                "inputs": canonical_sha256(stamps)}

    return cached(workdir, name, stamps, run)




@step(MinHashStage)
def _step(stage: MinHashStage, ctx: StepContext) -> dict:
    return minhash(ctx.workdir, ctx.results, stage.partitions, load_previous(ctx.cfg), stage.name)
