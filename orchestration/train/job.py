"""`tokenmill train`: the Ray Train job (TorchTrainer, FSDP2 workers) and its MLflow run, on the driver.

The driver verifies the shards (every byte), opens the job's MLflow run (params, the shard manifest as
input, the tokenizer hash) and starts the TorchTrainer; rank 0 logs step metrics into that run. After the
fit: checkpoint paths and hashes, the consolidated safetensors export, the logged model, the loss curve and
text samples. A job re-run with the same name and storage continues from its last checkpoint (Ray Train
restores it) in the same MLflow run.
"""

from __future__ import annotations

import dataclasses
import json
import signal
import time
from pathlib import Path

import mlflow
import ray
from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchConfig, TorchTrainer

from model.export import WEIGHTS, load_export
from model.flops import flops_per_token, param_counts
from model.layers import KVCache
from orchestration.runtime import console, plots, stopping, tracking
from pipelines.typed_config import ConfigError
from orchestration.runtime.cluster import describe, init_ray
from model.generate import complete
from orchestration.config.train import MIXTURE_TAG, TrainConfig
from orchestration.evaluation.run import SUITE_DIGEST_TAG
from orchestration.train.planning import job_plan, refuse_unless_fits
from orchestration.train.worker import WorkerJob, train_loop
from orchestration.runtime.workdir_lock import WorkdirLock
from orchestration.runtime.workdir_lock import describe as describe_holder
from pipelines import storage
from pipelines.block_cache import cache_for
from pipelines.shard_reader import ShardSet
from model.checkpoint import checkpoint_digest
from pipelines.hashing import sha256_file
from pipelines.tokenizer import Tokenizer

RUN_RECORD = "train_run.json"  # in the workdir: the MLflow run id of each job name, for resumption
CHECKPOINT_TAG = "tokenmill.checkpoint"
SPIKES_TAG = "tokenmill.loss_spikes"


def absolute_tracking_uri(uri: str) -> str:
    """Workers run in other folders: a relative sqlite path must become absolute."""
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not uri.startswith(prefix + "/"):
        return prefix + str(Path(uri[len(prefix):]).resolve())
    return uri


def _resolve_data(cfg: TrainConfig) -> tuple[list[tuple[str, storage.StoragePath]], storage.StoragePath]:
    """([(source name, manifest)], tokenizer): one source named "tokens" for `data.manifest`, else `data.sources`."""
    if not (cfg.data.manifest or cfg.data.sources) or not cfg.data.tokenizer:
        raise ConfigError("data.manifest (or data.sources) and data.tokenizer: both required (or use `tokenmill run`)")
    named = [(s.name, s.manifest, f"data.sources.{i}.manifest") for i, s in enumerate(cfg.data.sources)] \
        or [("tokens", cfg.data.manifest, "data.manifest")]
    tokenizer = storage.path(cfg.data.tokenizer).resolve()
    out = []
    for name, manifest, key in [*named, (None, cfg.data.tokenizer, "data.tokenizer")]:
        p = storage.path(manifest).resolve()
        if not p.is_file():
            raise ConfigError(f"{key}: no such file {p}")
        if name is not None:
            out.append((name, p))
    return out, tokenizer


