"""`tokenmill ablate CONFIG`: every variant's pipeline (sharing the passes it has in common with the baseline),
every (variant, seed) proxy training run on the same token budget, scored on one evaluation suite, and the
verdict (orchestration/ablation/verdict.py), all under one MLflow run.

Layout of the ablation's folder (`--workdir`): `variants/<name>/` a pipeline workdir per variant,
`train/<name>-s<seed>/` a training workdir per run, `ablation.json` the ablation's MLflow run (so a re-run resumes
it), `verdict.json` and `verdict.md`.

Sharing: a variant's workdir starts as hard links to the baseline's finished one (every write in tokenmill is
a whole-file rename, so a linked file is never changed in place). The pipeline's own resume then decides what to
rerun: a pass whose stages, parameters and inputs are the baseline's finds its completion records and skips; a
global step (dedup clustering, the tokenizer) whose inputs are the same finds its outcome (`steps.cached`,
recorded relative to the workdir). What ran and what was shared is read back from each pipeline's summary.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow

from orchestration.ablation.verdict import markdown, verdicts
from orchestration.config.ablation import AblationConfig, Variant, data_overrides, steps_for
from orchestration.runtime import tracking
from pipelines.errors import UsageError
from pipelines.typed_config import ConfigError

ABLATION_TAG = "tokenmill.ablation"  # on every pipeline and training run of an ablation: the ablation's run id
VARIANT_TAG = "tokenmill.ablation.variant"
SEED_TAG = "tokenmill.ablation.seed"
KIND = "ablation"
SKIP_WHEN_LINKING = ("logs", ".tokenmill.lock", "summary.json")


def link_tree(src: Path, dst: Path) -> int:
    """dst as hard links to src's files (copies across filesystems), without its lock, logs, summary and the
    whole-pipeline completion record (the variant's config differs: its passes decide). Returns files linked."""
    n = 0
    for root, dirs, files in os.walk(src):
        rel = Path(root).relative_to(src)
        dirs[:] = [d for d in dirs if not (rel == Path(".") and d in SKIP_WHEN_LINKING)]
        (dst / rel).mkdir(parents=True, exist_ok=True)
        for f in files:
            if (rel == Path(".") and f in SKIP_WHEN_LINKING) or (rel.name == "_done" and f.startswith("pipeline-")) \
                    or f.endswith(".tmp"):
                continue
            target = dst / rel / f
            if target.exists():
                continue
            try:
                os.link(Path(root) / f, target)
            except OSError:
                shutil.copy2(Path(root) / f, target)
            n += 1
    return n


def _shared(summary: dict) -> dict:
    """From a pipeline summary: passes and global steps that ran, and those found done (shared)."""
    passes = [{"pass": p["pass"], "stages": p["stages"], "tasks": p["tasks"], "skipped": p["skipped"]}
              for p in summary.get("passes", [])]
    steps = {name: bool(s.get("skipped")) for name, s in (summary.get("global_steps") or {}).items()}
    return {"passes_run": sum(p["skipped"] < p["tasks"] for p in passes),
            "passes_shared": sum(p["tasks"] > 0 and p["skipped"] == p["tasks"] for p in passes),
            "steps_run": sum(not s for s in steps.values()), "steps_shared": sum(steps.values()),
            "passes": passes, "global_steps": steps, "already_complete": bool(summary.get("already_complete"))}


def training_key(tcfg) -> str:
    """What a training run's result depends on: its config but for its name (seed, steps and suite included),
    with the token shards and the tokenizer by content (a variant's manifest path differs from the baseline's
    even when its shards are the same bytes). Training is deterministic given these (tests/integration/test_train.py),
    so two runs with one key give the same numbers: the second is not run."""
    from pipelines.hashing import canonical_sha256

    d = dataclasses.asdict(tcfg)
    d.pop("name")
    d["data"]["manifest"] = _manifest_digest(tcfg.data.manifest) if tcfg.data.manifest else None
    for source in d["data"]["sources"]:
        source["manifest"] = _manifest_digest(source["manifest"])
    d["data"]["tokenizer"] = _file_sha256(tcfg.data.tokenizer)
    return canonical_sha256(d)


@functools.lru_cache(maxsize=None)
def _manifest_digest(manifest: str) -> str:  # every seed of a variant reads the same files: once each
    from pipelines import storage

    return json.loads(storage.path(manifest).read_text())["digest"]


@functools.lru_cache(maxsize=None)
def _file_sha256(path: str) -> str:
    from pipelines.hashing import sha256_file

    return sha256_file(path)


def _ablation_run(cfg: AblationConfig, workdir: Path) -> str:
    """The ablation's MLflow run: the one this folder recorded (resumed), else a new one. Not active (the
    pipelines and training jobs start their own runs); they name it as their parent."""
    record = workdir / "ablation.json"
    client = mlflow.MlflowClient()
    if record.is_file():
        run_id = json.loads(record.read_text())["mlflow_run_id"]
        client.update_run(run_id, status="RUNNING")
        return run_id
    exp = mlflow.get_experiment_by_name(cfg.mlflow_experiment)
    run = client.create_run(exp.experiment_id, run_name=f"ablate:{cfg.name}", tags={
        tracking.KIND_TAG: KIND, tracking.WORKDIR_TAG: str(workdir), tracking.CODE_VERSION_TAG: tracking.code_version()})
    for k, v in {"seeds": cfg.seeds, "budget_tokens": cfg.budget_tokens, "baseline": cfg.baseline,
                 "variants": ",".join(v.name for v in cfg.variants), "tokenizer": cfg.tokenizer,
                 "snr_threshold": cfg.snr_threshold, "suite": cfg.suite}.items():
        client.log_param(run.info.run_id, k, str(v)[:500])
    client.log_dict(run.info.run_id, dataclasses.asdict(cfg), "ablation.json")
    workdir.mkdir(parents=True, exist_ok=True)
    record.write_text(json.dumps({"mlflow_run_id": run.info.run_id, "name": cfg.name}))
    return run.info.run_id


def run_ablation(cfg: AblationConfig, variants: list[Variant], workdir, echo=print) -> dict:
    from orchestration.config.pipeline import load_pipeline_config
    from orchestration.corpus.pipeline import run_pipeline, user_modules
    from orchestration.runtime import cluster
    from orchestration.train.job import run_train
    from pipelines import storage

    workdir = Path(workdir).resolve()
    if storage.is_uri(str(workdir)):
        raise ConfigError("--workdir: an ablation runs in a local or shared-filesystem folder (its variants share "
                          "files by hard links)")
    tracking.setup(cfg.mlflow_experiment)
    cluster.also_ship(m for v in variants for m in user_modules(v.pipeline))  # one Ray serves every variant
    ablation = _ablation_run(cfg, workdir)
    client = mlflow.MlflowClient()
    echo(f"tokenmill: ablation {cfg.name!r}: {len(variants)} variants x {cfg.seeds} seeds, "
         f"{cfg.budget_tokens:,} training tokens per run; MLflow run {ablation}")
    order = sorted(variants, key=lambda v: v.name != cfg.baseline)  # the baseline first: the others start from it
    base_dir = workdir / "variants" / cfg.baseline
    data: dict[str, dict] = {}
    try:
        for v in order:
            vdir = workdir / "variants" / v.name
            extra = [f"mlflow.experiment={cfg.mlflow_experiment}"]
            if v.name != cfg.baseline:
                if not vdir.exists():
                    echo(f"tokenmill: variant {v.name!r} starts from the baseline's workdir "
                         f"({link_tree(base_dir, vdir):,} files linked)")
                if cfg.tokenizer == "shared" and not v.pipeline.tokenizer.model_path:
                    extra.append(f"tokenizer.model_path={data[cfg.baseline]['tokenizer']}")
            with contextlib.chdir(Path(cfg.pipeline).parent):
                pcfg = load_pipeline_config(cfg.pipeline, [*v.pipeline_overrides, *extra])
            echo(f"tokenmill: variant {v.name!r}: pipeline in {vdir}")
            with tracking.tagged({"mlflow.parentRunId": ablation, ABLATION_TAG: ablation, VARIANT_TAG: v.name}):
                summary = run_pipeline(pcfg, vdir, echo)
            shared = _shared(summary)
            data[v.name] = {"manifest": summary["tokens"]["manifest_path"],
                            "tokenizer": summary["tokenizer"]["model_path"],
                            "pipeline_run": summary["mlflow_run_id"], "trainings_run": 0, "trainings_shared": 0,
                            **shared}
            echo(f"tokenmill: variant {v.name!r}: {shared['passes_run']} pass(es) and {shared['steps_run']} global "
                 f"step(s) ran, {shared['passes_shared']} and {shared['steps_shared']} found done")
        jobs, runs = _plan_training(cfg, order, data, workdir, ablation, echo)
        pending = [j for j in jobs if not j.finished(echo)]
        width = side_by_side(cfg.parallel, pending[0].cfg) if len(pending) > 1 else 1
        if width > 1:
            echo(f"tokenmill: {len(pending)} training runs, {width} side by side")
            _train_side_by_side(pending, width, echo)
        for job in pending if width == 1 else ():  # one after another, in this process
            with tracking.tagged(job.tags):
                run_train(job.cfg, job.workdir, echo)
        for job in pending:
            data[job.variant]["trainings_run"] += 1
        runs = {variant: [jobs[i].run_id() for i in which] for variant, which in runs.items()}
        result = report(cfg, runs, data, ablation)
        (workdir / "verdict.json").write_text(json.dumps(result, indent=1))
        (workdir / "verdict.md").write_text(result["markdown"])
        client.log_dict(ablation, result, "verdict.json")
        client.log_text(ablation, result["markdown"], "verdict.md")
        _plots(client, ablation, cfg, runs, result["rows"])
        client.set_terminated(ablation, "FINISHED")
    except BaseException as exc:  # a signal (the runs inside resume on a re-run) or an error
        client.set_terminated(ablation, "KILLED" if isinstance(exc, (KeyboardInterrupt, SystemExit)) else "FAILED")
        raise
    echo(result["markdown"])
    return result


@dataclasses.dataclass
class TrainingJob:
    """One (variant, seed) training run to have: its typed config, workdir and MLflow tags."""
    variant: str
    seed: int
    cfg: object  # TrainConfig
    config: Path  # the proxy training config file the overrides apply to
    overrides: list[str]
    workdir: Path
    tags: dict

    def summary(self) -> dict:
        path = self.workdir / "train_summary.json"
        return json.loads(path.read_text()) if path.is_file() else {}

    def finished(self, echo) -> bool:
        done = self.summary()
        if done.get("step") == self.cfg.train.steps and done.get("run_id"):  # not even Ray is started for it
            echo(f"tokenmill: training run {self.cfg.name} already finished (step {done['step']}, MLflow run "
                 f"{done['run_id']})")
            return True
        return False

    def run_id(self) -> str:
        return self.summary()["run_id"]


def _plan_training(cfg: AblationConfig, order: list[Variant], data: dict, workdir: Path, ablation: str,
                   echo) -> tuple[list[TrainingJob], dict[str, list[int]]]:
    """The training runs to have, seed-major (every variant has a first result early), each (variant, seed) as
    an index into them: a run with the training key of an earlier one is that run (shared, not trained again)."""
    from orchestration.config.train import load_train_config

    jobs: list[TrainingJob] = []
    index: dict[str, int] = {}  # training key -> job
    runs: dict[str, list[int]] = {v.name: [] for v in order}
    _manifest_digest.cache_clear()  # read once per planning: the variants' outputs are final by now
    _file_sha256.cache_clear()
    common = {}  # per variant, what every seed's run shares: its data, steps, split and suite
    for v in order:
        steps = steps_for(cfg, v.train)
        # the seed moves initialisation and order, not which documents are held out for validation
        split = v.train.data.seed if v.train.data.split_seed is None else v.train.data.split_seed
        with contextlib.chdir(Path(cfg.train).parent):
            own = data_overrides(load_train_config(cfg.train, v.train_overrides), data[v.name]["manifest"],
                                 data[v.name]["tokenizer"])
        common[v.name] = [*v.train_overrides, *own, f"train.steps={steps}", f"data.split_seed={split}",
                          f"eval.suite={cfg.suite}", f"eval.every={max(1, steps // cfg.evals)}",
                          f"mlflow_experiment={cfg.mlflow_experiment}"]
    for seed in range(cfg.seeds):
        for v in order:
            overrides = [*common[v.name], f"name={v.name}-s{seed}", f"train.seed={seed}", f"data.seed={seed}"]
            with contextlib.chdir(Path(cfg.train).parent):
                tcfg = load_train_config(cfg.train, overrides)
            key = training_key(tcfg)
            if key in index:  # the same shards, tokenizer, config and seed as another run: its result
                echo(f"tokenmill: training run {tcfg.name} is {jobs[index[key]].cfg.name} (the same token shards, "
                     f"tokenizer, config and seed): shared, not trained again")
                data[v.name]["trainings_shared"] += 1
            else:
                index[key] = len(jobs)
                jobs.append(TrainingJob(v.name, seed, tcfg, Path(cfg.train).resolve(), overrides, workdir / "train" / tcfg.name,
                                        {"mlflow.parentRunId": ablation, ABLATION_TAG: ablation, VARIANT_TAG: v.name,
                                         SEED_TAG: str(seed)}))
            runs[v.name].append(index[key])
    return jobs, runs


def side_by_side(parallel: int, tcfg) -> int:
    """How many training runs go side by side: `parallel`, or (0) as many as the Ray cluster's CPUs (GPUs, for
    a GPU job) hold at once; 1 on a machine that holds one."""
    if parallel:
        return parallel
    import ray

    from orchestration.runtime.cluster import init_ray

    resources = init_ray(tcfg.ray.num_cpus) if not ray.is_initialized() else ray.cluster_resources()
    fit = int(resources.get("CPU", 0) // (tcfg.ray.num_workers * tcfg.ray.cpus_per_worker))
    if tcfg.ray.use_gpu:
        fit = min(fit, int(resources.get("GPU", 0) // tcfg.ray.num_workers))
    return max(1, fit)


def _train_side_by_side(jobs: list[TrainingJob], width: int, echo) -> None:
    """`width` training runs at a time, each `tokenmill train` in a process of its own on this ablation's Ray
    (RAY_ADDRESS's cluster, or the local Ray this process started), its output in its workdir's train.log. A
    signal to the ablation reaches them as SIGTERM (each saves a checkpoint and stops); a run that fails leaves
    the others to finish, then the ablation fails naming it (a re-run resumes every unfinished run)."""
    import ray

    from orchestration.runtime.cluster import init_ray

    if not ray.is_initialized():
        init_ray(jobs[0].cfg.ray.num_cpus)
    env = {**os.environ, "RAY_ADDRESS": os.environ.get("RAY_ADDRESS") or ray.get_runtime_context().gcs_address,
           "MLFLOW_TRACKING_URI": mlflow.get_tracking_uri()}
    queue, running, failed = list(jobs), {}, []
    try:
        while queue or running:
            while queue and len(running) < width:
                job = queue.pop(0)
                job.workdir.mkdir(parents=True, exist_ok=True)
                log = (job.workdir / "train.log").open("a")
                cmd = [sys.executable, "-m", "orchestration.cli", "train", str(job.config), "--workdir", str(job.workdir),
                       *job.overrides]  # relative paths in the overrides: from the config's folder, as in this process
                proc = subprocess.Popen(cmd, cwd=job.config.parent, stdout=log, stderr=subprocess.STDOUT,
                                        env={**env, tracking.RUN_TAGS_ENV: json.dumps(job.tags)})
                running[proc] = (job, log)
                echo(f"tokenmill: training run {job.cfg.name} started (pid {proc.pid}; its output: {log.name})")
            time.sleep(0.5)
            for proc in [p for p in running if p.poll() is not None]:
                job, log = running.pop(proc)
                log.close()
                if proc.returncode:
                    lines = Path(log.name).read_text(errors="replace").strip().splitlines() or [""]
                    failed.append(f"{job.cfg.name} (exit {proc.returncode}: {lines[-1][:300]})")
                    echo(f"tokenmill: training run {job.cfg.name} failed: {failed[-1]}")
                else:
                    done = job.summary()
                    echo(f"tokenmill: training run {job.cfg.name} finished: step {done.get('step')}, loss "
                         f"{done.get('loss', float('nan')):.4f}, MLflow run {done.get('run_id')}")
    except BaseException:  # a signal or an error here: the runs save a checkpoint and stop
        for proc in running:
            proc.send_signal(signal.SIGTERM)
        for proc, (job, log) in running.items():
            try:
                proc.wait(timeout=300)
            except subprocess.TimeoutExpired:
                proc.kill()
            log.close()
        raise
    if failed:
        raise UsageError(f"training run(s) failed: {'; '.join(failed)}; re-run the ablation to resume them")


def _history(client, run_id: str, key: str) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))


def report(cfg: AblationConfig, runs: dict[str, list[str]], data: dict, ablation: str) -> dict:
    """Per metric of the suite (the mean and each set's bits per byte, each task's accuracy): the verdict rows
    from every run's last evaluation and its last `last_evals` evaluations."""
    client = mlflow.MlflowClient()
    first = client.get_run(runs[cfg.baseline][0]).data.metrics
    metrics = ["eval.mean_bpb"] + sorted(k for k in first if k.startswith("eval.") and k.endswith((".bpb", ".acc")))
    rows = []
    for metric in metrics:
        finals, tails = {}, {}
        for variant, ids in runs.items():
            hist = [_history(client, r, metric) for r in ids]
            finals[variant] = [h[-1][1] for h in hist if h]
            tails[variant] = [[v for _, v in h[-cfg.last_evals:]] for h in hist if h]
        rows += verdicts(finals, tails, cfg.baseline, metric, cfg.snr_threshold)
    table = [r.__dict__ for r in rows]
    for r in table:
        r.update({k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in r.items()})
    sharing = {v: {k: d[k] for k in ("passes_run", "passes_shared", "steps_run", "steps_shared", "passes",
                                      "global_steps", "pipeline_run", "trainings_run", "trainings_shared")}
               for v, d in data.items()}
    text = markdown(rows, cfg.snr_threshold)
    text += ("\n\n| variant | passes run | passes shared | global steps run | shared | trainings shared | pipeline run "
             "| training runs |\n|---|---:|---:|---:|---:|---:|---|---|\n") + "\n".join(
        f"| {v} | {s['passes_run']} | {s['passes_shared']} | {s['steps_run']} | {s['steps_shared']} | "
        f"{s['trainings_shared']} | {s['pipeline_run'][:8]} | {', '.join(r[:8] for r in runs[v])} |"
        for v, s in sharing.items())
    return {"ablation_run": ablation, "baseline": cfg.baseline, "seeds": cfg.seeds, "budget_tokens": cfg.budget_tokens,
            "snr_threshold": cfg.snr_threshold, "rows": table, "sharing": sharing, "runs": runs, "markdown": text}


def _plots(client, ablation: str, cfg: AblationConfig, runs: dict[str, list[str]], rows: list[dict]) -> None:
    """Held-out bits per byte over training per variant (mean over seeds, min-max band), the final mean bits per
    byte per variant with its seed standard deviation, and every metric of the suite per variant with its seed
    standard deviation (ablation_metrics.png)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 4))
    finals = {}
    for variant, ids in runs.items():
        hists = [dict(_history(client, r, "eval.mean_bpb")) for r in ids]
        steps = sorted(set.intersection(*(set(h) for h in hists))) if hists else []
        if steps:
            vals = [[h[s] for h in hists] for s in steps]
            ax.plot(steps, [sum(v) / len(v) for v in vals], label=variant)
            ax.fill_between(steps, [min(v) for v in vals], [max(v) for v in vals], alpha=0.2)
            finals[variant] = vals[-1]
    ax.set_xlabel("step")
    ax.set_ylabel("suite mean bits per byte")
    ax.legend()
    names = list(finals)
    means = [sum(v) / len(v) for v in finals.values()]
    stds = [(sum((x - m) ** 2 for x in v) / max(len(v) - 1, 1)) ** 0.5 for v, m in zip(finals.values(), means)]
    bx.bar(names, means, yerr=stds, capsize=4)
    bx.set_ylabel("final mean bits per byte (seed std)")
    fig.suptitle(f"ablation {cfg.name}: {cfg.seeds} seeds, {cfg.budget_tokens:,} tokens per run")
    fig.tight_layout()
    client.log_figure(ablation, fig, "ablation_bpb.png")
    plt.close(fig)
    metrics = list(dict.fromkeys(r["metric"] for r in rows))
    cols = min(6, len(metrics))  # 18 metrics for the core suite: three rows of six
    rows_n = math.ceil(len(metrics) / cols)
    fig, axes = plt.subplots(rows_n, cols, figsize=(3.2 * cols, 3.4 * rows_n), squeeze=False)
    for ax in axes.flat[len(metrics):]:
        ax.set_visible(False)
    for ax, metric in zip(axes.flat, metrics):
        mine = [r for r in rows if r["metric"] == metric]
        ax.bar([r["variant"] for r in mine], [r["mean"] for r in mine], yerr=[r["std"] or 0 for r in mine], capsize=3,
               color=["grey" if r["verdict"] == "baseline" else {"better": "tab:green", "worse": "tab:red"}.get(
                   r["verdict"], "tab:blue") for r in mine])
        lo = min(r["mean"] - (r["std"] or 0) for r in mine)
        hi = max(r["mean"] + (r["std"] or 0) for r in mine)
        ax.set_ylim(lo - 0.1 * (hi - lo + 1e-9), hi + 0.1 * (hi - lo + 1e-9))
        ax.set_title(metric.removeprefix("eval."), fontsize=9)
        ax.tick_params(axis="x", labelrotation=45, labelsize=8)
    fig.suptitle("per metric: mean over seeds, seed std (green better, red worse, blue within noise)", fontsize=9)
    fig.tight_layout()
    client.log_figure(ablation, fig, "ablation_metrics.png")
    plt.close(fig)


def print_report(run_id: str, echo=print) -> None:
    """`tokenmill ablate --report RUN`: the verdict table the ablation logged."""
    tracking.setup_uri()
    try:
        text = mlflow.artifacts.load_text(f"runs:/{run_id}/verdict.md")
    except Exception as exc:  # noqa: BLE001  (no such run, or one with no verdict yet)
        raise ConfigError(f"run {run_id}: no ablation verdict ({type(exc).__name__}: {str(exc)[:200]})") from None
    echo(text)
