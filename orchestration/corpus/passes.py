"""Shard passes: the corpus goes through its stages in a few passes, each one Ray task per shard.

`plan_passes` groups the stages: consecutive one-to-one stages fuse into one pass (one read, one write
of the surviving documents); a stage that needs a cluster-wide step first (dedup, a global quality
cut-off, the tokenizer) has its `collect` run at the end of the pass before it, and starts a new pass.

A task streams its input (a raw file, or one shard written by the previous pass) in batches through the
pass's stages and writes, per shard and under the shard's own name: each stage's dropped documents, the
surviving documents (unless the pass ends in a sink), the collected key rows partitioned for the global
step, and a completion record. Memory per task is a batch, not a shard; no document is ever shuffled.

Resume: a task's completion record (`_done/pass{k}-{key}/...json`) is keyed by everything that decides
its output (the pass's stage parameters, the global steps' outcomes, the output format and shard size)
and records the sha256 of the input it read; a re-run skips a task whose record matches and whose files
are still there. Collect results are keyed separately (by the collecting stage's parameters), so
changing, say, MinHash's bands re-collects MinHash keys from the written documents without re-running
ingest, extraction and filtering.

Tasks are plain Ray tasks (num_cpus=1, retried on worker death), max(64, 2 per cluster CPU) queued:
on 2 cores a Ray Data actor pool over the same shard list cost 4-6.5 s for 1.6 s of work and never
grew past one actor, while tasks reuse warm worker processes (stage models load once per process).
"""

from __future__ import annotations

import functools
import json
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import ray

from pipelines import storage
from pipelines.hashing import canonical_sha256
from pipelines.readers.rows import CORRUPT, corruption_counts
from pipelines.records import REASON, RECORD_SCHEMA, is_quarantined
from pipelines.stage_files import DROPPED_SCHEMA, FORMATS, LENGTH_BINS, RecordWriter, length_histogram, read_shard
from pipelines.stages import ShardContext, Stage
from pipelines.stages.dedup_common import PART_COL
from pipelines.stages.ingest import cut_into_shards, source_batches

DONE = "_done"


@dataclass
class Pass:
    index: int
    apply: list[Stage] = field(default_factory=list)
    collect: list[Stage] = field(default_factory=list)

    @property
    def sink(self) -> bool:
        return any(s.sink for s in self.apply)


def plan_passes(stages: list[Stage]) -> list[Pass]:
    passes = [Pass(0)]
    for st in stages:
        if not st.global_needed():
            passes[-1].apply.append(st)
            continue
        prev = passes[-1]
        hoist = (len(passes) > 1 and prev.apply and all(s.global_needed() for s in prev.apply)
                 and prev.apply[-1].name in st.collect_with)
        if hoist:  # collect with the previous global stage, apply right after it
            passes[-2].collect.append(st)
            prev.apply.append(st)
        else:
            prev.collect.append(st)
            passes.append(Pass(len(passes), apply=[st]))
    return passes


@dataclass
class PassSpec:
    """Everything a task needs, shipped to the workers."""

    index: int
    apply: list[Stage]
    collect: list[Stage]
    sink: bool
    state: dict  # per stage: the outcome of its global step (drop files, cut-off, tokenizer)
    workdir: str
    fmt: str
    batch_docs: int
    shard_bytes: int
    write_intermediate: bool
    apply_key: str
    collect_keys: dict[str, str]


VOLATILE = ("peak_rss_mb", "components_peak_heap_mb", "max_task_rows", "seconds", "skipped")  # in a global step's outcome, but not what it decided


def _where_free(value, workdir: str):
    """A global step's outcome as a resume key sees it: paths inside the workdir relative to it, and a model's
    path dropped where its sha256 stands beside it (moving a workdir, or the same run in another one, keeps
    every key)."""
    if isinstance(value, dict):
        return {k: _where_free(v, workdir) for k, v in value.items() if not (k == "model_path" and "sha256" in value)}
    if isinstance(value, list):
        return [_where_free(v, workdir) for v in value]
    if isinstance(value, str) and value.startswith(workdir.rstrip("/") + "/"):
        return value[len(workdir.rstrip("/")) + 1:]
    return value