def _verify_sources(cfg: TrainConfig, manifests, tokenizer_path, echo) -> list[ShardSet]:
    """Every source verified (each shard's sha256); a mixture's sources made with one tokenizer (refused naming the
    two that differ), its shares printed as they will be used and refused where a source cannot supply its need."""
    sets = []
    for name, path in manifests:
        # remote shards read by ranges: the manifest, indexes and block tables now, every block as it is fetched
        cache = cache_for(path, cfg.data.remote_cache_mb, f"{cfg.name}-driver")
        echo(f"tokenmill: verifying token shards {path} ..." + (" (indexes and block checksums: blocks are "
                                                                 "verified as training fetches them)" if cache else ""))
        sets.append(ShardSet(path, verify=True, cache=cache))
    first = sets[0]
    for (name, path), ss in zip(manifests, sets):
        if ss.tokenizer_sha256 != first.tokenizer_sha256:
            raise ConfigError(f"data.sources: {manifests[0][0]!r} was tokenized with {first.tokenizer_sha256[:12]}... and "
                              f"{name!r} with {ss.tokenizer_sha256[:12]}...: a mixture's sources share one tokenizer")
    ShardSet(manifests[0][1], tokenizer_path=str(tokenizer_path), verify=False)  # the tokenizer they were made with
    if cfg.data.sources:
        from model.data import TrainingData
        from model.mixture import check_supply

        splits = [TrainingData(ss, cfg.data.seq_len, cfg.data.seed, cfg.data.val_fraction, cfg.data.split_seed) for ss in sets]
        windows = [d.train.num_windows for d in splits]
        phases = cfg.data.phases()
        try:
            need = check_supply([n for n, _ in manifests], windows, [s.max_epochs for s in cfg.data.sources], phases,
                                cfg.global_batch_seqs, cfg.train.steps, cfg.data.seq_len)
        except ValueError as exc:
            raise ConfigError(f"data.sources: {exc}") from None
        for phase in phases:
            echo(f"tokenmill: mixture from step {phase.from_step}: " + ", ".join(
                f"{n} {share:.4f}" for (n, _), share in zip(manifests, phase.shares)))
        echo("tokenmill: mixture over the job: " + ", ".join(
            f"{n} {k:,} sequences ({k / max(w, 1):.2f} epochs of {w:,})" for (n, _), k, w in zip(manifests, need.tolist(),
                                                                                         windows)))
        # validation scores whole rounds of one window per worker (model.step.evaluate)
        few = [f"{n} ({d.val.num_windows})" for (n, _), d in zip(manifests, splits)
               if cfg.data.val_fraction and d.val.num_windows < cfg.ray.num_workers]
        if few:
            echo(f"tokenmill: note: fewer validation windows than the {cfg.ray.num_workers} workers in "
                 f"{', '.join(few)} (val_fraction {cfg.data.val_fraction} of its documents, windows of "
                 f"{cfg.data.seq_len + 1} tokens): no val_loss or val_bpb for it")
    return sets


def _run_records(workdir: storage.StoragePath) -> dict[str, str]:
    """Job name -> MLflow run id of the jobs trained in this workdir."""
    record = workdir / RUN_RECORD
    return json.loads(record.read_text()) if record.is_file() else {}


def run_train(cfg: TrainConfig, workdir, echo=print) -> dict:
    workdir = storage.path(workdir).resolve()
    with WorkdirLock(workdir, f"tokenmill train {cfg.name!r}") as lock:
        if lock.stale:
            echo(f"tokenmill: taking over {workdir} from {describe_holder(lock.stale)}: that process is gone")
        return _run_train(cfg, workdir, lock, echo)


def _prepare_suite(cfg: TrainConfig, mcfg, tokenizer_path: str, echo):
    """The job's evaluation suite (eval.suite), tokenized once here for every rank: (config, prepared, seq_len, files,
    digest), or None."""
    if not cfg.eval.suite:
        return None
    from orchestration.evaluation.run import load_suite
    from pipelines.evalsets import prepare_suite, suite_digest, suite_files
    from pipelines.tokenizer import Tokenizer

    suite = load_suite(cfg.eval.suite)
    seq_len = suite.seq_len or mcfg.max_seq_len  # as `tokenmill eval` scores it: the numbers are comparable
    if seq_len > mcfg.max_seq_len:
        raise ConfigError(f"eval.suite: its seq_len {seq_len} exceeds the model's max_seq_len {mcfg.max_seq_len}")
    files = suite_files(suite)
    prepared = prepare_suite(suite, Tokenizer(tokenizer_path), seq_len)
    echo(f"tokenmill: evaluation suite {suite.name!r}: {len(suite.texts)} text set(s), {len(suite.tasks)} task(s), "
         f"{len(prepared.requests):,} requests of at most {seq_len} tokens")
    return suite, prepared, seq_len, files, suite_digest(suite, files)


