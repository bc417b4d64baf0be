"""Faults of the machine a new user hits (issue 19), each with real processes: an MLflow store that cannot be
reached, several commands starting at once on a new store. Each ends in one line (exit 2) or works."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from servers import free_port
from repo_paths import REPO

pytestmark = pytest.mark.slow
QUICKSTART = REPO / "configs" / "quickstart.yaml"


def _env(**extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_") and k != "RAY_ADDRESS"}
    return {**env, **extra}


def cli(*args: str, env: dict, cwd: Path = REPO, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "orchestration.cli", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


def test_an_unreachable_mlflow_store_is_one_line_in_seconds(tmp_path):
    """Was: silent for 4 min 16 s (MLflow's client retrying), then "internal error: MlflowException"."""
    uri = f"http://127.0.0.1:{free_port()}"
    env = _env(MLFLOW_TRACKING_URI=uri)
    for args in (["pipeline", str(QUICKSTART), "--workdir", str(tmp_path / "wd")], ["lineage", "--doc", "a/b#1"],
                 ["doctor"]):
        t0 = time.monotonic()
        out = cli(*args, env=env)
        took = time.monotonic() - t0
        assert took < 90, (args, took)  # imports included; the connect time-out itself is 5 s
        text = out.stdout + out.stderr
        assert f"the MLflow store {uri} cannot be reached" in text and "internal error" not in text, (args, text)
        if args[0] == "doctor":
            assert out.returncode == 1
            continue
        assert out.returncode == 2, (args, out.stderr)
        assert len(out.stderr.strip().splitlines()) == 1 and "Ray" not in out.stdout, (args, text)


def test_commands_that_start_at_once_on_a_new_sqlite_store_all_work(tmp_path):
    """Was: "internal error: OperationalError: duplicate column name: step" for the second (both migrated the
    new database)."""
    code = "from orchestration.runtime import tracking; tracking.setup('race'); print('ok')"
    procs = [subprocess.Popen([sys.executable, "-c", code], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, env=_env(MLFLOW_TRACKING_URI=f"sqlite:///{tmp_path / 'new.db'}"))
             for _ in range(3)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-1500:] for o in outs]
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'new.db'}")
    assert [e.name for e in client.search_experiments() if e.name == "race"] == ["race"]


def test_runs_side_by_side_register_the_same_datasets_at_once(tmp_path):
    """Was (CI, two training runs of an ablation side by side): "internal error: MlflowException: (sqlite3.
    IntegrityError) UNIQUE constraint failed: datasets.experiment_id, datasets.name, datasets.digest" when both
    logged the same eval file between MLflow's lookup and its insert."""
    manifest = tmp_path / "manifest.json"
    manifest.write_text("{}")
    uri = f"sqlite:///{tmp_path / 'race.db'}"
    subprocess.run([sys.executable, "-c", "from orchestration.runtime import tracking; tracking.setup('race')"],
                   cwd=REPO, env=_env(MLFLOW_TRACKING_URI=uri), check=True, timeout=300)
    start = time.time() + 15  # all three past their imports, then the same 40 datasets at the same moment
    code = (f"import time, mlflow; from orchestration.runtime import tracking; tracking.setup('race')\n"
            f"with mlflow.start_run():\n"
            f"    time.sleep(max(0.0, {start} - time.time()))\n"
            f"    for i in range(40):\n"
            f"        tracking.log_input_manifest(f'ds{{i}}', {str(manifest)!r}, f'{{i:032x}}')\n"
            f"print('ok')")
    procs = [subprocess.Popen([sys.executable, "-c", code], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, env=_env(MLFLOW_TRACKING_URI=uri)) for _ in range(3)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-1500:] for o in outs]
    import mlflow

    client = mlflow.MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("race").experiment_id])
    assert len(runs) == 3 and all(len(r.inputs.dataset_inputs) == 40 for r in runs)
    assert len({d.dataset.digest for r in runs for d in r.inputs.dataset_inputs}) == 40  # one row per dataset
