"""Pretraining through a real local Ray Train (2 CPU workers, FSDP2 over gloo) and a real MLflow store."""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch

from model.data import TrainingData
from model.export import load_export
from orchestration.cli import SAMPLE_SEPARATOR
from orchestration.lineage.walk import step_batch
from model.checkpoint import load_unsharded
from orchestration.config.train import train_config_from_dict
from orchestration.train.job import run_train
from pipelines.manifest import mlflow_digest
from pipelines.manifest import ShardIntegrityError
from pipelines.shard_reader import ShardSet
from pipelines.tokenizer import Tokenizer
from conftest import using_store
from repo_paths import EVALS, REPO
from train_fixture import build_shakespeare_shards, train_job

pytestmark = pytest.mark.slow
STEPS, STOP = 60, 30
PRESETS = REPO / "configs" / "train"


@pytest.fixture(scope="module")
def shards(corpora, tmp_path_factory):
    return build_shakespeare_shards(corpora, tmp_path_factory.mktemp("shakespeare"))


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """One SQLite MLflow store for the module's jobs."""
    with using_store(tmp_path_factory.mktemp("mlflow")) as uri:
        yield uri


def train(raw: dict, workdir):
    return run_train(train_config_from_dict(raw, PRESETS), workdir, echo=lambda *_: None)


def history(run_id: str, key: str) -> dict[int, float]:
    """Metric per step; the last value logged for a step (a restarted job logs replayed steps again)."""
    out = {}
    for m in sorted(mlflow.MlflowClient().get_metric_history(run_id, key), key=lambda m: m.timestamp):
        out[m.step] = m.value
    return out


@pytest.fixture(scope="module")
def suite(corpora, tmp_path_factory) -> Path:
    """A small evaluation suite: held-out Shakespeare (the file's last speeches) and three shared task sets, one
    per schema, capped."""
    import yaml

    if not EVALS.is_dir():
        pytest.skip(f"the shared evaluation sets are not at {EVALS}")
    folder = tmp_path_factory.mktemp("suite")
    text = (corpora / "tinyshakespeare" / "input.txt").read_text(encoding="utf-8")
    speeches = [s for s in text.split("\n\n") if s.strip()][-40:]
    (folder / "held.jsonl").write_text("".join(json.dumps({"text": s}) + "\n" for s in speeches))
    (folder / "suite.yaml").write_text(yaml.safe_dump({
        "name": "test", "batch_size": 8,
        "texts": [{"name": "held", "path": "held.jsonl"}],
        "tasks": [{"name": "arc_easy", "path": str(EVALS / "arc_easy.jsonl"), "schema": "mc", "max_items": 24},
                  {"name": "winogrande", "path": str(EVALS / "winogrande.jsonl"), "schema": "schema", "max_items": 24},
                  {"name": "lambada", "path": str(EVALS / "lambada_openai.jsonl"), "schema": "lm", "max_items": 24}]}))
    return folder / "suite.yaml"


@pytest.fixture(scope="module")
def straight(ray_local, store, shards, suite, tmp_path_factory):
    """The uninterrupted reference job (with the evaluation suite at steps 30 and 60: scoring does not touch the
    training state, so the other jobs, without it, still equal this one step for step)."""
    workdir = tmp_path_factory.mktemp("straight")
    return train(train_job("straight", shards, STEPS, eval={"suite": str(suite), "every": 30}), workdir), workdir


def unigram_entropy(shards) -> float:
    data = TrainingData(ShardSet(shards["manifest"], verify=False), 64, 0, 0.05)
    counts = np.bincount(data.train.stream.read(0, data.train.stream.num_tokens))
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log(p)).sum())