def pass_spec(p: Pass, state: dict, workdir: storage.StoragePath, out_cfg, ray_cfg, last_pass: bool) -> PassSpec:
    stage_state = {s.name: state.get(s.name) for s in p.apply}
    # a step's outcome may name what of it decides the pass's output ("decides": the tokenizer's sha256, whether it
    # was trained here or given)
    decided = {n: _where_free((st or {}).get("decides") or {k: v for k, v in (st or {}).items() if k not in VOLATILE},
                              str(workdir)) for n, st in stage_state.items()}
    apply_key = canonical_sha256({
        "pass": p.index, "stages": [(s.name, s.params()) for s in p.apply], "state": decided,
        "format": out_cfg.format, "shard_mb": out_cfg.shard_mb if p.index == 0 else None,
        "intermediate": out_cfg.write_intermediate, "last": last_pass,
    })[:16]
    collect_keys = {s.name: canonical_sha256({"stage": s.name, "params": s.params(), "apply": apply_key})[:16] for s in p.collect}
    return PassSpec(p.index, p.apply, p.collect, p.sink, stage_state, str(workdir), out_cfg.format,
                    ray_cfg.batch_size, int(out_cfg.shard_mb * 1e6), out_cfg.write_intermediate, apply_key,
                    collect_keys)


# ------------------------------------------------------------------------------------ on the workers


class _StageStats:
    def __init__(self):
        self.docs_in = self.kept = self.text_bytes = 0
        self.dropped: Counter = Counter()
        self.quarantined: Counter = Counter()
        self.hist_kept = np.zeros(len(LENGTH_BINS), dtype=np.int64)
        self.hist_dropped = np.zeros(len(LENGTH_BINS), dtype=np.int64)
        self.corrupt = Counter(corruption_counts([]))
        self.seconds = 0.0

    def add(self, kept: pa.Table, dropped: pa.Table) -> None:
        self.docs_in += kept.num_rows + dropped.num_rows
        self.kept += kept.num_rows
        self.text_bytes += int(pc.sum(pc.binary_length(kept.column("text"))).as_py() or 0)
        for r, n in Counter(dropped.column(REASON).to_pylist()).items():
            (self.quarantined if is_quarantined(r) else self.dropped)[r] += n
        self.hist_kept += length_histogram(kept.column("text"))
        self.hist_dropped += length_histogram(dropped.column("text"))
        if CORRUPT in self.quarantined:
            spans = pc.filter(dropped.column("metadata"), pc.equal(dropped.column(REASON), CORRUPT))
            self.corrupt.update(corruption_counts(spans.to_pylist()))

    def result(self) -> dict:
        return {"in": self.docs_in, "kept": self.kept, "dropped": dict(self.dropped),
                "quarantined": dict(self.quarantined), "text_bytes_kept": self.text_bytes,
                "hist_kept": self.hist_kept.tolist(), "hist_dropped": self.hist_dropped.tolist(),
                "corrupt": dict(self.corrupt), "seconds": self.seconds}


def _docs_path(root: storage.StoragePath, stage: str, shard: str, fmt: str) -> storage.StoragePath:
    return root / "docs" / stage / f"{shard}{FORMATS[fmt]}"


def _dropped_path(root: storage.StoragePath, stage: str, shard: str, fmt: str) -> storage.StoragePath:
    return root / "stages" / stage / "dropped" / f"{shard}{FORMATS[fmt]}"


def _key_path(root: storage.StoragePath, stage: str, part: int, shard: str) -> storage.StoragePath:
    return root / "keys" / stage / f"p{part:04d}" / f"{shard}.parquet"


class _KeyWriters:
    def __init__(self, root: storage.StoragePath, stage: str, shard: str):
        self.root, self.stage, self.shard = root, stage, shard
        self.writers: dict[int, RecordWriter] = {}

    def write(self, rows: pa.Table) -> None:
        parts = rows.column(PART_COL).to_numpy()
        rows = rows.drop_columns([PART_COL])
        for part in np.unique(parts).tolist():
            w = self.writers.get(part)
            if w is None:
                w = self.writers[part] = RecordWriter(_key_path(self.root, self.stage, part, self.shard), "parquet",
                                                      rows.schema, group_rows=1 << 16)
            w.write(rows.filter(pa.array(parts == part)))

    def close(self) -> dict[str, dict]:
        out = {}
        for part, w in sorted(self.writers.items()):
            entry = w.close(self.root)
            if entry:
                out[str(part)] = entry
        return out


def _shard_stream(spec: PassSpec, task: dict) -> Iterator[tuple[str, pa.Table]]:
    if task["kind"] == "shard":
        for t in read_shard(storage.path(spec.workdir) / task["path"], spec.batch_docs):
            yield task["shard"], t.append_column(REASON, pa.array([""] * t.num_rows, pa.string()))
    else:
        yield from cut_into_shards(source_batches(task, spec.batch_docs), task["prefix"], spec.shard_bytes)


