"""`ray job submit` of a pipeline and of a training job to a separately started Ray head on loopback, the
project shipped as the job's working directory; the lineage is then read back from the MLflow store.

The head is what a cluster's head node runs: `ray start --head` with its dashboard (the Jobs API) on
127.0.0.1, token authentication on (Ray 2.60 turns it on for local clusters), and tokenmill's
dependencies on the PATH of its nodes (a cluster image has them installed). `--block` keeps `ray start`
in the foreground so that the head's processes are one process group, stopped at the end (a plain
`ray stop` would also stop every other Ray of the machine, such as the test session's own).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest
from conftest import lineage_chain
from servers import free_port
from repo_paths import REPO

pytestmark = pytest.mark.slow
BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def head():
    tmp = Path(tempfile.mkdtemp(prefix="tmjob", dir="/tmp"))  # short: Ray's socket paths live under it
    port, dash = free_port(), free_port()
    # every port the head would take by default, free ones: the test session's own Ray holds the defaults
    # (its dashboard agent on 52365: a second agent there fails to bind, and the head then refuses every
    # job with "No available agent to submit job")
    ports = {flag: str(free_port()) for flag in (
        "--dashboard-agent-listen-port", "--dashboard-agent-grpc-port", "--runtime-env-agent-port",
        "--metrics-export-port", "--ray-client-server-port", "--node-manager-port", "--object-manager-port")}
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "MLFLOW_"))}
    env |= {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32),
            "PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}"}
    proc = subprocess.Popen(
        [str(BIN / "ray"), "start", "--head", "--block", "--node-ip-address", "127.0.0.1", "--port", str(port),
         "--dashboard-host", "127.0.0.1", "--dashboard-port", str(dash), "--include-dashboard", "true",
         "--num-cpus", "2", "--disable-usage-stats", "--temp-dir", str(tmp / "ray"),
         *[x for flag, value in ports.items() for x in (flag, value)]],
        env=env, stdout=subprocess.DEVNULL, stderr=(tmp / "head.log").open("w"), start_new_session=True)
    url = f"http://127.0.0.1:{dash}"
    try:
        for _ in range(240):
            try:  # the Jobs API answers once the dashboard is up (with the token: it is required)
                req = urllib.request.Request(f"{url}/api/jobs/", headers={"Authorization": f"Bearer {env['RAY_AUTH_TOKEN']}"})
                urllib.request.urlopen(req, timeout=2).close()
                break
            except OSError:
                if proc.poll() is not None:
                    pytest.fail(f"ray start --head exited: {(tmp / 'head.log').read_text()[-2000:]}")
                time.sleep(0.5)
        else:
            pytest.fail("the Ray head's dashboard did not answer in 120 s")
        yield {"url": url, "env": env, "tmp": tmp}
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:  # Ray's own stop takes ~30 s here; the head is this test's alone, and its temp dir goes below
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=60)
        shutil.rmtree(tmp, ignore_errors=True)


def submit(head: dict, store: str, *entrypoint: str) -> subprocess.CompletedProcess:
    runtime_env = {"env_vars": {"MLFLOW_TRACKING_URI": store}}
    return subprocess.run(
        [str(BIN / "ray"), "job", "submit", "--address", head["url"], "--working-dir", str(REPO),
         "--runtime-env-json", json.dumps(runtime_env), "--", "python", "-m", "orchestration.cli", *entrypoint],
        env=head["env"], capture_output=True, text=True, timeout=900)


def test_pipeline_and_training_jobs_run_on_a_submitted_cluster(head, tmp_path):
    """The pipeline's config sits outside the repository beside the user's own stage module (pipeline_runs.py):
    the job ships the repository as its working directory, and tokenmill ships the user's module to the
    workers (py_modules, merged with the job's runtime env)."""
    from pipeline_runs import outside_config

    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    work = tmp_path / "work"
    outside = tmp_path / "outside"
    outside.mkdir()
    config = outside_config(outside)
    pipeline = submit(head, store, "pipeline", str(config), "--workdir", str(work), "minhash.enabled=false",
                      "user_stages=[{name: short_docs, after: filter, stage: 'tm_user_stages:ShortDocs', "
                      "options: {min_words: 100}}]")
    assert pipeline.returncode == 0, pipeline.stdout[-4000:] + pipeline.stderr[-2000:]
    assert "tokenmill: the Ray cluster at RAY_ADDRESS=" in pipeline.stdout  # it joined the head, not a Ray of its own
    assert "Job 'raysubmit_" in pipeline.stdout and "succeeded" in pipeline.stdout
    summary = json.loads((work / "summary.json").read_text())
    tokens = summary["tokens"]
    # the quickstart's quality classifier was trained inside the job (before the stages) and applied
    assert [s["stage"] for s in summary["stages"]] == ["ingest", "extract", "filter", "short_docs", "exact_dedup",
                                                       "quality"]
    assert summary["stages"][3]["dropped"] == {"too_few_words": 3}  # 59, 63 and 80 words: under 100
    assert tokens["documents"] == summary["stages"][-1]["kept"] and tokens["tokens"] > 0
    assert (work / "quality" / "quality.bin").is_file()

    train = submit(head, store, "train", "configs/train/quickstart.yaml", "--workdir", str(tmp_path / "train"),
                   f"data.manifest={tokens['manifest_path']}", f"data.tokenizer={summary['tokenizer']['model_path']}",
                   "train.steps=4", "train.eval_every=2", "checkpoint.every=2")
    assert train.returncode == 0, train.stdout[-4000:] + train.stderr[-2000:]
    assert "tokenmill: trained to step 4" in train.stdout
    checkpoint = tmp_path / "train" / "ray" / "quickstart" / "checkpoint_step00000004"
    assert (checkpoint / "trainer_state.json").is_file()

    # the runs the two jobs recorded, read back here: the checkpoint's lineage reaches every raw file
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "MLFLOW_"))} | {"MLFLOW_TRACKING_URI": store}
    out = subprocess.run([sys.executable, "-m", "orchestration.cli", "lineage", str(checkpoint), "--json"], cwd=REPO,
                         env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    tree = json.loads(out.stdout)
    assert [n.get("stage") or n["kind"] for n in lineage_chain(tree)] == \
        ["train", "tokenize", "quality", "exact_dedup", "short_docs", "filter", "extract", "ingest"]
    raw = json.loads((work / "raw_files.json").read_text())["files"]
    from orchestration.lineage.walk import raw_files
    assert len(raw) == 99 and {f["path"] for f in raw} <= {f["path"] for f in raw_files(tree)}
