"""The cluster-wide steps between shard passes. They move keys, never documents.

Documents are int64 keys here (run, shard rank, row: `pipelines.stages.dedup_common`); the smallest key
of a group (the first in corpus order) survives.
- exact_dedup: one Ray task per key partition groups its (hash, id, shard, row) rows by hash; all but the
  first of a group are dropped. Drop rows (id, survivor, shard) go to one file per partition, sorted by
  shard, which the next pass's shard tasks read with a shard filter.
- minhash: one task per band-key partition turns each bucket into star edges (key, smallest key of the
  bucket), skipping exact duplicates; distributed connected components (`orchestration.components`)
  make every component a star around its smallest key; two more rounds give members and survivors
  their string ids, and the drops are written partitioned like exact dedup's. Every task holds one
  partition's rows: memory per task is set by `ray.shuffle_partitions`, not by the corpus.
- quality: the cut-off from the summed score histograms (on the driver: 65,536 counters).
- tokenize: a given SentencePiece model, or one trained on the global sample (the smallest sample keys
  of all shards' local samples) read back from the shards that hold it.
Each step's outcome is cached under `_done/` by a digest of its inputs, so a re-run skips it.
"""

from __future__ import annotations

import heapq
import json
from collections import Counter
from typing import Any, Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import ray

from orchestration.passes import DONE, digest, peak_rss_mb, reset_peak_rss
from orchestration.components import star_components
from orchestration.dedup_index import load_previous, previous_files, read_previous, write_index
from pipelines.components import both_directions, bucket_edges, partition_of_keys, route_rows
from pipelines import storage
from pipelines.stage_files import read_parquet, read_shard, sha256_file
from pipelines.stages.dedup_common import (ROW_COL, doc_keys, key_rank, key_run, partition_of, shard_ranks,
                                           write_drops)
from pipelines.stages.quality import FINE_BINS, cutoff_from_histogram
from pipelines.tokenizer import Tokenizer, TokenizerConfig, train_tokenizer


def cached(workdir: storage.StoragePath, name: str, key: Any, fn: Callable[[], dict]) -> dict:
    path = workdir / DONE / f"{name}-{digest(key)[:16]}.json"
    if path.is_file():
        out = json.loads(path.read_text())
        if all(storage.path(f).exists() for f in out.get("files", [])):
            return {**out, "skipped": True}
    out = fn()
    storage.write_atomic(path, json.dumps(out))
    return {**out, "skipped": False}


def key_files(results: list[dict], stage: str) -> dict[int, list[str]]:
    """Collected key files by partition, from a pass's shard results (sorted: a stable task input)."""
    parts: dict[int, list[str]] = {}
    for task in results:
        for r in task["shards"]:
            for part, entry in r["collect"].get(stage, {}).get("keys", {}).items():
                parts.setdefault(int(part), []).append(entry["path"])
    return {p: sorted(f) for p, f in sorted(parts.items())}


def _read(files: list[str], root: str, columns: list[str]) -> pa.Table:
    tables = [read_parquet(storage.path(root) / f, columns) for f in files]
    return pa.concat_tables(tables) if tables else None


def _shard_ranks(results: list[dict]) -> dict[str, int]:
    return shard_ranks([r["shard"] for task in results for r in task["shards"]])


@ray.remote(num_cpus=1, max_retries=3)
def _exact_partition(files: list[str], root: str, out: str, ranks: dict[str, int], run: int,
                     previous: list, run_ids: list[str]) -> dict:
    """One hash partition (with the same partition of earlier runs' indexes): in each group of equal
    hashes the smallest key survives; only this run's documents are dropped."""
    reset_peak_rss()
    t = _read(files, root, ["hash", "id", "shard", ROW_COL])
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