def _process(spec: PassSpec, task: dict, apply: list[Stage], collect: list[Stage]) -> list[dict]:
    """Stream one task's input through `apply` then `collect`; one result per shard."""
    root = storage.path(spec.workdir)
    results: list[dict] = []
    current = None

    def open_shard(shard: str) -> dict:
        ctx = ShardContext(shard, spec.state)
        for st in (*apply, *collect):
            st.open_shard(ctx)
        writers = {
            "docs": None if (spec.sink or not apply) else RecordWriter(_docs_path(root, apply[-1].name, shard, spec.fmt),
                                                                     spec.fmt, RECORD_SCHEMA),
            "dropped": {s.name: RecordWriter(_dropped_path(root, s.name, shard, spec.fmt), spec.fmt, DROPPED_SCHEMA)
                        for s in apply},
            "kept": {s.name: RecordWriter(_docs_path(root, s.name, shard, spec.fmt), spec.fmt, RECORD_SCHEMA)
                     for s in apply[:-1]} if spec.write_intermediate else {},
            "keys": {s.name: _KeyWriters(root, s.name, shard) for s in collect},
        }
        return {"shard": shard, "ctx": ctx, "w": writers, "stats": {s.name: _StageStats() for s in apply},
                "collect_seconds": Counter()}

    def close_shard(cur: dict) -> dict:
        w, ctx = cur["w"], cur["ctx"]
        out: dict[str, Any] = {"shard": cur["shard"], "stages": {}, "collect": {}}
        for st in apply:
            r = cur["stats"][st.name].result()
            r["dropped_file"] = w["dropped"][st.name].close(root)
            if st.name in w["kept"]:
                r["kept_file"] = w["kept"][st.name].close(root)
            r["extra"] = st.close_shard(ctx)
            out["stages"][st.name] = r
        for st in collect:
            extra = st.close_shard(ctx)
            rows = extra.pop("keys", None)
            if rows is not None and rows.num_rows:
                w["keys"][st.name].write(rows)
            out["collect"][st.name] = {"keys": w["keys"][st.name].close(), "extra": extra,
                                       "seconds": cur["collect_seconds"][st.name]}
        out["docs_file"] = w["docs"].close(root) if w["docs"] is not None else None
        return out

    for shard, batch in _shard_stream(spec, task):
        if current is None or current["shard"] != shard:
            if current is not None:
                results.append(close_shard(current))
            current = open_shard(shard)
        ctx, w = current["ctx"], current["w"]
        alive = batch
        for st in apply:
            t0 = time.perf_counter()
            out = st.apply(alive, ctx)
            keep = pc.equal(out.column(REASON), "")
            kept, dropped = out.filter(keep), out.filter(pc.invert(keep))
            stats = current["stats"][st.name]
            stats.add(kept, dropped)
            if dropped.num_rows:
                w["dropped"][st.name].write(dropped.rename_columns(
                    [("reason" if c == REASON else c) for c in dropped.column_names]))
            if st.name in w["kept"]:
                w["kept"][st.name].write(kept)
            stats.seconds += time.perf_counter() - t0
            alive = kept
        for st in collect:
            t0 = time.perf_counter()
            for rows in st.collect(alive, ctx).values():
                if rows.num_rows:
                    w["keys"][st.name].write(rows)
            current["collect_seconds"][st.name] += time.perf_counter() - t0
        ctx.rows_before += alive.num_rows  # the docs file's row order: the dedup keys' rows
        if w["docs"] is not None:
            w["docs"].write(alive)
    if current is not None:
        results.append(close_shard(current))
    return results


def _record_path(spec: PassSpec, task: dict) -> storage.StoragePath:
    return storage.path(spec.workdir) / DONE / f"pass{spec.index}-{spec.apply_key}" / f"{canonical_sha256(task['id'])[:24]}.json"


def _files_present(root: storage.StoragePath, shard_results: list[dict]) -> bool:
    paths = []
    for r in shard_results:
        paths.append(r.get("docs_file"))
        for s in r["stages"].values():
            paths += [s.get("dropped_file"), s.get("kept_file")]
            for e in s.get("extra", {}).get("token_files", []):
                paths.append({"path": f"tokens/{e['path']}", "bytes": e.get("bytes")})
                if e.get("index_path"):
                    paths.append({"path": f"tokens/{e['index_path']}"})
        for c in r["collect"].values():
            paths += list(c["keys"].values())
    return all(_intact(root / e["path"], e.get("bytes")) for e in paths if e)


def _intact(path: storage.StoragePath, size: int | None) -> bool:
    """The file is there with the size its record gives (a deleted or truncated output re-runs its task)."""
    try:
        return path.stat().st_size == size if size is not None else path.exists()
    except FileNotFoundError:
        return False


