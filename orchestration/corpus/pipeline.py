"""The corpus pipeline: the enabled stages (pipelines.stages.build), run as shard passes with the global
steps between them, then recorded: one manifest, accounting check and MLflow child run per stage.

    pass 0: ingest -> extract -> filter            [collect exact + MinHash keys]   one task per raw file
    global: exact dedup, MinHash components        (keys only)
    pass 1: exact dedup -> MinHash -> quality      [collect tokenizer sample]       one task per shard
    global: tokenizer
    pass 2: tokenize                                                                one task per shard

A re-run on the same workdir skips every task and global step whose completion record matches; a
re-run of a finished pipeline returns its summary without starting Ray.
"""

from __future__ import annotations

import dataclasses
import json
import time

from orchestration.corpus.dedup_index import load_previous
from orchestration.corpus.passes import DONE, pass_spec, plan_passes, run_pass
from pipelines.hashing import canonical_sha256
from orchestration.config.pipeline import PipelineConfig
from orchestration.runtime import stopping
from orchestration.config.preflight import check_pipeline
from orchestration.runtime.workdir_lock import WorkdirLock
from orchestration.runtime.workdir_lock import describe as describe_holder
from pipelines import storage
from pipelines.errors import UsageError
from pipelines.readers import list_inputs
from pipelines.hashing import sha256_file
from pipelines.stages import build


# a global step's figures worth a line in summary.json (all of them go to the stage's MLflow run)
STEP_FIGURES = ("duplicates", "candidate_edges", "clusters", "rounds", "max_task_rows", "components_peak_heap_mb")


def raw_files(cfg: PipelineConfig, workdir: storage.StoragePath) -> tuple[list[dict], str]:
    """(path, bytes, sha256) of every raw file and the digest of that list. Hashes are cached by
    (path, size, mtime), so a re-run does not read the raw corpus again."""
    cache_path = workdir / DONE / "raw_hashes.json"
    cache = json.loads(cache_path.read_text()) if cache_path.is_file() else {}
    files, todo = [], []
    for inp in cfg.inputs:
        if inp.format == "hf":
            files.append({"path": f"{inp.name}/hf:{inp.hf_dataset}:{inp.hf_split}", "bytes": 0, "sha256": "",
                          "input": inp.name})
            continue
        for path, rel in list_inputs(inp.paths):
            st = storage.path(path).stat()
            stamp = f"{path}|{st.st_size}|{st.st_mtime_ns}"
            entry = {"path": f"{inp.name}/{rel}", "bytes": st.st_size, "sha256": cache.get(stamp), "input": inp.name,
                     "local": str(path), "relpath": rel, "stamp": stamp}
            files.append(entry)
            if entry["sha256"] is None:
                todo.append(entry)
    if todo:
        hashes = _hash_files([e["local"] for e in todo], cfg)
        for e, h in zip(todo, hashes):
            e["sha256"] = cache[e["stamp"]] = h
        storage.write_atomic(cache_path, json.dumps(cache))
    files.sort(key=lambda f: f["path"])
    public = [{k: f[k] for k in ("path", "bytes", "sha256")} for f in files]
    return files, canonical_sha256(public)


def user_modules(cfg: PipelineConfig) -> list[str]:
    """The files or package folders of the config's user stages: every Ray this run starts ships them (the first
    ray.init wins: the raw-file hashing may start Ray before the passes)."""
    return sorted({m for s in build(cfg) for m in s.modules()})


def _hash_files(paths: list[str], cfg: PipelineConfig) -> list[str]:
    if len(paths) < 64:  # a Ray round trip costs more than hashing a few files here
        return [sha256_file(p) for p in paths]
    import ray

    from orchestration.runtime.cluster import init_ray

    init_ray(cfg.ray.num_cpus, user_modules(cfg))  # our own Ray (or RAY_ADDRESS's): a bare ray.remote would join any cluster

    remote = ray.remote(num_cpus=1)(lambda ps: [sha256_file(p) for p in ps])
    chunks = [paths[i:i + 64] for i in range(0, len(paths), 64)]
    return [h for part in ray.get([remote.remote(c) for c in chunks]) for h in part]


def _source_tasks(cfg: PipelineConfig, files: list[dict]) -> list[dict]:
    inputs = {i.name: dataclasses.asdict(i) for i in cfg.inputs}
    tasks = []
    for f in files:
        inp = inputs[f["input"]]
        if inp["format"] == "hf":
            from pipelines.readers.hf import open_dataset

            n = len(open_dataset(inp["hf_dataset"], inp["hf_split"]))
            step = 50_000
            for s in range(0, n, step):
                tasks.append({"kind": "hf", "id": f"{f['path']}:{s}", "input": inp, "start": s, "stop": min(n, s + step),
                              "prefix": f"{inp['name']}/{inp['hf_split']}/{s:012d}", "sha256": f"{inp['hf_dataset']}:{n}"})
        else:
            tasks.append({"kind": "raw", "id": f["path"], "input": inp, "path": f["local"], "relpath": f["path"],
                          "prefix": f["path"], "sha256": f["sha256"]})
    return tasks