def _run_train(cfg: TrainConfig, workdir: storage.StoragePath, lock: WorkdirLock, echo) -> dict:
    manifests, tokenizer_path = _resolve_data(cfg)
    sets = _verify_sources(cfg, manifests, tokenizer_path, echo)
    shards, manifest_path = sets[0], manifests[0][1]
    mcfg = cfg.model_config(shards.vocab_size)
    suite = _prepare_suite(cfg, mcfg, str(tokenizer_path), echo)  # before Ray starts: a bad eval file fails here
    ckpt_root = cfg.checkpoint.storage_path or "ray"  # an absolute path or a URI wins
    ckpts = (storage.path(ckpt_root) if storage.is_uri(ckpt_root) else (workdir / ckpt_root)).resolve()
    ckpts.mkdir(parents=True, exist_ok=True)
    export_dir = workdir / "model"

    # no CPU probe here: rank 0 measures its own peak for MFU (the expected time shows when the peak is known: a GPU's
    # datasheet, train.peak_flops; `--plan` probes)
    the_plan = job_plan(cfg, mcfg, measure_cpu=False)
    for line in the_plan.lines():
        echo(f"tokenmill: plan: {line}")
    refuse_unless_fits(the_plan)  # before the store, Ray or any worker
    uri = absolute_tracking_uri(tracking.setup(cfg.mlflow_experiment))  # unreachable: fails here, before Ray
    resources = init_ray(cfg.ray.num_cpus)
    mlflow.set_tracking_uri(uri)
    tracking.close_dead_runs(workdir, lock.stale, echo)
    counts = param_counts(mcfg)
    fpt = flops_per_token(mcfg, cfg.data.seq_len)
    echo(f"tokenmill: {describe()} with {resources.get('CPU', 0):g} CPUs; MLflow store {uri}{console.where_logs()}")
    echo(f"tokenmill: {sum(ss.total_tokens for ss in sets):,} tokens in {sum(ss.num_shards for ss in sets)} shards"
         + (f" of {len(sets)} sources" if len(sets) > 1 else ""))

    records = _run_records(workdir)
    resume_from = _newest_complete_checkpoint(ckpts / cfg.name, echo)
    _mend_ray_snapshot(ckpts / cfg.name, echo)
    # a job with checkpoints continues in its MLflow run
    previous = records.get(cfg.name) if resume_from else None
    start = time.perf_counter()
    with tracking.run(run_id=previous, run_name=None if previous else f"train:{cfg.name}",
                      tags={tracking.KIND_TAG: "train", tracking.WORKDIR_TAG: str(workdir),
                            tracking.CODE_VERSION_TAG: tracking.code_version()}) as run:
        run_id = run.info.run_id
        storage.write_atomic(workdir / RUN_RECORD, json.dumps({**records, cfg.name: run_id}, indent=1))
        if previous:
            echo(f"tokenmill: resuming job {cfg.name!r} from {resume_from} in MLflow run {run_id}")
            if tracking.ENDED_TAG in run.data.tags:  # it was marked KILLED above: it goes on now
                mlflow.MlflowClient().delete_tag(run_id, tracking.ENDED_TAG)
        else:
            raw = dataclasses.asdict(cfg)
            tracking.log_params({**raw, "model": mcfg.to_dict(), "world_size": cfg.ray.num_workers,
                                 "code_version": tracking.code_version(), "params_total": counts["total"],
                                 "params_non_embedding": counts["non_embedding"], "flops_per_token": fpt,
                                 "global_batch_seqs": cfg.global_batch_seqs})
            mlflow.log_dict(raw, "train_config.json")
            mlflow.log_dict(the_plan.as_dict(), "plan.json")  # what the job expected of memory and time
            # every source: a mixture's by its name, with its share from step 1 (normalized) and its cap
            first = dict(zip([s.name for s in cfg.data.sources], cfg.data.phases()[0].shares)) if cfg.data.sources else {}
            caps = {s.name: s.max_epochs for s in cfg.data.sources}
            for (name, path), ss in zip(manifests, sets):
                tracking.log_input_manifest(name, path, ss.manifest["digest"], context="training", tags={
                    "share": f"{first[name]:.6g}", "max_epochs": "none" if caps[name] is None else f"{caps[name]:g}"}
                    if name in first else None)
            data_run = shards.manifest.get("mlflow_run_id") or ""
            if suite:
                for f in suite[3]:
                    tracking.log_raw_input(f"eval:{f['name']}", f["path"], f["sha256"])
                mlflow.set_tag(SUITE_DIGEST_TAG, suite[4])
            mlflow.set_tags({"tokenmill.tokenizer_sha256": shards.tokenizer_sha256,
                             "tokenmill.manifest_sha256": shards.manifest["digest"],
                             "tokenmill.data_run_id": data_run,  # the tokenize run; its parent is the pipeline's
                             "tokenmill.pipeline_run_id": _parent_of(data_run),
                             "tokenmill.job": cfg.name})
        if cfg.data.sources:  # a tag, not a param: a resumed job may change the schedule after its checkpoint
            mlflow.set_tag(MIXTURE_TAG, json.dumps({"sources": [dataclasses.asdict(x) for x in cfg.data.sources],
                                                    "schedule": [dataclasses.asdict(x) for x in cfg.data.schedule]})[:5000])
        if suite:  # every source of a mixture: each came from its own pipeline
            notes = [(name, _decontamination_note(suite[0].name, suite[4], ss.manifest.get("mlflow_run_id") or ""))
                     for (name, _), ss in zip(manifests, sets)]
            mlflow.set_tag(DECONTAMINATED_TAG, "yes" if all(n is None for _, n in notes) else
                           "no: " + ", ".join(name for name, n in notes if n is not None))
            same: dict[str, list[str]] = {}  # one line per distinct note, naming the sources it is about
            for name, note in notes:
                if note:
                    same.setdefault(note, []).append(name)
            for note, names in same.items():
                about = ", ".join(repr(n) for n in names)
                echo(note if not cfg.data.sources else note.replace(
                    "tokenmill: note: the shards", f"tokenmill: note: source{'s' * (len(names) > 1)} {about}: the shards", 1))
        board = ray.remote(num_cpus=0)(console.Board).remote()  # the workers' progress and notes
        trainer = _Trainer(
            train_loop,
            train_loop_config={"job": WorkerJob(
                cfg=cfg, model=mcfg, manifest=str(manifest_path), tokenizer=str(tokenizer_path), tracking_uri=uri,
                sources=[(name, str(path)) for name, path in manifests],
                run_id=run_id, storage_path=str(ckpts), export_dir=str(export_dir),
                resume_from=str(resume_from) if resume_from else None, progress=board, micro_batch=the_plan.micro,
                **({"suite": suite[1], "suite_seq_len": suite[2], "suite_batch": suite[0].batch_size} if suite else {}))},
            scaling_config=ScalingConfig(num_workers=cfg.ray.num_workers, use_gpu=cfg.ray.use_gpu,
                                         resources_per_worker={"CPU": cfg.ray.cpus_per_worker}),
            torch_config=TorchConfig(backend="nccl" if cfg.ray.use_gpu else "gloo"),
            run_config=RunConfig(name=cfg.name, storage_path=str(ckpts),  # Ray Train reads URIs through pyarrow
                                 checkpoint_config=CheckpointConfig(num_to_keep=cfg.checkpoint.keep),
                                 failure_config=FailureConfig(max_failures=cfg.ray.max_failures)),
        )
        asked: list[int] = []  # the signal, once one came: the poller asks the workers to stop

        def poll() -> None:
            if asked and asked[0] > 0:
                ray.get(board.request_stop.remote())
                asked[0] = -asked[0]  # asked once
            _show(board, bar, echo)

        def on_signal(signum: int) -> None:  # in the signal handler: only a flag and a line
            asked.append(signum)
            stopping.say(f"tokenmill: {signal.Signals(signum).name}: the workers save a checkpoint at the end of "
                         f"the step they are in, then stop (within {STOP_BOUND})")

        # Ray Train's fit() puts its own SIGINT handler in place (it aborts the run, without a checkpoint, and
        # the process then ended with exit 1 and no word): tokenmill's (stopping.graceful) stays
        trainer._register_sigint_handler = lambda controller: None
        with console.progress(f"train {cfg.name}", cfg.train.steps, "steps") as bar, \
                console.Poller(poll), stopping.graceful(on_signal):
            result = trainer.fit()
        if asked and ((result.return_value if result is not None else None) or {}).get("interrupted"):
            _stopped(cfg, ckpts, result, abs(asked[0]))  # else the last step came first: it finished
        seconds = time.perf_counter() - start
        summary, worker_out = _record_outcome(cfg, run_id, result, ckpts, export_dir, tokenizer_path, mcfg, echo)
        summary.update(seconds=seconds, run_id=run_id, manifest_digest=shards.manifest["digest"])
        mlflow.log_metric("wall_seconds", seconds)
    storage.write_atomic(workdir / "train_summary.json", json.dumps(summary, indent=1))
    # not in the JSON: the sharded model's logits on one window (what the export must reproduce)
    return {**summary, "probe_tokens": worker_out.get("probe_tokens"), "probe_logits": worker_out.get("probe_logits")}