def run_task(spec: PassSpec, task: dict) -> dict:
    """One task: skipped when its completion record matches, else streamed; returns its shard results and
    `done`: "skipped", "collected" (only a changed collect stage ran, over the written documents) or "ran"."""
    release_free_memory()
    reset_peak_rss()
    root = storage.path(spec.workdir)
    record_path = _record_path(spec, task)
    record = None
    if record_path.is_file():
        record = json.loads(record_path.read_text())
        if record.get("input_sha256") != task["sha256"] or not _files_present(root, record["shards"]):
            record = None
    if record is None:
        shards = _process(spec, task, spec.apply, spec.collect)
        for r in shards:
            for name in spec.collect_keys:
                r["collect"][name]["key"] = spec.collect_keys[name]
        record = {"task": task["id"], "input_sha256": task["sha256"], "shards": shards}
        done = "ran"
    else:
        done = "skipped"
        stale = [s for s in spec.collect if any(r["collect"].get(s.name, {}).get("key") != spec.collect_keys[s.name]
                                                for r in record["shards"])]
        if stale:  # re-collect from the documents this task wrote (nothing upstream runs again)
            for r in record["shards"]:
                if r["docs_file"] is None:
                    for s in stale:
                        r["collect"][s.name] = {"keys": {}, "extra": {}, "seconds": 0.0, "key": spec.collect_keys[s.name]}
                    continue
                sub = PassSpec(**{**spec.__dict__, "apply": [], "sink": True})
                fresh = _process(sub, {"kind": "shard", "shard": r["shard"], "path": r["docs_file"]["path"]}, [], stale)
                for s in stale:
                    got = fresh[0]["collect"][s.name] if fresh else {"keys": {}, "extra": {}, "seconds": 0.0}
                    r["collect"][s.name] = {**got, "key": spec.collect_keys[s.name]}
            done = "collected"
    storage.write_atomic(record_path, json.dumps(record))
    return {**record, "done": done, "skipped": done == "skipped", "peak_rss_mb": peak_rss_mb()}


def release_free_memory() -> None:
    """Give back to the OS what earlier tasks of this reused Ray worker freed: a garbage collection, Arrow's
    memory pool (mimalloc, which keeps freed pages for reuse), then glibc's malloc_trim. Without it a worker
    keeps the heap of the largest document it met (freed numpy arrays stay in glibc's heap, and after a large
    one is freed glibc serves the next from there rather than from new mappings), and every later task of
    every pass starts above it."""
    import gc

    import pyarrow

    gc.collect()
    pyarrow.default_memory_pool().release_unused()
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


@functools.lru_cache(maxsize=1)
def _malloc_trim():
    """glibc's malloc_trim, or None (another libc: nothing to trim)."""
    import ctypes

    try:
        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None


def reset_peak_rss() -> None:
    """Start a new resident-memory high-water mark for this process (Linux: clear_refs 5), so a reused
    Ray worker reports the peak of the task it is running, not of everything it ran before."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def peak_rss_mb() -> float:
    """Peak resident memory of this process since `reset_peak_rss` (or since it started), in MiB."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@ray.remote(num_cpus=1, max_retries=3)
def _run_task_remote(spec: PassSpec, task: dict) -> dict:
    return run_task(spec, task)


class TaskFailed(RuntimeError):
    """A shard task raised: `where` names the pass, its stages and the task's file or shard; `cause` is the
    worker's exception (for the CLI to tell bad input from a bug)."""

    def __init__(self, where: str, cause: BaseException):
        super().__init__(f"{where}: {type(cause).__name__}: {cause}")
        self.where, self.cause = where, cause


def run_pass(spec: PassSpec, tasks: list[dict], cpus: float, on_done=None) -> list[dict]:
    """Every task of a pass on the cluster; results in task order. At most max(64, 2 per CPU) are queued
    at a time: enough for an autoscaler to see the demand, not 100k task specs in the driver at once.
    `on_done(task, result)` is called as each task finishes (the progress display)."""
    spec_ref = ray.put(spec)
    limit = max(64, int(2 * cpus))
    pending: dict = {}
    results: list[dict | None] = [None] * len(tasks)
    it = iter(enumerate(tasks))
    for i, task in it:
        pending[_run_task_remote.remote(spec_ref, task)] = i
        if len(pending) >= limit:
            break
    while pending:
        done, _ = ray.wait(list(pending), num_returns=1)
        for ref in done:
            i = pending.pop(ref)
            try:
                results[i] = ray.get(ref)
            except ray.exceptions.RayTaskError as exc:
                stages = " -> ".join(st.name for st in spec.apply)
                raise TaskFailed(f"pass {spec.index} [{stages}] on {tasks[i]['id']}", exc.cause or exc) from exc
            if on_done is not None:
                on_done(tasks[i], results[i])
        for i, task in it:
            pending[_run_task_remote.remote(spec_ref, task)] = i
            break
    return results  # type: ignore[return-value]