def _shard_tasks(results: list[dict]) -> list[dict]:
    return [{"kind": "shard", "id": r["shard"], "shard": r["shard"], "path": r["docs_file"]["path"],
             "sha256": r["docs_file"]["sha256"]}
            for task in results for r in task["shards"] if r["docs_file"]]


class NothingLeft(UsageError):
    """Every document was dropped (or quarantined) before the last stages: what each stage did is in the line."""


def _counts_line(runs: list[dict]) -> str:
    """Each stage run so far: documents in and kept, and its drop reasons (what a user needs when nothing is left)."""
    parts = []
    for run in runs:
        for st in run["pass"].apply:
            totals = {"in": 0, "kept": 0}
            reasons: dict = {}
            for task in run["results"]:
                for r in task["shards"]:
                    c = r["stages"].get(st.name)
                    if c is None:
                        continue
                    totals["in"] += c["in"]
                    totals["kept"] += c["kept"]
                    for why, n in {**c["dropped"], **c["quarantined"]}.items():
                        reasons[why] = reasons.get(why, 0) + n
            why = ", ".join(f"{k}={v}" for k, v in sorted(reasons.items(), key=lambda kv: -kv[1])[:4])
            parts.append(f"{st.name} kept {totals['kept']} of {totals['in']}" + (f" ({why})" if why else ""))
    return "; ".join(parts)


def _run_pass_shown(p, spec, tasks: list[dict], files: list[dict], previous: list[dict], cpus: float,
                    progress) -> list[dict]:
    """run_pass with its progress display: pass 0 by raw bytes (its document count is known only once
    read), later passes by the documents the pass before kept."""
    from orchestration.runtime import console

    names = " → ".join(s.name for s in p.apply)
    first = p.apply[0].name if p.apply else None
    if p.index == 0:
        size = {f["path"]: f["bytes"] for f in files}
        total, amount = sum(size.values()) / 1e6, lambda t, r: size.get(t["id"], 0) / 1e6
    else:
        docs = {r["shard"]: r["docs_file"]["docs"] for task in previous for r in task["shards"] if r["docs_file"]}
        total, amount = sum(docs.values()), lambda t, r: docs.get(t["shard"], 0)
    finished = [0]
    with console.progress(f"pass {p.index} {names}", total, "MB" if p.index == 0 else "docs") as bar:
        def done(task: dict, result: dict) -> None:
            n = sum(r["stages"][first]["in"] for r in result["shards"]) if first else 0
            bar.advance(amount(task, result), docs=n)
            progress.task_done(result)
            finished[0] += 1
            stopping.note(f"pass {p.index} [{names.replace(' → ', ' -> ')}]: {finished[0]} of {len(tasks)} tasks finished and kept")

        return run_pass(spec, tasks, cpus, on_done=done)


def missing_outputs(workdir: storage.StoragePath, summary: dict) -> list[str]:
    """What is wrong with a finished pipeline's outputs: a stage or token manifest that does not load (truncated,
    edited: its digest no longer matches), or a file it lists missing or of another size. Cheap: sizes, not
    hashes (`tokenmill lineage --verify` re-hashes)."""
    from pipelines.manifest import load_manifest
    from pipelines.manifest import ShardIntegrityError
    from pipelines.shard_reader import ShardSet

    problems = []
    for st in summary["stages"]:
        path = workdir / "stages" / st["stage"] / "manifest.json"
        try:
            manifest = load_manifest(path)
        except ValueError as exc:
            problems.append(str(exc))
            continue
        for f in manifest["files"]:
            try:
                size = (workdir / f["path"]).stat().st_size
            except FileNotFoundError:
                problems.append(f"{f['path']} is missing")
                continue
            if size != f["bytes"]:
                problems.append(f"{f['path']} is {size} bytes, its manifest says {f['bytes']}")
    if summary.get("tokens"):
        tokens = workdir / "tokens" / "manifest.json"
        try:
            shards = ShardSet(tokens, verify=False)  # its digest, and every shard's presence and size
            for s in shards.shards_meta:
                if s.get("index_path") and not (tokens.parent / s["index_path"]).is_file():
                    problems.append(f"tokens/{s['index_path']} is missing")
        except ShardIntegrityError as exc:
            problems.append(str(exc))
    return problems