# How long a training job takes to stop once SIGTERM or SIGINT arrives: the poller passes the request on within
# 0.5 s, the step under way finishes, then every rank writes its checkpoint shard. Kubernetes' default grace
# period (30 s) covers that on the presets here; a larger model needs terminationGracePeriodSeconds to match.
STOP_BOUND = "0.5 s, the step under way and one checkpoint save"


class _Trainer(TorchTrainer):
    """Ray Train's TorchTrainer, without its placement-group cleaner where Ray runs no dashboard (a local Ray of our
    own, a simulated cluster). The cleaner asks Ray's state API, which the dashboard serves, whether the controller
    still lives; without a dashboard each question waits out its 10 s timeout, and the controller's shutdown waits
    for the one under way: 10-14 s at the end of every job (seen with py-spy; the job's whole end took 16 s of a
    40 s tiny job). Such a Ray ends with the job and its placement groups with it; where a dashboard runs (a
    cluster) the cleaner stays."""

    def _create_default_callbacks(self):
        callbacks = super()._create_default_callbacks()
        try:
            dashboard = ray._private.worker.get_dashboard_url()
        except Exception:  # noqa: BLE001  (Ray moved it: keep Ray's defaults)
            return callbacks
        return callbacks if dashboard else [c for c in callbacks if type(c).__name__ != "PlacementGroupCleanerCallback"]


