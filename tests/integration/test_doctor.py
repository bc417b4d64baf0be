"""`tokenmill doctor` on a real pipeline workdir: clean, then with a corrupt output file, a stale lock and an
MLflow run left RUNNING; each problem is named with its fix, and the exit code says whether any was found."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest

from orchestration.runtime.tracking import WORKDIR_TAG
from orchestration.runtime.workdir_lock import LOCK_NAME
from repo_paths import REPO

pytestmark = pytest.mark.slow


def _doctor(workdir: Path, uri: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"} | {"MLFLOW_TRACKING_URI": uri}
    return subprocess.run([sys.executable, "-m", "orchestration.cli", "doctor", str(workdir)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)


def test_doctor_names_what_is_wrong_with_a_workdir(one_node_summary, tmp_path):
    workdir = tmp_path / "work"
    shutil.copytree(one_node_summary["workdir"], workdir)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    clean = _doctor(workdir, uri)
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert "tokens: " in clean.stdout and "shards" in clean.stdout and "no problems found" in clean.stdout
    assert "stages/minhash/manifest.json" in clean.stdout and "a local Ray (started and stopped)" in clean.stdout

    kept = next((workdir / "docs").rglob("*.parquet"))
    data = bytearray(kept.read_bytes())
    data[len(data) // 2] ^= 0xFF
    kept.write_bytes(bytes(data))
    (workdir / LOCK_NAME).write_text(json.dumps({"host": "h", "pid": 999999, "what": "tokenmill pipeline 'x'",
                                                 "started": "2026-01-01T00:00:00+00:00"}))  # no process holds it
    client = mlflow.MlflowClient(uri)
    run_id = client.create_run(client.create_experiment("left"), tags={WORKDIR_TAG: str(workdir.resolve())}).info.run_id
    # never ended: RUNNING, as a killed process leaves it
    broken = _doctor(workdir, uri)
    assert broken.returncode == 1
    out = broken.stdout
    assert f"{kept.relative_to(workdir)}: sha256" in out and "does not match the manifest" in out
    assert "a stale lock: tokenmill pipeline 'x' (pid 999999 on h" in out
    assert f"left RUNNING by a dead process: {run_id}" in out
    assert out.count("fix: ") == 3 and "3 problem(s)" in out
    assert "free disk " in out and " GB (the largest stage output is " in out  # sizes in units that read

    # the partial file an interrupted write leaves (a full disk, a crash) is named, and the next run removes it
    partial = workdir / "tokens" / "manifest.json.tmp"
    partial.write_text('{"kind": "tok')
    # and a file in an output folder that no manifest of the last run lists (an earlier run's, other parameters)
    stray = workdir / "docs" / "minhash" / "crawl" / "old-run.parquet"
    stray.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(kept, stray)
    named = _doctor(workdir, uri).stdout
    assert "1 partial file(s) left by an interrupted write (13 bytes): tokens/manifest.json.tmp" in named, named
    assert "1 file(s) in the output folders that no manifest of the last run lists: " \
           "docs/minhash/crawl/old-run.parquet" in named, named