def exact_dedup(workdir: storage.StoragePath, results: list[dict], previous: list[dict]) -> dict:
    parts = key_files(results, "exact_dedup")
    stamps = {"keys": {p: [sha256_file(workdir / f) for f in fs] for p, fs in parts.items()},
              "previous": [m["digest"] for m in previous]}

    def run() -> dict:
        ranks = ray.put(_shard_ranks(results))
        run_ids = [m["mlflow_run_id"] for m in previous]
        refs = [_exact_partition.remote(fs, str(workdir), str(workdir / "dedup" / "exact_dedup" / f"drops-p{p:04d}.parquet"),
                                        ranks, len(previous), previous_files(previous, "exact_dedup", p), run_ids)
                for p, fs in parts.items()]
        outs = ray.get(refs)
        sizes = Counter()
        for o in outs:
            sizes.update({int(k): v for k, v in o["sizes"].items()})
        return {"drop_files": [o["path"] for o in outs], "files": [o["path"] for o in outs],
                "peak_rss_mb": round(max((o["peak_rss_mb"] for o in outs), default=0.0), 1),
                "duplicates": sum(o["rows"] for o in outs), "group_sizes": {str(k): v for k, v in sorted(sizes.items())},
                "inputs": digest(stamps)}

    return cached(workdir, "exact_dedup", stamps, run)


@ray.remote(num_cpus=1, max_retries=3)
def _bucket_partition(files: list[str], root: str, ranks: dict[str, int], run: int, partitions: int,
                      previous: list, senders: int):
    """One band-key partition (with the same partition of earlier runs' indexes) -> star edges (both
    directions, routed by their first key) and the string ids of the documents in them (routed by key):
    2 * partitions + 1 return values."""
    reset_peak_rss()
    t = _read(files, root, None)
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


def minhash(workdir: storage.StoragePath, results: list[dict], partitions: int, previous: list[dict]) -> dict:
    """Band buckets -> star edges -> distributed connected components -> drop lists by shard. Every step
    is one task per partition; rows move through the object store (see orchestration.components)."""
    parts = key_files(results, "minhash")
    stamps = {"keys": {p: [sha256_file(workdir / f) for f in fs] for p, fs in parts.items()}, "partitions": partitions,
              "previous": [m["digest"] for m in previous]}

    def run() -> dict:
        out = workdir / "dedup" / "minhash"
        ranks = _shard_ranks(results)
        shards = sorted(ranks, key=ranks.get)
        ranks_ref = ray.put(ranks)
        P, run, run_ids = partitions, len(previous), [m["mlflow_run_id"] for m in previous]
        buckets = [_bucket_partition.options(num_returns=2 * P + 1).remote(
                       fs, str(workdir), ranks_ref, run, P, previous_files(previous, "minhash", p), len(parts))
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
                "inputs": digest(stamps)}

    return cached(workdir, "minhash", stamps, run)


def quality_cutoff(results: list[dict], keep_fraction: float) -> dict:
    hist = np.zeros(FINE_BINS, dtype=np.int64)
    for task in results:
        for r in task["shards"]:
            for k, v in r["collect"].get("quality", {}).get("extra", {}).get("score_bins", {}).items():
                hist[int(k)] += v
    return {"cutoff": cutoff_from_histogram(hist, keep_fraction), "hist": hist.reshape(64, -1).sum(axis=1).tolist()}


@ray.remote(num_cpus=1, max_retries=3)
def _sample(files: list[str], root: str, n: int) -> list[tuple[int, str, str]]:
    """The n smallest (sample key, id, shard) over every shard's candidates (each shard's n smallest: the
    global n smallest are among them), reading one file at a time: memory is n rows."""
    heap: list[tuple[int, str, str]] = []  # negated keys: a max-heap of the n smallest
    for f in files:
        t = read_parquet(storage.path(root) / f, ["key", "id", "shard"])
        for k, i, s in zip(t.column("key").to_pylist(), t.column("id").to_pylist(), t.column("shard").to_pylist()):
            item = (-k, i, s)
            if len(heap) < n:
                heapq.heappush(heap, item)
            elif item > heap[0]:
                heapq.heapreplace(heap, item)
    return sorted((-k, i, s) for k, i, s in heap)