def config_key(cfg: PipelineConfig, raw_digest: str, previous: list[str] = ()) -> str:
    """What decides a pipeline's outputs: every stage's params (content, not places: models by sha256), the
    inputs' reading options, the raw files and the earlier runs' dedup indexes (not Ray or MLflow)."""
    body = {"inputs": [{k: v for k, v in dataclasses.asdict(i).items() if k != "paths"} for i in cfg.inputs],
            "output": dataclasses.asdict(cfg.output), "dedup_index": cfg.dedup_index.write,
            "ray": {"shuffle_partitions": cfg.ray.shuffle_partitions},  # key file layout; outputs do not depend on it
            "stages": [(s.name, s.params()) for s in build(cfg)]}
    return canonical_sha256({"config": body, "raw": raw_digest, "previous": list(previous)})[:16]


def run_pipeline(cfg: PipelineConfig, workdir: storage.StoragePath, echo=print) -> dict:
    workdir = storage.path(workdir).resolve()
    with WorkdirLock(workdir, f"tokenmill pipeline {cfg.name!r}") as lock:
        if lock.stale:
            echo(f"tokenmill: taking over {workdir} from {describe_holder(lock.stale)}: that process is gone")
        _remove_partial_files(workdir, echo)
        return _run_pipeline(cfg, workdir, lock, echo)


def _remove_partial_files(workdir: storage.StoragePath, echo) -> None:
    """`.tmp` files an interrupted write left (a crash, a full disk): nothing reads them, and the lock says no
    other process is writing them now."""
    if storage.is_uri(workdir) or not workdir.is_dir():
        return  # object storage: uploads are whole or absent
    found = storage.partial_files(workdir)
    for p in found:
        p.unlink(missing_ok=True)
    if found:
        echo(f"tokenmill: removed {len(found)} partial file(s) an interrupted run left in {workdir} "
             f"(e.g. {found[0].relative_to(workdir)})")


def _since_process_start() -> float:
    import psutil

    return max(0.0, time.time() - psutil.Process().create_time())


