"""The cluster-wide steps between shard passes. They move keys, never documents.

- exact_dedup: one Ray task per key partition groups its (hash, id, shard) rows by hash; all but the
  smallest id of a group are dropped. Drop rows (id, survivor, shard) go to one file per partition,
  sorted by shard, which the next pass's shard tasks read with a shard filter.
- minhash: one task per partition turns each band bucket into star edges (smallest id, other); then one
  task (components at web scale are the next issue's) removes the exact duplicates' edges and takes
  connected components, smallest id surviving, and writes the drops partitioned like exact dedup's.
- quality: the cut-off from the summed score histograms (on the driver: 65,536 counters).
- tokenize: a given SentencePiece model, or one trained on the global sample (the smallest sample keys
  of all shards' local samples) read back from the shards that hold it.
Each step's outcome is cached under `_done/` by a digest of its inputs, so a re-run skips it.
"""

from __future__ import annotations

import heapq
import json
from collections import Counter
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import ray

from orchestration.passes import DONE, digest, peak_rss_mb, reset_peak_rss
from pipelines.components import connected_components, edges_from_bucket
from pipelines.duplicates import survivors_of_group
from pipelines.stage_files import read_shard, sha256_file
from pipelines.stages.dedup_common import DROP_SCHEMA, partition_of, write_drops
from pipelines.stages.quality import FINE_BINS, cutoff_from_histogram
from pipelines.tokenizer import Tokenizer, TokenizerConfig, train_tokenizer


def cached(workdir: Path, name: str, key: Any, fn: Callable[[], dict]) -> dict:
    path = workdir / DONE / f"{name}-{digest(key)[:16]}.json"
    if path.is_file():
        out = json.loads(path.read_text())
        if all(Path(f).exists() for f in out.get("files", [])):
            return {**out, "skipped": True}
    out = fn()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out))
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
    tables = [pq.read_table(Path(root) / f, columns=columns) for f in files]
    return pa.concat_tables(tables) if tables else None


@ray.remote(num_cpus=1, max_retries=3)
def _exact_partition(files: list[str], root: str, out: str) -> dict:
    reset_peak_rss()
    t = _read(files, root, ["hash", "id", "shard"])
    t = t.sort_by([("hash", "ascending"), ("id", "ascending")])
    hashes, ids, shards = (t.column(c).to_pylist() for c in ("hash", "id", "shard"))
    shard_of = dict(zip(ids, shards))
    drops, sizes, start = [], Counter(), 0
    for i in range(1, len(hashes) + 1):
        if i == len(hashes) or hashes[i] != hashes[start]:
            pairs = survivors_of_group(ids[start:i])
            drops += pairs
            sizes[len(pairs) + 1] += 1
            start = i
    rows = pa.table({"id": [d for d, _ in drops], "survivor": [s for _, s in drops],
                     "shard": [shard_of[d] for d, _ in drops]}, schema=DROP_SCHEMA)
    entry = write_drops(rows, Path(out))
    return {**entry, "sizes": {str(k): v for k, v in sizes.items()}, "peak_rss_mb": peak_rss_mb()}


def exact_dedup(workdir: Path, results: list[dict]) -> dict:
    parts = key_files(results, "exact_dedup")
    stamps = {p: [sha256_file(workdir / f) for f in fs] for p, fs in parts.items()}

    def run() -> dict:
        refs = [_exact_partition.remote(fs, str(workdir), str(workdir / "dedup" / "exact_dedup" / f"drops-p{p:04d}.parquet"))
                for p, fs in parts.items()]
        outs = ray.get(refs)
        sizes = Counter()
        for o in outs:
            sizes.update({int(k): v for k, v in o["sizes"].items()})
        return {"drop_files": [o["path"] for o in outs], "files": [o["path"] for o in outs],
                "peak_rss_mb": round(max((o["peak_rss_mb"] for o in outs), default=0.0), 1),
                "duplicates": sum(o["rows"] for o in outs), "group_sizes": {str(k): v for k, v in sorted(sizes.items())}}

    return cached(workdir, "exact_dedup", stamps, run)


@ray.remote(num_cpus=1, max_retries=3)
def _bucket_edges(files: list[str], root: str, out: str) -> dict:
    reset_peak_rss()
    t = _read(files, root, ["key", "id", "shard"]).sort_by([("key", "ascending"), ("id", "ascending")])
    keys, ids, shards = t.column("key").to_numpy(), t.column("id").to_pylist(), t.column("shard").to_pylist()
    a, b, sa, sb = [], [], [], []
    bounds = np.flatnonzero(np.diff(keys)) + 1 if len(keys) else np.array([], dtype=np.int64)
    for lo, hi in zip(np.concatenate([[0], bounds]).tolist(), np.concatenate([bounds, [len(keys)]]).tolist()):
        if hi - lo < 2:
            continue
        shard_of = dict(zip(ids[lo:hi], shards[lo:hi]))
        for x, y in edges_from_bucket(ids[lo:hi]):
            a.append(x), b.append(y), sa.append(shard_of[x]), sb.append(shard_of[y])
    edges = pa.table({"a": pa.array(a, pa.string()), "b": pa.array(b, pa.string()),
                      "shard_a": pa.array(sa, pa.string()), "shard_b": pa.array(sb, pa.string())})
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(edges, out, compression="zstd")
    return {"path": out, "edges": len(a), "peak_rss_mb": peak_rss_mb()}