@ray.remote(num_cpus=1, max_retries=1, max_calls=1)
def _train_tokenizer(root: str, files: dict[str, list[str]], order: list[str], out_prefix: str,
                     cfg: TokenizerConfig) -> dict:
    reset_peak_rss()
    by_id: dict[str, str] = {}
    for path, ids in files.items():
        wanted = set(ids)
        for t in read_shard(storage.path(root) / path, 1000):
            for i, text in zip(t.column("id").to_pylist(), t.column("text").to_pylist()):
                if i in wanted:
                    by_id[i] = text
    return {**train_tokenizer((by_id[i] for i in order), storage.path(out_prefix), cfg), "peak_rss_mb": round(peak_rss_mb(), 1)}


def tokenizer(workdir: storage.StoragePath, results: list[dict], cfg) -> dict:
    """cfg: TokenizerStageConfig. The sample: the `sample_docs` smallest sample keys over all shards."""
    if cfg.model_path:
        tok = Tokenizer(cfg.model_path)
        return {"model_path": str(storage.path(cfg.model_path).resolve()), "sha256": tok.sha256, "vocab_size": tok.vocab_size,
                "trained": False, "sample_docs": 0}
    docs_file = {r["shard"]: r["docs_file"]["path"] for task in results for r in task["shards"] if r["docs_file"]}
    files = [f for fs in key_files(results, "tokenize").values() for f in fs]
    chosen = ray.get(_sample.remote(files, str(workdir), cfg.sample_docs))
    order = [i for _, i, _ in chosen]
    if not order:
        raise ValueError("tokenizer: no document survived the stages before it, so there is nothing to train "
                         "the tokenizer on (see the stage counts above; or give tokenizer.model_path)")
    tok_cfg = TokenizerConfig(vocab_size=cfg.vocab_size, sample_docs=cfg.sample_docs, seed=cfg.seed,
                              character_coverage=cfg.character_coverage)
    by_file: dict[str, list[str]] = {}
    for _, i, shard in chosen:
        by_file.setdefault(docs_file[shard], []).append(i)
    stamps = {"cfg": tok_cfg.__dict__, "sample": digest(order),
              "files": {f: sha256_file(workdir / f) for f in sorted(by_file)}}

    def run() -> dict:
        info = ray.get(_train_tokenizer.remote(str(workdir), by_file, order, str(workdir / "tokenizer" / "tokenizer"),
                                               tok_cfg))
        return {**info, "files": [info["model_path"]], "trained": True, "sample_docs": len(order)}

    return cached(workdir, "tokenizer", stamps, run)


def _index(workdir, results, state, cfg, previous) -> dict:
    """After the last dedup step: this run's dedup index (cached by what the dedup steps decided)."""
    stamps = {s: state[s]["inputs"] for s in ("exact_dedup", "minhash") if s in state}
    out = cached(workdir, "dedup_index", stamps, lambda: write_index(workdir, results, state, cfg, previous))
    out.pop("skipped")  # part of the next pass's resume key: only what the step decided
    return out


def _exact(workdir, results, state, cfg) -> dict:
    previous = load_previous(cfg)
    out = exact_dedup(workdir, results, previous)
    if cfg.dedup_index.write and not cfg.minhash.enabled:
        out["index"] = _index(workdir, results, {**state, "exact_dedup": out}, cfg, previous)
    return out


def _minhash(workdir, results, state, cfg) -> dict:
    previous = load_previous(cfg)
    out = minhash(workdir, results, cfg.ray.shuffle_partitions, previous)
    if cfg.dedup_index.write:
        out["index"] = _index(workdir, results, {**state, "minhash": out}, cfg, previous)
    return out


def _quality(workdir, results, state, cfg) -> dict:
    return quality_cutoff(results, cfg.quality.keep_fraction)


def _tokenize(workdir, results, state, cfg) -> dict:
    return {**tokenizer(workdir, results, cfg.tokenizer), "out_dir": str(workdir / "tokens")}


# stage name -> its global step(workdir, the previous pass's results, state so far, pipeline config)
GLOBAL_STEPS = {"exact_dedup": _exact, "minhash": _minhash, "quality": _quality, "tokenize": _tokenize}