def _newest_complete_checkpoint(job_dir, echo):
    """The newest checkpoint folder of the job that looks whole (model.checkpoint.incomplete), naming each newer
    one it skips and why; None when there is none. (Ray Train's own record of the latest checkpoint can lag
    the folders on disk when the driver is killed: it resumed from step 40 with checkpoint_step80 there, or
    from step 1 with checkpoint_step40 there.)"""
    from model.checkpoint import incomplete
    for path in sorted(job_dir.glob("checkpoint_step*"), key=lambda p: p.name, reverse=True):
        why = incomplete(path)
        if why is None:
            return path
        echo(f"tokenmill: skipping checkpoint {path}: {why}")
    return None


def _mend_ray_snapshot(job_dir, echo) -> None:
    """Ray Train refuses to start a run whose snapshot (checkpoint_manager_snapshot.json) names a checkpoint
    folder that is gone (deleted by hand, or skipped as incomplete and removed): "a corrupted run directory".
    tokenmill picks the checkpoint to resume from itself, so such a snapshot is moved aside (Ray Train then
    starts its record afresh; older checkpoint folders stay on disk, beyond checkpoint.keep)."""
    snapshot = job_dir / "checkpoint_manager_snapshot.json"
    try:
        names = {r.get("checkpoint_dir_name") for r in json.loads(snapshot.read_text()).get("checkpoint_results", [])}
    except FileNotFoundError:
        return
    except ValueError:
        names = {None}  # unreadable: as good as gone
    gone = sorted(n or "?" for n in names if not n or not (job_dir / n).is_dir())
    if gone:
        snapshot.replace(snapshot.with_name(snapshot.name + ".stale"))
        echo(f"tokenmill: Ray Train's record of the job's checkpoints names {', '.join(gone)}, no longer there: "
             f"moved it aside ({snapshot.name}.stale)")


def _stopped(cfg: TrainConfig, ckpts, result, signum: int) -> None:
    """A job stopped by a signal: which checkpoint it saved, then Interrupted (tracking.run ends the MLflow run
    KILLED; the CLI prints the line and exits 128 + signum)."""
    saved = _newest_complete_checkpoint(ckpts / cfg.name, lambda _: None)
    stopping.note(f"training {cfg.name!r}: checkpoint {saved.name if saved else '(none)'} saved at step "
                  f"{result.return_value['step']}")
    raise stopping.Interrupted(signum)


