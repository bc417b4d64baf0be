"""Byte-identical outputs whatever the Ray CPUs, batch sizes and key partitions, and after the driver is
SIGKILLed mid-pipeline and the same command is run again; a finished pipeline re-run is a no-op; a changed
parameter re-runs only what comes after it. The pipeline has two stages of the user's own (pipeline_runs.py):
they get what a built-in stage gets (dropped files with reasons, accounting, manifests, MLflow runs, lineage)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from pipeline_runs import cli, env, overrides, run, same_outputs
from repo_paths import REPO

from orchestration.runtime.workdir_lock import LOCK_NAME

pytestmark = pytest.mark.slow


def _cmd(workdir: Path, corpora: Path, langid_model: Path, quality_model: Path, extra: list[str],
         config: Path) -> list[str]:
    return cli(workdir, overrides(corpora, langid_model, quality_model, extra), config)


def test_user_stages_get_what_a_built_in_stage_gets(one_node_summary, tmp_path):
    """The datatrove URLFilter (by class path, its blocklist from a file) and the user's own Stage subclass (from a
    module outside the repository, which only the runtime env brings to the workers): their drops with datatrove's
    and the user's reasons, their manifests and MLflow child runs with their params, and `lineage --doc`."""
    import json

    import mlflow

    from conftest import stage_table

    one = one_node_summary
    by = {s["stage"]: s for s in one["stages"]}
    url, short = by["url_blocklist"], by["short_docs"]
    assert url["dropped"] == {"url_blocklist:domain": 7}  # commoncrawl.org (5 pages) and kyleclo.com (2)
    dropped = stage_table(url, "dropped")
    assert {u.split("/")[2] for u in dropped.column("url").to_pylist()} == {"commoncrawl.org", "kyleclo.com"}
    assert short["dropped"] == {"too_few_words": 3}  # 41, 48 and 50 words of the 155 the filters keep: under 60
    assert short["docs_in"] == by["filter"]["kept"] and by["exact_dedup"]["docs_in"] == short["kept"]
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{one['workdir']}.mlflow.db")
    run = client.get_run(short["run_id"])
    assert run.data.params["stage"] == "tm_user_stages:ShortDocs" and len(run.data.params["source_sha256"]) == 64
    assert run.data.metrics["dropped.too_few_words"] == short["dropped"]["too_few_words"]
    assert client.get_run(url["run_id"]).data.params["datatrove"] == "datatrove.pipeline.filters.URLFilter"
    doc = dropped.column("id")[0].as_py()
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{one['workdir']}.mlflow.db"}
    out = subprocess.run([sys.executable, "-m", "orchestration.cli", "lineage", "--doc", doc], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and "url_blocklist" in out.stdout and "url_blocklist:domain" in out.stdout, \
        out.stdout[-2000:] + out.stderr[-2000:]
    assert json.loads(Path(url["manifest"]).read_text())["stage"] == "url_blocklist"


def test_same_digests_across_cpus_after_a_driver_kill_rerun_and_parameter_change(
        tmp_path, corpora, langid_model, quality_model, one_node_summary, user_config):
    one, two_dir = one_node_summary, tmp_path / "two"
    assert [s["stage"] for s in one["stages"]] == ["ingest", "url_blocklist", "extract", "filter", "short_docs",
                                                   "exact_dedup", "minhash", "quality"]
    assert one["stages"][-1]["kept"] > 100 and sum(one["stages"][5]["dropped"].values()) > 0
    assert one["tokens"]["shards"] >= 2 and one["passes"][1]["tasks"] >= 20  # many shard tasks

    # the same pipeline with 2 CPUs and other batch sizes, its driver (and local Ray) SIGKILLed mid-pass
    two_cmd = _cmd(two_dir, corpora, langid_model, quality_model, ["ray.num_cpus=2", "ray.batch_size=128"], user_config)
    proc = subprocess.Popen(two_cmd, cwd=REPO, env=env(two_dir), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 600
    lock = two_dir / LOCK_NAME
    while time.time() < deadline and not (lock.is_file() and lock.read_text()):
        time.sleep(0.05)
    # a second run on the same workdir is refused at once, naming the first (before, both "succeeded" while
    # deleting each other's files)
    second = subprocess.run(two_cmd, cwd=REPO, env=env(two_dir), capture_output=True, text=True, timeout=300)
    assert second.returncode == 2 and f"is in use by tokenmill pipeline 'quickstart' (pid {proc.pid} on " \
        in second.stderr, second.stderr[-2000:]
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

    two, out = run(two_cmd, two_dir)
    assert f"from tokenmill pipeline 'quickstart' (pid {proc.pid} on " in out and "that process is gone" in out
    same_outputs(one, two)
    assert two["passes"][0]["skipped"] == two["passes"][0]["tasks"]  # pass 0 had finished: nothing redone
    assert two["passes"][1]["skipped"] >= finished_before >= 5
    for s in two["stages"]:
        assert s["docs_in"] == s["kept"] + sum(s["dropped"].values()) + sum(s["quarantined"].values())

    # a finished pipeline: the same command says so and does nothing
    t0 = time.perf_counter()
    again, out = run(two_cmd, two_dir)
    assert "already complete" in out and again["mlflow_run_id"] == two["mlflow_run_id"]
    assert time.perf_counter() - t0 < 60  # generous: it starts neither Ray nor MLflow

    # a changed MinHash parameter: ingest/extract/filter are not redone, exact dedup's step is reused
    three, _ = run(two_cmd + ["minhash.bands=20"], two_dir)
    assert three["passes"][0]["collected"] == three["passes"][0]["tasks"]  # MinHash keys re-collected, nothing else
    assert three["global_steps"]["exact_dedup"]["skipped"] and not three["global_steps"]["minhash"]["skipped"]
    assert [s["output_digest"] for s in three["stages"][:6]] == [s["output_digest"] for s in two["stages"][:6]]
    assert three["stages"][6]["output_digest"] != two["stages"][6]["output_digest"]  # params are in the digest
