"""Byte-identical outputs whatever the Ray CPUs, batch sizes and key partitions, and after the driver is
SIGKILLed mid-pipeline and the same command is run again; a finished pipeline re-run is a no-op; a changed
parameter re-runs only what comes after it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]


def _cmd(workdir: Path, corpora: Path, langid_model: Path, quality_model: Path, extra: list[str]) -> list[str]:
    inputs = (
        f'inputs=[{{name: crawl, format: jsonl, paths: ["{corpora}/dolma_fixtures/*.jsonl.gz"]}},'
        f' {{name: warc, format: warc, paths: ["{corpora}/dolma_fixtures/*.warc.gz"]}}]'
    )
    return [sys.executable, "-m", "orchestration.cli", "pipeline", str(REPO / "configs" / "quickstart.yaml"),
            "--workdir", str(workdir), inputs, f"filter.language.model_path={langid_model}",
            "filter.language.min_score=0.3", "quality.enabled=true", f"quality.model_path={quality_model}",
            "quality.keep_fraction=0.7", "tokenizer.enabled=true", "tokenizer.vocab_size=3000",
            "tokenize.enabled=true", "tokenize.target_shard_tokens=30000", "output.shard_mb=0.05", *extra]


def _env(workdir: Path) -> dict:
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{workdir}.mlflow.db"}
    env.pop("RAY_ADDRESS", None)
    return env


def _run(cmd: list[str], workdir: Path) -> tuple[dict, str]:
    proc = subprocess.run(cmd, cwd=REPO, env=_env(workdir), capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads((workdir / "summary.json").read_text()), proc.stdout


def _same_outputs(a: dict, b: dict) -> None:
    assert a["raw_files_digest"] == b["raw_files_digest"]
    assert [s["stage"] for s in a["stages"]] == [s["stage"] for s in b["stages"]]
    for x, y in zip(a["stages"], b["stages"]):
        assert x["output_digest"] == y["output_digest"], x["stage"]
        assert (x["kept"], x["dropped"], x["quarantined"]) == (y["kept"], y["dropped"], y["quarantined"])
    assert a["tokenizer"]["sha256"] == b["tokenizer"]["sha256"]
    assert a["tokens"]["digest"] == b["tokens"]["digest"]


def test_same_digests_across_cpus_after_a_driver_kill_rerun_and_parameter_change(
        tmp_path, corpora, langid_model, quality_model):
    one_dir, two_dir = tmp_path / "one", tmp_path / "two"
    one, _ = _run(_cmd(one_dir, corpora, langid_model, quality_model,
                       ["ray.num_cpus=1", "ray.batch_size=16", "ray.shuffle_partitions=3"]), one_dir)
    assert [s["stage"] for s in one["stages"]] == ["ingest", "extract", "filter", "exact_dedup", "minhash", "quality"]
    assert one["stages"][-1]["kept"] > 100 and sum(one["stages"][3]["dropped"].values()) > 0
    assert one["tokens"]["shards"] >= 2 and one["passes"][1]["tasks"] >= 20  # many shard tasks

    # the same pipeline with 2 CPUs and other batch sizes, its driver (and local Ray) SIGKILLed mid-pass
    two_cmd = _cmd(two_dir, corpora, langid_model, quality_model, ["ray.num_cpus=2", "ray.batch_size=128"])
    proc = subprocess.Popen(two_cmd, cwd=REPO, env=_env(two_dir), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 600
    done_dir = two_dir / "_done"
    while time.time() < deadline and proc.poll() is None:
        if len(list(done_dir.glob("pass1-*/*.json"))) >= 5:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the pipeline finished before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (two_dir / "summary.json").exists()
    finished_before = len(list(done_dir.glob("pass1-*/*.json")))

    two, out = _run(two_cmd, two_dir)
    _same_outputs(one, two)
    assert two["passes"][0]["skipped"] == two["passes"][0]["tasks"]  # pass 0 had finished: nothing redone
    assert two["passes"][1]["skipped"] >= finished_before >= 5
    for s in two["stages"]:
        assert s["docs_in"] == s["kept"] + sum(s["dropped"].values()) + sum(s["quarantined"].values())

    # a finished pipeline: the same command says so and does nothing
    t0 = time.perf_counter()
    again, out = _run(two_cmd, two_dir)
    assert "already complete" in out and again["mlflow_run_id"] == two["mlflow_run_id"]
    assert time.perf_counter() - t0 < 60  # generous: it starts neither Ray nor MLflow

    # a changed MinHash parameter: ingest/extract/filter are not redone, exact dedup's step is reused
    three, _ = _run(two_cmd + ["minhash.bands=20"], two_dir)
    assert three["passes"][0]["collected"] == three["passes"][0]["tasks"]  # MinHash keys re-collected, nothing else
    assert three["global_steps"]["exact_dedup"]["skipped"] and not three["global_steps"]["minhash"]["skipped"]
    assert [s["output_digest"] for s in three["stages"][:3]] == [s["output_digest"] for s in two["stages"][:3]]
    assert three["stages"][4]["output_digest"] != two["stages"][4]["output_digest"]  # params are in the digest