def _show(board, bar, echo) -> None:
    """The workers' notes as lines; their latest step in the progress display (or as a line, without one)."""
    notes, (step, total, text, short) = ray.get(board.take.remote())
    for note in notes:
        echo(note)
    if bar.live:
        bar.set(step, short)
    elif text and text != getattr(bar, "last_text", None):
        bar.last_text = text
        echo(text)


def _parent_of(run_id: str) -> str:
    """The pipeline run whose child made the shards ("" when the store does not have it)."""
    if not run_id:
        return ""
    try:
        return mlflow.get_run(run_id).data.tags.get("mlflow.parentRunId", "")
    except mlflow.exceptions.MlflowException:
        return ""


DECONTAMINATED_TAG = "tokenmill.eval.decontaminated"  # yes: the shards were decontaminated against this suite


def _decontamination_note(name: str, digest: str, data_run: str) -> str | None:
    """One line when the job's evaluation suite is not the one its shards were decontaminated against (from the
    tags the decontaminate stage puts on the pipeline's run), else None."""
    from pipelines.stages.decontaminate import DROPPED_TAG, NGRAM_TAG, SUITE_TAG

    pipeline = _parent_of(data_run)
    try:
        tags = mlflow.get_run(pipeline).data.tags if pipeline else {}
    except mlflow.exceptions.MlflowException:
        tags = {}
    against = tags.get(SUITE_TAG)
    if against == digest:
        return None
    if against is None:
        return ("tokenmill: note: the shards were not decontaminated against an evaluation suite"
                + (f" (pipeline run {pipeline})" if pipeline else " (their pipeline run is not in this store)")
                + f": this job's suite {name!r} ({digest[:12]}...) may score text the model trained on; the pipeline's "
                f"`decontaminate: {{enabled: true, suite: ...}}` removes it")
    return (f"tokenmill: note: the shards were decontaminated against another evaluation suite ({against[:12]}..., "
            f"{tags.get(NGRAM_TAG, '?')}-grams, {tags.get(DROPPED_TAG, '?')} documents dropped; pipeline run {pipeline}) "
            f"than this job's {name!r} ({digest[:12]}...): its items may be in the training data")


class TrainingStopped(RuntimeError):
    """The loss stopped being finite: the job ended at that step, its last good checkpoint kept."""