def _run_pipeline(cfg: PipelineConfig, workdir: storage.StoragePath, lock: WorkdirLock, echo) -> dict:
    start = time.perf_counter()
    # the fixed cost, by phase (summary.json "startup_seconds"; benchmarks/bench_startup.py)
    startup = {"process_and_config": round(_since_process_start(), 3)}
    from orchestration.corpus import steps

    steps.prepare(cfg, workdir, echo)  # what a stage needs before any pass (the quality classifier, trained)
    check_pipeline(cfg)  # globs, models and earlier dedup indexes: a wrong path fails here, before Ray starts
    files, raw_digest = raw_files(cfg, workdir)
    previous = [m["digest"] for m in load_previous(cfg)]
    done_path = workdir / DONE / f"pipeline-{config_key(cfg, raw_digest, previous)}.json"
    if done_path.is_file():
        summary = json.loads(done_path.read_text())
        problems = missing_outputs(workdir, summary)
        if not problems:
            echo(f"tokenmill: pipeline already complete in {workdir} (MLflow run {summary['mlflow_run_id']}); "
                 f"nothing to do (outputs unchanged: {summary['final_digest'][:12]}...)")
            return {**summary, "already_complete": True}
        echo(f"tokenmill: the pipeline finished in {workdir} earlier, but {problems[0]}"
             + (f" (and {len(problems) - 1} more problem(s))" if len(problems) > 1 else "")
             + ": re-running the tasks whose outputs are missing or damaged")

    startup["preflight"] = round(time.perf_counter() - start, 3)
    t0 = time.perf_counter()
    from orchestration.runtime import console, tracking
    from orchestration.corpus import steps as global_steps
    from orchestration.runtime.cluster import describe, init_ray
    from orchestration.corpus.records import PassProgress, record_stages

    uri = tracking.setup(cfg.mlflow.experiment)  # an unreachable store fails here, in seconds, before Ray starts
    tracking.close_dead_runs(workdir, lock.stale, echo)
    startup["mlflow"] = round(time.perf_counter() - t0, 3)
    t0 = time.perf_counter()
    stages = build(cfg)
    resources = init_ray(cfg.ray.num_cpus, user_modules(cfg))
    startup["ray"] = round(time.perf_counter() - t0, 3)
    cpus = resources.get("CPU", 1.0)
    echo(f"tokenmill: {describe()} with {cpus:g} CPUs; MLflow store {uri}{console.where_logs()}")
    passes = plan_passes(stages)
    raw_path = workdir / "raw_files.json"
    # "location" (where the file was read, for lineage tools) is not part of the digest: moving a corpus
    # does not change what it is
    storage.write_atomic(raw_path, json.dumps({"digest": raw_digest, "files": [
        {**{k: f[k] for k in ("path", "bytes", "sha256")}, "location": f.get("local", f["path"])} for f in files]},
        indent=1))
    # the pipeline's run is open while the passes run: they log their progress into it (records.PassProgress)
    with tracking.parent_run(cfg.name, dataclasses.asdict(cfg), {tracking.WORKDIR_TAG: str(workdir)}):
        state: dict = {}
        steps: dict = {}
        runs: list[dict] = []
        results: list[dict] = []
        for p in passes:
            tasks = _source_tasks(cfg, files) if p.index == 0 else _shard_tasks(results)
            spec = pass_spec(p, state, workdir, cfg.output, cfg.ray, p is passes[-1])
            t0 = time.perf_counter()
            results = _run_pass_shown(p, spec, tasks, files, results, cpus,
                                      PassProgress(p.index, len(tasks), p.apply[0].name if p.apply else None,
                                                   p.apply[-1].name if p.apply else None)) if tasks else []
            skipped = sum(r["done"] == "skipped" for r in results)
            collected = sum(r["done"] == "collected" for r in results)
            wall = time.perf_counter() - t0
            names = " -> ".join(s.name for s in p.apply)
            stopping.note(f"passes up to {p.index} finished")
            echo(f"tokenmill: pass {p.index} [{names}]: {len(tasks)} tasks ({skipped} already done"
                 + (f", {collected} only re-collected" if collected else "") + f") in {wall:.1f}s")
            runs.append({"pass": p, "results": results, "wall": wall, "skipped": skipped, "collected": collected,
                         "tasks": len(tasks), "peak_rss_mb": max((r["peak_rss_mb"] for r in results), default=0.0)})
            if p is not passes[-1] and any(s.sink for s in passes[-1].apply) and not _shard_tasks(results):
                raise NothingLeft(f"no document is left after pass {p.index} ({_counts_line(runs)}): nothing to "
                                  f"{' or '.join(s.name for s in passes[-1].apply)}; the stages' dropped files are under "
                                  f"{workdir / 'stages'}")
            for st in p.collect:
                t1 = time.perf_counter()
                out = global_steps.run(st, global_steps.StepContext(workdir, results, state, cfg, stages))
                steps[st.name] = {"skipped": out.pop("skipped", False), "seconds": time.perf_counter() - t1,
                                  "peak_rss_mb": out.get("peak_rss_mb"),
                                  **{k: out[k] for k in STEP_FIGURES if k in out}}
                state[st.name] = out  # part of the next pass's resume key: nothing here may vary between runs
                echo(f"tokenmill: global step {st.name} in {steps[st.name]['seconds']:.1f}s"
                     + (" (already done)" if steps[st.name]["skipped"] else ""))
        summary = record_stages(cfg, workdir, runs, state, steps, raw_path, raw_digest, uri, start, echo, startup)
    stale = unlisted_outputs(workdir)
    if stale:  # written by an earlier run with other parameters: a folder's reader would take them for this run's
        for p in stale:
            p.unlink(missing_ok=True)
        _remove_empty_folders(workdir)
        echo(f"tokenmill: removed {len(stale)} file(s) an earlier run with other parameters wrote that no manifest "
             f"of this run lists (e.g. {stale[0].relative_to(workdir)})")
    storage.write_atomic(done_path, json.dumps(summary))
    return summary


OUTPUT_FOLDERS = ("docs", "stages", "tokens")  # what users read as folders (the rest is internal or a model)


def unlisted_outputs(workdir: storage.StoragePath) -> list:
    """Files in the workdir's output folders that no manifest of its last finished run (summary.json) lists:
    left by an earlier run with other parameters, or by a stage no longer in the pipeline. Local workdirs."""
    summary_path = workdir / "summary.json"
    if storage.is_uri(workdir) or not summary_path.is_file():
        return []
    listed = {"tokens/manifest.json"}
    try:
        summary = json.loads(summary_path.read_text())
        for st in summary["stages"]:
            listed.add(f"stages/{st['stage']}/manifest.json")
            manifest = json.loads((workdir / "stages" / st["stage"] / "manifest.json").read_text())
            listed.update(f["path"] for f in manifest["files"])
        tokens = workdir / "tokens" / "manifest.json"
        if summary.get("tokens") and tokens.is_file():
            for s in json.loads(tokens.read_text())["shards"]:
                listed.update(f"tokens/{s[k]}" for k in ("path", "index_path") if s.get(k))
    except (OSError, ValueError, KeyError, TypeError):
        return []  # a manifest that cannot be read: what it lists is unknown (doctor names that problem itself)
    return sorted(p for folder in OUTPUT_FOLDERS for p in (workdir / folder).rglob("*")
                  if p.is_file() and p.suffix != ".tmp"  # partial files: storage.partial_files
                  and p.relative_to(workdir).as_posix() not in listed)


def _remove_empty_folders(workdir) -> None:
    for folder in OUTPUT_FOLDERS:
        for d in sorted((p for p in (workdir / folder).rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
            if not any(d.iterdir()):
                d.rmdir()