def test_training_drives_the_loss_down_below_the_unigram_entropy(straight, shards):
    summary, _ = straight
    loss = history(summary["run_id"], "loss")
    val = history(summary["run_id"], "val_loss")
    assert sorted(loss) == list(range(1, STEPS + 1))
    first, last = loss[1], loss[STEPS]
    assert first > 0.9 * math.log(512)  # starts near uniform over the vocabulary
    assert last < 0.7 * first, (first, last)
    entropy = unigram_entropy(shards)
    assert val[STEPS] < entropy - 0.3, (val, entropy)  # the model uses context, not just token frequencies
    # bits per byte: val_loss x tokens / (ln 2 x the bytes of the same windows), here counted by decoding them
    # (decoding drops one dummy-prefix space per window: well under 1% of ~10,000 bytes)
    bpb = history(summary["run_id"], "val_bpb")
    data, tok = TrainingData(ShardSet(shards["manifest"]), 64, 0, 0.05), Tokenizer(shards["tokenizer"])
    n = min(64, data.val.num_windows) // 2 * 2
    tokens = text_bytes = 0
    for _, y in data.val_batches(n, 64, 0, 1):
        tokens += y.numel()
        text_bytes += sum(len(tok.decode(row).encode("utf-8")) for row in y)
    assert set(bpb) == set(val) and n >= 32
    for s in val:
        assert bpb[s] == pytest.approx(val[s] * tokens / (math.log(2) * text_bytes), rel=0.01), s


def test_training_run_records_lineage_in_mlflow(straight, shards):
    summary, workdir = straight
    run = mlflow.get_run(summary["run_id"])
    manifest = ShardSet(shards["manifest"], verify=False).manifest
    (inp,) = [i for i in run.inputs.dataset_inputs if i.dataset.name == "tokens"]  # (and the eval suite's files)
    assert inp.dataset.digest == mlflow_digest(manifest["digest"])
    assert run.data.tags["tokenmill.tokenizer_sha256"] == manifest["tokenizer_sha256"]
    assert run.data.params["world_size"] == "2" and run.data.params["model.n_kv_heads"] == "2"
    assert run.data.params["code_version"]
    for key in ("lr", "grad_norm", "tokens_per_s", "mfu"):
        assert len(history(summary["run_id"], key)) == STEPS, key
    assert any(k.startswith("system/") for k in run.data.metrics)
    assert run.data.tags["tokenmill.loss_spikes"] == "none"  # a healthy curve: the spike rule stays quiet
    latest = run.data.tags["tokenmill.checkpoint.latest"]
    assert latest.endswith(f"checkpoint_step{STEPS:08d}")
    assert [c["path"] for c in summary["checkpoints"]][-1] == latest
    assert len(summary["checkpoints"]) == 2  # keep: 2
    artifacts = {a.path for a in mlflow.MlflowClient().list_artifacts(summary["run_id"])}
    assert {"loss_curve.png", "samples.txt", "checkpoints.json", "export"} <= artifacts
    models = mlflow.search_logged_models(experiment_ids=[run.info.experiment_id], output_format="list")
    (logged,) = [m for m in models if m.source_run_id == summary["run_id"]]
    assert summary["samples"][0]["completion"]
    # the logged model loads without unpickling anything: code + the safetensors export
    files = [Path(root) / f for root, _, names in os.walk(mlflow.artifacts.download_artifacts(logged.artifact_location))
             for f in names]
    assert not [f for f in files if f.suffix in (".pkl", ".pickle", ".pt", ".pth")], files
    pyfunc = mlflow.pyfunc.load_model(logged.model_uri)
    (completion,) = pyfunc.predict(["ROMEO:"], params={"max_new_tokens": 24, "temperature": 0.8, "top_k": 40, "seed": 0})
    assert completion == summary["samples"][0]["completion"]  # the same sampler, model and seed as the job's sample


def test_export_and_checkpoint_reproduce_the_fsdp_logits(straight):
    summary, workdir = straight
    model, meta = load_export(workdir / "model")
    tokens = torch.tensor(summary["probe_tokens"])
    with torch.no_grad():
        logits = model(tokens)
    torch.testing.assert_close(logits, torch.tensor(summary["probe_logits"]), rtol=1e-5, atol=1e-5)
    # the sharded checkpoint, read in one process without Ray or a process group, is the same model
    ckpt_model, _ = load_unsharded(workdir / "ray" / "straight" / f"checkpoint_step{STEPS:08d}")
    with torch.no_grad():
        torch.testing.assert_close(ckpt_model(tokens), logits, rtol=0, atol=0)


