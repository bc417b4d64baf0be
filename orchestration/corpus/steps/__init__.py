"""The cluster-wide steps between shard passes. They move keys, never documents.

A stage whose `apply` needs something cluster-wide (`needs_global`) gets it here, after the pass that ran its
`collect`: from its own `reduce` (on the driver: the quality cut-off from 65,536 counters) or, where the step
needs the cluster, from the step registered for its class in this package, one file per stage:
- exact_dedup.py: one Ray task per key partition groups its (hash, id, shard, row) rows by hash; all but the
  first of a group are dropped.
- minhash.py: band buckets -> star edges -> distributed connected components -> drop lists by shard.
- tokenize.py: a given SentencePiece model, or one trained on the global sample.
Before the passes (`before`): quality.py trains the classifier a config names by its YAML; decontaminate.py builds
the evaluation suite's n-gram index.
Documents are int64 keys here (run, shard rank, row: `pipelines.stages.dedup_common`); the smallest key
of a group (the first in corpus order) survives. After the last dedup step, this run's dedup index is
written. Each step's outcome is cached under `_done/` by a digest of its inputs, so a re-run skips it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Callable

import pyarrow as pa

from orchestration.corpus.dedup_index import load_previous, write_index
from orchestration.corpus.passes import DONE
from pipelines import storage
from pipelines.hashing import canonical_sha256
from pipelines.stage_files import read_parquet
from pipelines.stages import REGISTRY, Stage
from pipelines.stages.dedup_common import shard_ranks


@dataclass
class StepContext:
    """What a global step may read: the workdir, the results of the pass that collected (every shard's
    key files and close_shard outcomes), the earlier steps' outcomes, the pipeline config and its stages."""

    workdir: storage.StoragePath
    results: list[dict]
    state: dict
    cfg: Any
    stages: list[Stage]


STEPS: dict[type, Callable[[Stage, StepContext], dict]] = {}
BEFORE: dict[type, Callable[[Any, storage.StoragePath, Callable], None]] = {}


def step(stage_class: type) -> Callable:
    """Register the cluster step of a stage class (a decorator, in the step's own file)."""
    def register(fn: Callable[[Stage, StepContext], dict]) -> Callable:
        STEPS[stage_class] = fn
        return fn
    return register


def before(stage_class: type) -> Callable:
    """Register what a stage class needs done before any pass runs (a decorator, in the step's own file)."""
    def register(fn: Callable) -> Callable:
        BEFORE[stage_class] = fn
        return fn
    return register


def prepare(cfg, workdir: storage.StoragePath, echo) -> None:
    """Run the registered before-the-passes work of every stage kind, in chain order (it may fill in the config)."""
    for cls in REGISTRY.values():
        if cls in BEFORE:
            BEFORE[cls](cfg, workdir, echo)


def run(stage: Stage, ctx: StepContext) -> dict:
    """The global step of `stage`; after the last dedup stage's, this run's dedup index."""
    fn = next((STEPS[c] for c in type(stage).__mro__ if c in STEPS), None)
    if fn is not None:
        out = fn(stage, ctx)
    else:
        collected = [r["collect"].get(stage.name, {}).get("extra", {}) for task in ctx.results for r in task["shards"]]
        out = stage.reduce(collected)
    dedup = [s for s in ctx.stages if s.dedup_index]
    if dedup and stage is dedup[-1] and ctx.cfg.dedup_index.write:
        out["index"] = _index(ctx, {**ctx.state, stage.name: out}, dedup)
    return out


def _index(ctx: StepContext, state: dict, dedup: list[Stage]) -> dict:
    """This run's dedup index (cached by what the dedup steps decided)."""
    stamps = {s.name: state[s.name]["inputs"] for s in dedup if s.name in state}
    out = cached(ctx.workdir, "dedup_index", stamps,
                 lambda: write_index(ctx.workdir, ctx.results, state, ctx.cfg, load_previous(ctx.cfg)))
    out.pop("skipped")  # part of the next pass's resume key: only what the step decided
    return out


WORKDIR_MARK = "${workdir}"


def _relocate(value: Any, old: str, new: str) -> Any:
    """Every string under `old` moved under `new` (in dicts and lists)."""
    if isinstance(value, dict):
        return {k: _relocate(v, old, new) for k, v in value.items()}
    if isinstance(value, list):
        return [_relocate(v, old, new) for v in value]
    if isinstance(value, str) and value.startswith(old + "/"):
        return new + value[len(old):]
    return value


def cached(workdir: storage.StoragePath, name: str, key: Any, fn: Callable[[], dict]) -> dict:
    """A global step's outcome, computed once per key. Paths inside the workdir are recorded relative to it, so
    a workdir copied or linked elsewhere (an ablation's variant starts from its baseline's) finds its steps done."""
    path = workdir / DONE / f"{name}-{canonical_sha256(key)[:16]}.json"
    root = str(workdir).rstrip("/")
    if path.is_file():
        out = _relocate(json.loads(path.read_text()), WORKDIR_MARK, root)
        if all(storage.path(f).exists() for f in out.get("files", [])):
            return {**out, "skipped": True}
    out = fn()
    storage.write_atomic(path, json.dumps(_relocate(out, root, WORKDIR_MARK)))
    return {**out, "skipped": False}


def key_files(results: list[dict], stage: str) -> dict[int, list[str]]:
    """Collected key files by partition, from a pass's shard results (sorted: a stable task input)."""
    parts: dict[int, list[str]] = {}
    for task in results:
        for r in task["shards"]:
            for part, entry in r["collect"].get(stage, {}).get("keys", {}).items():
                parts.setdefault(int(part), []).append(entry["path"])
    return {p: sorted(f) for p, f in sorted(parts.items())}


def read_keys(files: list[str], root: str, columns: list[str]) -> pa.Table:
    tables = [read_parquet(storage.path(root) / f, columns) for f in files]
    return pa.concat_tables(tables) if tables else None


def results_shard_ranks(results: list[dict]) -> dict[str, int]:
    return shard_ranks([r["shard"] for task in results for r in task["shards"]])




from orchestration.corpus.steps import decontaminate, exact_dedup, minhash, quality, tokenize  # noqa: E402  (they register)

__all__ = ["BEFORE", "STEPS", "StepContext", "before", "cached", "key_files", "prepare", "read_keys",
           "results_shard_ranks", "run", "step", "decontaminate", "exact_dedup", "minhash", "quality", "tokenize"]