def _record_outcome(cfg: TrainConfig, run_id: str, result, ckpts, export_dir, tokenizer_path,
                    mcfg, echo) -> tuple[dict, dict]:
    """(the job's summary, what rank 0 returned): checkpoints, spikes, the export and the samples recorded."""
    checkpoints = []
    for ckpt_dir in sorted((ckpts / cfg.name).glob("checkpoint_step*"), key=str):
        checkpoints.append({"path": str(ckpt_dir), "sha256": checkpoint_digest(ckpt_dir)})
    if checkpoints:
        mlflow.log_dict({"checkpoints": checkpoints}, "checkpoints.json")
        mlflow.set_tags({f"{CHECKPOINT_TAG}.latest": checkpoints[-1]["path"],
                         f"{CHECKPOINT_TAG}.latest_sha256": checkpoints[-1]["sha256"]})
    client = mlflow.MlflowClient()
    spikes = sorted({m.step: m.value for m in client.get_metric_history(run_id, "loss_spike")}.items())
    # the steps the job's spike rule flagged (model/spikes.py), searchable: tags.`tokenmill.loss_spikes` != 'none'
    mlflow.set_tag(SPIKES_TAG, ",".join(str(s) for s, _ in spikes)[:5000] or "none")
    worker_out = result.return_value or {}
    if worker_out.get("checkpoint_problems"):  # the worker tagged the run when it skipped them (metrics.FALLBACK_TAG)
        for problem in worker_out["checkpoint_problems"]:
            echo(f"tokenmill: skipped an unusable checkpoint: {problem}")
    if stopped := worker_out.get("stopped"):
        last = checkpoints[-1]["path"] if checkpoints else "none (the job had not checkpointed yet)"
        message = (f"training stopped: the loss is {stopped['loss']} at step {stopped['step']}; the last good "
                   f"checkpoint is {last} (lower optim.lr or raise optim.warmup_steps, then run the job again to "
                   "resume from it)")
        mlflow.set_tag(tracking.ENDED_TAG, message)
        raise TrainingStopped(message)
    weights = export_dir / WEIGHTS
    export_sha = sha256_file(weights)
    mlflow.set_tags({"tokenmill.export": str(export_dir), "tokenmill.export_sha256": export_sha})
    tracking.log_artifact(export_dir, "export")
    model, _ = load_export(export_dir)
    _log_model(export_dir)

    train = [(m.step, m.value) for m in client.get_metric_history(run_id, "loss")]
    val = [(m.step, m.value) for m in client.get_metric_history(run_id, "val_loss")]
    fig = plots.loss_curve(train, val, f"{cfg.name}: loss", spikes)
    mlflow.log_figure(fig, "loss_curve.png")
    plots.plt.close(fig)
    if cfg.data.sources:  # realized against planned shares, both cumulative over the steps so far
        history = lambda key: [(m.step, m.value) for m in client.get_metric_history(run_id, key)]  # noqa: E731
        fig = plots.mixture_shares({s.name: history(f"mix.{s.name}.share") for s in cfg.data.sources},
                                   {s.name: history(f"mix.{s.name}.target") for s in cfg.data.sources},
                                   f"{cfg.name}: mixture")
        mlflow.log_figure(fig, "mixture_shares.png")
        plots.plt.close(fig)

    tok = Tokenizer(tokenizer_path)
    kv_bytes = KVCache.bytes_per_token(mcfg)
    mlflow.log_metric("kv_cache_bytes_per_token", kv_bytes)
    sc = cfg.sample
    samples = [{"prompt": p, "completion": complete(model, tok, p, sc.max_new_tokens, sc.temperature, sc.top_k, sc.seed)}
               for p in sc.prompts]
    mlflow.log_text("\n\n".join(f"{s['prompt']!r} -> {s['completion']!r}" for s in samples), "samples.txt")
    echo(f"tokenmill: trained to step {worker_out.get('step')}, loss {worker_out.get('loss', float('nan')):.4f}; "
         f"export {export_dir} (sha256 {export_sha[:12]}...)")
    echo(f"tokenmill: KV cache {kv_bytes} bytes per token ({mcfg.n_kv_heads} of {mcfg.n_heads} heads cached, fp32)")
    for s in samples:
        echo(f"tokenmill: sample  {s['prompt']}|{s['completion']}")
    evaluated = {k[len("eval."):]: v for k, v in client.get_run(run_id).data.metrics.items() if k.startswith("eval.")}
    if evaluated:
        echo(f"tokenmill: evaluation suite at the last step: {evaluated['mean_bpb']:.4f} bits per byte (mean of its "
             f"sets; eval.* metrics of the run)")
    return {"step": worker_out.get("step"), "loss": worker_out.get("loss"), "data": worker_out.get("data"),
            "checkpoints": checkpoints, "export": str(export_dir), "export_sha256": export_sha, "samples": samples,
            "kv_cache_bytes_per_token": kv_bytes, "eval": evaluated}, worker_out


def _log_model(export_dir) -> None:
    """The final model as an MLflow logged model: code (orchestration/train/mlflow_model.py) plus the safetensors
    export as its artifact, with this package's code; loading it unpickles nothing."""
    from orchestration.train import mlflow_model

    root = Path(__file__).resolve().parents[2]  # the folder that holds model/, orchestration/ and pipelines/

    signature = mlflow.models.infer_signature(["a prompt"], ["its completion"], params=mlflow_model.DEFAULTS)
    mlflow.pyfunc.log_model(name="model", python_model=mlflow_model.__file__, artifacts={"export": str(storage.local_copy(export_dir))},
                            signature=signature,
                            code_paths=[str(root / p) for p in ("model", "orchestration", "pipelines")],
                            pip_requirements=["torch", "safetensors", "sentencepiece", "numpy"])