# max_calls=1: a step whose memory grows with the corpus (all edges) or the sample (the tokenizer) runs in a
# process that exits afterwards, so the shard workers that come next do not carry its peak (measured: the
# tokenize pass's workers went from 346 to 506 MB between 12.5 and 200 MB of input when they did)
@ray.remote(num_cpus=1, max_retries=3, max_calls=1)
def _components(edge_files: list[str], exact_drop_files: list[str], out_dir: str, partitions: int) -> dict:
    reset_peak_rss()
    cols = ["a", "b", "shard_a", "shard_b"]
    tables = [pq.read_table(f, columns=cols) for f in edge_files]
    edges = pa.concat_tables(tables) if tables else pa.table({c: pa.array([], pa.string()) for c in cols})
    exact = set()
    for f in exact_drop_files:
        exact.update(pq.read_table(f, columns=["id"]).column("id").to_pylist())
    a, b, sa, sb = (edges.column(c).to_pylist() for c in cols)
    # exact duplicates share every bucket with their survivor (see pipelines/stages/minhash.py): drop them
    keep = [i for i in range(len(a)) if a[i] not in exact and b[i] not in exact]
    a, b = [a[i] for i in keep], [b[i] for i in keep]
    shard_of = {**dict(zip(a, (sa[i] for i in keep))), **dict(zip(b, (sb[i] for i in keep)))}
    survivor = connected_components(a, b)
    dup = sorted(i for i, s in survivor.items() if i != s)
    sizes = Counter(Counter(survivor.values()).values())
    rows = pa.table({"id": dup, "survivor": [survivor[i] for i in dup], "shard": [shard_of[i] for i in dup]},
                    schema=DROP_SCHEMA)
    part = partition_of(rows.column("shard").to_pylist(), partitions) if rows.num_rows else np.zeros(0, np.int64)
    files = []
    for p in range(partitions):
        sel = rows.filter(pa.array(part == p)) if rows.num_rows else rows
        if sel.num_rows:
            files.append(write_drops(sel, Path(out_dir) / f"drops-p{p:04d}.parquet")["path"])
    return {"drop_files": files, "files": files, "candidate_edges": len(keep), "duplicates": len(dup),
            "peak_rss_mb": round(peak_rss_mb(), 1),
            "clusters": sum(sizes.values()), "cluster_sizes": {str(k): v for k, v in sorted(sizes.items())}}


def minhash(workdir: Path, results: list[dict], exact_state: dict | None, partitions: int) -> dict:
    """Every non-smallest member of a band bucket gets an edge from the bucket's smallest id; the shards
    of both ends travel with the edge, so every dropped id's shard is known to the components task."""
    parts = key_files(results, "minhash")
    exact_files = (exact_state or {}).get("drop_files", [])
    stamps = {"keys": {p: [sha256_file(workdir / f) for f in fs] for p, fs in parts.items()},
              "exact": [sha256_file(Path(f)) for f in exact_files], "partitions": partitions}

    def run() -> dict:
        out = workdir / "dedup" / "minhash"
        refs = [_bucket_edges.remote(fs, str(workdir), str(out / f"edges-p{p:04d}.parquet")) for p, fs in parts.items()]
        buckets = ray.get(refs)
        out = ray.get(_components.remote([e["path"] for e in buckets], exact_files, str(out), partitions))
        return {**out, "buckets_peak_rss_mb": round(max((e["peak_rss_mb"] for e in buckets), default=0.0), 1)}

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
        t = pq.read_table(Path(root) / f, columns=["key", "id", "shard"])
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
        for t in read_shard(Path(root) / path, 1000):
            for i, text in zip(t.column("id").to_pylist(), t.column("text").to_pylist()):
                if i in wanted:
                    by_id[i] = text
    return {**train_tokenizer((by_id[i] for i in order), Path(out_prefix), cfg), "peak_rss_mb": round(peak_rss_mb(), 1)}


def tokenizer(workdir: Path, results: list[dict], cfg) -> dict:
    """cfg: TokenizerStageConfig. The sample: the `sample_docs` smallest sample keys over all shards."""
    if cfg.model_path:
        tok = Tokenizer(cfg.model_path)
        return {"model_path": str(Path(cfg.model_path).resolve()), "sha256": tok.sha256, "vocab_size": tok.vocab_size,
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


def _exact(workdir, results, state, cfg) -> dict:
    return exact_dedup(workdir, results)


def _minhash(workdir, results, state, cfg) -> dict:
    return minhash(workdir, results, state.get("exact_dedup"), cfg.ray.shuffle_partitions)


def _quality(workdir, results, state, cfg) -> dict:
    return quality_cutoff(results, cfg.quality.keep_fraction)


def _tokenize(workdir, results, state, cfg) -> dict:
    return {**tokenizer(workdir, results, cfg.tokenizer), "out_dir": str(workdir / "tokens")}


# stage name -> its global step(workdir, the previous pass's results, state so far, pipeline config)
GLOBAL_STEPS = {"exact_dedup": _exact, "minhash": _minhash, "quality": _quality, "tokenize": _tokenize}