def test_the_suite_is_scored_inside_training_and_tokenmill_eval_gives_the_same_numbers(straight, suite, store):
    """eval.* metrics at steps 30 and 60 (2 ranks, the FSDP model), the suite's files as inputs of the run; then
    `tokenmill eval` on the export (1 process) reproduces the step-60 numbers, as its own run, whose lineage walks
    to the training run and on to the shards."""
    summary, workdir = straight
    bpb = history(summary["run_id"], "eval.mean_bpb")
    assert sorted(bpb) == [30, 60] and bpb[60] < bpb[30] < math.log2(512) * 0.5  # learning, and far from uniform
    for name, keys in (("held", ("bpb", "documents", "bytes")), ("arc_easy", ("bpb", "acc", "acc_norm", "acc_centered")),
                       ("winogrande", ("bpb", "acc")), ("lambada", ("bpb", "acc"))):
        for k in keys:
            assert sorted(history(summary["run_id"], f"eval.{name}.{k}")) == [30, 60], (name, k)
    run = mlflow.get_run(summary["run_id"])
    names = {i.dataset.name for i in run.inputs.dataset_inputs}
    assert {"tokens", "eval:held", "eval:arc_easy", "eval:winogrande", "eval:lambada"} <= names
    assert summary["eval"]["mean_bpb"] == bpb[60]

    out = subprocess.run([sys.executable, "-m", "orchestration.cli", "eval", str(workdir / "model"), "--suite",
                          str(suite)], cwd=REPO, capture_output=True, text=True, timeout=600,
                         env={k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"} | {"MLFLOW_TRACKING_URI": store})
    assert out.returncode == 0, out.stderr[-3000:]
    assert "| **mean** |" in out.stdout
    (ev,) = mlflow.search_runs(search_all_experiments=True, output_format="list",
                               filter_string="tags.`tokenmill.kind` = 'eval'")
    assert ev.data.tags["tokenmill.training_run_id"] == summary["run_id"]
    assert ev.data.tags["tokenmill.eval.suite_digest"] == run.data.tags["tokenmill.eval.suite_digest"]
    final = {k[len("eval."):]: v for k, v in ev.data.metrics.items() if k.startswith("eval.")}
    for key, value in summary["eval"].items():  # 2 FSDP ranks in training, 1 process here: the same numbers
        assert final[key] == pytest.approx(value, rel=1e-4, abs=1e-6), key
    tree = json.loads(subprocess.run([sys.executable, "-m", "orchestration.cli", "lineage", ev.info.run_id, "--json"],
                                     cwd=REPO, capture_output=True, text=True, timeout=300, check=True,
                                     env={**os.environ, "MLFLOW_TRACKING_URI": store}).stdout)
    (model_input,) = [i for i in tree["lineage"]["inputs"] if i["name"] == "model:export"]
    trained = model_input["produced_by"]
    assert trained["run_id"] == summary["run_id"] and any(i["name"] == "tokens" for i in trained["inputs"])


def test_generate_cli_on_the_export(straight):
    _, workdir = straight
    out = subprocess.run([sys.executable, "-m", "orchestration.cli", "generate", str(workdir / "model"),
                          "--prompt", "ROMEO:", "--prompt", "First Citizen:", "--max-new-tokens", "20"],
                         cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    samples = out.stdout.split(SAMPLE_SEPARATOR + "\n")
    assert len(samples) == 3 and samples[2] == ""
    assert samples[0].startswith("ROMEO:") and len(samples[0].strip()) > len("ROMEO:") + 10
    assert samples[1].startswith("First Citizen:")
    # tiny preset: 4 layers x 2 kv heads x head dim 32 x (k, v) x 4 bytes
    assert "KV cache 2048 bytes per token (2 key/value heads for 4 query heads" in out.stderr


def test_resume_is_exact_and_a_killed_worker_restarts_from_the_last_checkpoint(ray_local, store, shards, straight,
                                                                            tmp_path):
    """K steps, stop; the newest checkpoint is then damaged (16 flipped bytes in a shard); resume to 2K with a
    worker killing itself on the way: the job says which checkpoint is unusable and why, resumes from the one
    before it, restarts from the last checkpoint after the kill, and every step's loss equals the uninterrupted
    run's, bit for bit."""
    summary, _ = straight
    kill_at = 45  # checkpoints every 20: the restart replays steps 41-45
    job = train_job("resumed", shards, STEPS)
    first = train({**job, "train": {**job["train"], "stop_after": STOP}}, tmp_path)
    assert first["step"] == STOP
    latest = tmp_path / "ray" / "resumed" / f"checkpoint_step{STOP:08d}"
    shard = sorted(latest.glob("*.distcp"))[0]
    data = bytearray(shard.read_bytes())
    for i in range(16):
        data[len(data) // 2 + i] ^= 0xFF
    shard.write_bytes(bytes(data))
    # same name and workdir: continues from the step-20 checkpoint (step STOP's is refused), in the same MLflow run
    second = train({**job, "fault": {"kill_at_step": kill_at, "kill_rank": 1}}, tmp_path)
    assert f"{latest}: {shard.name} does not match its sha256" in \
        mlflow.get_run(second["run_id"]).data.tags["tokenmill.checkpoint_fallback"]
    assert (tmp_path / "ray" / f".fault_injected_step{kill_at}").is_file()  # the worker did die
    assert second["run_id"] == first["run_id"] and second["step"] == STEPS
    assert second["loss"] == summary["loss"]
    assert second["export_sha256"] == summary["export_sha256"]  # the same weights, the same export bytes
    steps = [m.step for m in mlflow.MlflowClient().get_metric_history(second["run_id"], "loss")]
    # one point per step: the restart trains steps 41-45 again but does not log them twice
    assert sorted(steps) == list(range(1, STEPS + 1))
    resumed = history(second["run_id"], "loss")
    reference = history(summary["run_id"], "loss")
    assert sorted(resumed) == list(range(1, STEPS + 1))
    assert [resumed[s] for s in range(1, STEPS + 1)] == [reference[s] for s in range(1, STEPS + 1)]
    # a complete job run again (e.g. `make run` twice) trains nothing and reports its final state
    third = train(job, tmp_path)
    assert third["step"] == STEPS and third["loss"] == summary["loss"] and third["run_id"] == first["run_id"]
    assert len(mlflow.MlflowClient().get_metric_history(second["run_id"], "loss")) == len(steps)


def _train_cli(job: dict, workdir: Path, store: str) -> subprocess.Popen:
    import yaml

    job = {**job, "model": {"preset": str((PRESETS / job["model"]["preset"]).resolve())}}
    path = workdir / "job.yaml"
    path.write_text(yaml.safe_dump(job))
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"} | {"MLFLOW_TRACKING_URI": store}
    return subprocess.Popen([sys.executable, "-m", "orchestration.cli", "train", str(path), "--workdir", str(workdir)],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


def _signal_after(proc: subprocess.Popen, folder: Path, sig: signal.Signals, group: bool = False) -> tuple[str, str]:
    """Send `sig` once `folder` (a checkpoint) is complete; the process's output."""
    import time

    deadline = time.time() + 600
    while time.time() < deadline and proc.poll() is None and not (folder / "trainer_state.json").is_file():
        time.sleep(0.1)
    assert proc.poll() is None, "the job ended before the signal: " + proc.stderr.read()[-2000:]
    (os.killpg if group else os.kill)(proc.pid, sig)
    return proc.communicate(timeout=300)


def test_sigterm_and_sigint_checkpoint_at_the_next_step_and_the_rerun_resumes_from_the_newest(store, shards,
                                                                                              straight, tmp_path):
    """Preemption: SIGTERM (to the driver, as Kubernetes sends it) and SIGINT (to the process group, as Ctrl-C
    sends it) make the workers save a checkpoint at the end of the step under way; the job says so and exits
    143 / 130 with its MLflow run KILLED. Was: training went on, exit 1 with no message or a C++ dump (exit
    134), and the re-run resumed from an older checkpoint or from step 1. Each re-run resumes from the newest
    complete checkpoint (naming one it skips), and the finished job equals the uninterrupted one with one
    metric point per step."""
    from test_console import NOISE

    summary, _ = straight
    job = train_job("preempted", shards, STEPS)
    ckpts = tmp_path / "ray" / "preempted"
    first = None  # the step the previous signal's checkpoint was saved at
    for sig, at, group in ((signal.SIGTERM, 20, False), (signal.SIGINT, 40, True)):
        out, err = _signal_after(_train_cli(job, tmp_path, store), ckpts / f"checkpoint_step{at:08d}", sig, group)
        lines = err.strip().splitlines()
        assert lines[0].startswith(f"tokenmill: {sig.name}: the workers save a checkpoint at the end of the step "
                                   "they are in, then stop"), err[-3000:]
        last = lines[-1]
        assert last.startswith(f"tokenmill: stopped by {sig.name} (training 'preempted': checkpoint checkpoint_step")
        assert last.endswith("; re-run the same command to resume") and len(lines) == 2, err[-3000:]
        for noise in (*NOISE, "SIGTERM received", "internal error"):
            assert noise not in out + err, noise
        saved = int(last.split("saved at step ")[1].split(")")[0])
        # a step here takes ~0.1 s: the poller's 0.5 s and the steps under way put it a few steps after `at`
        assert at <= saved < STEPS and (ckpts / f"checkpoint_step{saved:08d}" / "trainer_state.json").is_file()
        run = mlflow.MlflowClient().get_run(json.loads((tmp_path / "train_run.json").read_text())["preempted"])
        assert run.info.status == "KILLED" and run.data.tags["tokenmill.ended"] == f"killed: stopped by {sig.name}"
        if sig == signal.SIGINT:
            assert f"resuming job 'preempted' from {ckpts / f'checkpoint_step{first:08d}'}" in out, out
        first = saved

    # a newer folder that is not a whole checkpoint (a save cut short) is named and skipped
    (ckpts / "checkpoint_step00000059").mkdir()
    (ckpts / "checkpoint_step00000059" / ".metadata").write_bytes(b"")
    proc = _train_cli(job, tmp_path, store)
    out, err = proc.communicate(timeout=900)
    assert proc.returncode == 0, err[-3000:]
    assert f"skipping checkpoint {ckpts / 'checkpoint_step00000059'}: incomplete: no trainer_state.json" in out
    assert f"resuming job 'preempted' from {ckpts / f'checkpoint_step{saved:08d}'}" in out
    done = json.loads((tmp_path / "train_summary.json").read_text())
    assert done["loss"] == summary["loss"] and done["export_sha256"] == summary["export_sha256"]
    steps = [m.step for m in mlflow.MlflowClient().get_metric_history(done["run_id"], "loss")]
    assert sorted(steps) == list(range(1, STEPS + 1))  # one point per step, though steps were trained twice


def test_training_refuses_shards_that_do_not_verify(store, shards, tmp_path):
    copy = tmp_path / "tokens"
    shutil.copytree(shards["manifest"].parent, copy)
    job = train_job("tampered", shards, 2)
    job["data"]["manifest"] = str(copy / "manifest.json")
    first = json.loads((copy / "manifest.json").read_text())["shards"][0]["path"]
    shard0 = copy / first
    raw = bytearray(shard0.read_bytes())
    raw[100] ^= 1
    shard0.write_bytes(bytes(raw))
    with pytest.raises(ShardIntegrityError, match=re.escape(first)):
        train(job, tmp_path / "w1")
    other_tok = tmp_path / "other.model"
    other_tok.write_bytes(shards["tokenizer"].read_bytes() + b"\0")
    job = train_job("wrong-tokenizer", shards, 2)
    job["data"]["tokenizer"] = str(other_tok)
    with pytest.raises(ShardIntegrityError, match="not the tokenizer"):
        train(job, tmp_path / "w2")


def test_a_non_finite_loss_stops_the_job_and_keeps_the_last_good_checkpoint(ray_local, store, shards, tmp_path):
    from orchestration.train.job import TrainingStopped

    job = train_job("diverged", shards, STEPS, fault={"nan_at_step": 25, "kill_rank": 1})
    with pytest.raises(TrainingStopped, match=r"the loss is nan at step 25; the last good checkpoint is .*"
                                              r"checkpoint_step00000020"):
        train(job, tmp_path)
    assert sorted(p.name for p in (tmp_path / "ray" / "diverged").glob("checkpoint_step*")) == ["checkpoint_step00000020"]
    assert not (tmp_path / "model").exists()  # no export of a broken model
    (run,) = mlflow.search_runs(search_all_experiments=True, output_format="list",
                                filter_string="tags.`tokenmill.job` = 'diverged'")
    assert run.info.status == "FAILED" and "step 25" in run.data.tags["tokenmill.ended"]


def test_a_loss_spike_is_tagged_and_lineage_lists_its_documents(ray_local, store, shards, tmp_path):
    """A drill: noise in one rank's embedding shard before step 30 makes the loss jump; the job tags that step
    (and no earlier one), and `tokenmill lineage --spikes` lists the documents of its batch."""
    job = train_job("spiked", shards, 36, fault={"spike_at_step": 30, "kill_rank": 1})
    summary = train(job, tmp_path)
    run = mlflow.get_run(summary["run_id"])
    flagged = [int(s) for s in run.data.tags["tokenmill.loss_spikes"].split(",")]
    assert flagged[0] == 30, flagged
    loss = history(summary["run_id"], "loss")
    assert loss[30] > max(loss[s] for s in range(20, 30)) + 0.3, loss  # the jump, and no flag before it
    report = subprocess.run([sys.executable, "-m", "orchestration.cli", "lineage", "--spikes", summary["run_id"],
                             "--json"], cwd=REPO, capture_output=True, text=True, timeout=300,
                            env={k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
                            | {"MLFLOW_TRACKING_URI": store})
    assert report.returncode == 0, report.stderr[-2000:]
    spikes = json.loads(report.stdout)["spikes"]
    assert [s["step"] for s in spikes] == flagged
    first = spikes[0]
    assert first["loss"] == loss[30] and first["expected"] < loss[30] - 0.5
    batch = step_batch(summary["run_id"], 30)
    assert first["documents"] == batch["documents"] and {d["rank"] for d in batch["documents"]} == {0, 1}
    assert first["sources"] == {"tinyshakespeare": sum(d["tokens"] for d in batch["documents"])}


@pytest.fixture(scope="module")
def three_sources(shards, tmp_path_factory) -> dict[str, Path]:
    """The shakespeare speeches as three sources of one tokenizer: comedy-sized, middling, and a small one."""
    from token_sets import write_token_set

    ss = ShardSet(shards["manifest"], verify=False)
    ids = ss.document_ids()
    parts = {"big": ids[: len(ids) // 2], "mid": ids[len(ids) // 2: len(ids) * 9 // 10], "small": ids[len(ids) * 9 // 10:]}
    out, folder = {}, tmp_path_factory.mktemp("sources")
    for name, part in parts.items():
        out[name] = write_token_set(folder / name, {f"{name}/00000": {d: ss.document(d) for d in part}},
                                    target_tokens=40_000, eos_id=ss.manifest["eos_id"], dtype=ss.dtype,
                                    tokenizer_sha256=ss.tokenizer_sha256, vocab_size=ss.vocab_size)
    return out


def test_a_mixture_tracks_its_shares_and_resumes_across_a_schedule_change(ray_local, store, shards, three_sources,
                                                                          tmp_path):
    """70 / 29.5 / 0.5 % of the sequences (the small source below 1 %, capped at 2 epochs): every source's share is
    realized within one sequence, each source is an input dataset of the run with its validation loss; stopped at
    step 20 and resumed with an anneal from step 21 on, every source continues from its own position. Shares the
    capped source cannot supply, or a source of another tokenizer, are refused before Ray starts."""
    from model.mixture import allocate
    from pipelines.typed_config import ConfigError

    sources = [{"name": "big", "manifest": str(three_sources["big"]), "share": 70},
               {"name": "mid", "manifest": str(three_sources["mid"]), "share": 29.5},
               {"name": "small", "manifest": str(three_sources["small"]), "share": 0.5, "max_epochs": 2}]
    job = train_job("mix", shards, 40)
    job["data"] = {**{k: v for k, v in job["data"].items() if k != "manifest"}, "sources": sources}
    job["train"] = {**job["train"], "stop_after": 20, "eval_every": 20}
    first = train(job, tmp_path)
    assert first["step"] == 20
    anneal = [{"from_step": 21, "shares": {"big": 1, "mid": 1, "small": 2}}]
    second = train({**job, "data": {**job["data"], "schedule": anneal}, "train": {**job["train"], "stop_after": None}},
                   tmp_path)
    assert second["step"] == 40 and second["run_id"] == first["run_id"]
    run = mlflow.get_run(second["run_id"])
    assert {"big", "mid", "small"} <= {i.dataset.name for i in run.inputs.dataset_inputs}
    shares = {i.dataset.name: {t.key: t.value for t in i.tags} for i in run.inputs.dataset_inputs}
    assert shares["small"]["share"] == "0.005" and shares["small"]["max_epochs"] == "2" and shares["big"]["share"] == "0.7"
    from orchestration.config.train import train_config_from_dict as typed

    phases = typed({**job, "data": {**job["data"], "schedule": anneal}}, PRESETS).data.phases()
    expected = allocate(phases, 32, 40).sum(axis=0)
    for name, k in zip(("big", "mid", "small"), expected.tolist()):
        assert history(run.info.run_id, f"mix.{name}.tokens")[40] == k * 64, name
        assert set(history(run.info.run_id, f"val_loss.{name}")) >= {20, 40}, name
        assert set(history(run.info.run_id, f"val_bpb.{name}")) == set(history(run.info.run_id, f"val_loss.{name}"))
        share, target = history(run.info.run_id, f"mix.{name}.share"), history(run.info.run_id, f"mix.{name}.target")
        assert all(abs(share[s] - target[s]) * s * 32 < 1 for s in range(1, 41)), name  # within one sequence
    assert "mixture_shares.png" in {a.path for a in mlflow.MlflowClient().list_artifacts(run.info.run_id)}
    # lineage: step 30's windows by mixture source, as many sequences of each as the allocation gave
    batch = step_batch(run.info.run_id, 30)
    by_source = {}
    for d in batch["documents"]:
        by_source[d["mixture_source"]] = by_source.get(d["mixture_source"], 0) + d["tokens"]
    step30 = allocate(phases, 32, 30)[-1]
    assert {n: by_source.get(n, 0) for n in ("big", "mid", "small")} == \
        {n: int(k) * 65 for n, k in zip(("big", "mid", "small"), step30)}
    before = allocate(phases, 32, 20).sum(axis=0)
    assert abs(before[2] - 0.005 * 32 * 20) < 1 and before[2] > 0  # the 0.5% source, at its rate from the start
    assert history(run.info.run_id, "mix.small.planned")[40] == 0.5

    too_much = {**job, "name": "mix-capped", "data": {**job["data"], "sources": [
        *sources[:2], {**sources[2], "share": 30, "max_epochs": 0.1}]}}  # ~300 sequences of ~900 windows
    with pytest.raises(ConfigError, match=r"small needs 29\d sequences of 64 tokens .* \(max_epochs 0.1: at most \d+\)"):
        train(too_much, tmp_path / "capped")
    from token_sets import write_token_set

    ss = ShardSet(three_sources["small"], verify=False)
    other = write_token_set(tmp_path / "other", {"o/00000": {d: ss.document(d) for d in ss.document_ids()[:50]}},
                            target_tokens=40_000, eos_id=ss.manifest["eos_id"], dtype=ss.dtype,
                            tokenizer_sha256="ef" * 32, vocab_size=ss.vocab_size)
    foreign = {**job, "name": "mix-foreign", "data": {**job["data"], "sources": [
        *sources[:2], {"name": "other", "manifest": str(other), "share": 1}]}}
    with pytest.raises(ConfigError, match=r"'big' was tokenized with .* and 'other' with efefefefefef"):
        train(foreign, tmp_path / "foreign")
