"""One process per workdir: a second one is refused with the holder's name; a SIGKILLed holder's lock is
taken over, and the MLflow runs it left RUNNING are marked KILLED and no longer answer digest searches."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import mlflow
import pytest

from orchestration.runtime import tracking
from orchestration.runtime.workdir_lock import LOCK_NAME, WorkdirBusy, WorkdirLock, inspect
from repo_paths import REPO


HOLDER = textwrap.dedent("""
    import sys, time, mlflow
    from pathlib import Path
    from orchestration.runtime import tracking
    from orchestration.runtime.workdir_lock import WorkdirLock
    workdir = Path(sys.argv[1])
    with WorkdirLock(workdir, "tokenmill pipeline 'held'"):
        client = mlflow.MlflowClient(sys.argv[2])
        mlflow.set_tracking_uri(sys.argv[2])
        run = mlflow.start_run(experiment_id=client.create_experiment("held"), run_name="stage",
                               tags={tracking.WORKDIR_TAG: str(workdir),
                                                       tracking.OUTPUT_DIGEST_TAG: "d" * 32})
        print(run.info.run_id, flush=True)
        time.sleep(600)
""")


def test_lock_refuses_a_second_process_and_a_killed_holder_is_taken_over(tmp_path):
    workdir, uri = tmp_path / "work", f"sqlite:///{tmp_path / 'mlflow.db'}"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(workdir), uri], cwd=REPO, stdout=subprocess.PIPE,
                              text=True, env={**{k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")},
                                                 "PYTHONPATH": str(REPO)})
    try:
        run_id = holder.stdout.readline().strip()
        assert run_id, "the holder did not start"
        record = json.loads((workdir / LOCK_NAME).read_text())
        assert record["pid"] == holder.pid and record["what"] == "tokenmill pipeline 'held'"
        assert inspect(workdir)[0] == "held"
        with pytest.raises(WorkdirBusy, match=rf"is in use by tokenmill pipeline 'held' \(pid {holder.pid} on "):
            with WorkdirLock(workdir, "second"):
                pass
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert inspect(workdir) == ("stale", record)

    mlflow.set_tracking_uri(uri)
    try:
        assert mlflow.get_run(run_id).info.status == "RUNNING"
        assert len(tracking.producer_of("d" * 32)) == 0  # digest searches see finished runs only
        said = []
        with WorkdirLock(workdir, "third") as lock:
            assert lock.stale == record  # the dead holder, named
            assert tracking.close_dead_runs(workdir, lock.stale, said.append) == [run_id]
            assert json.loads((workdir / LOCK_NAME).read_text())["pid"] == os.getpid()
        run = mlflow.get_run(run_id)
        assert run.info.status == "KILLED" and f"pid {holder.pid}" in run.data.tags["tokenmill.ended"]
        assert "as KILLED" in said[0]
        assert (workdir / LOCK_NAME).read_text() == "" and inspect(workdir) == ("free", {})  # a clean release
        with WorkdirLock(workdir, "fourth") as lock:
            assert lock.stale is None
    finally:
        mlflow.set_tracking_uri(None)


def test_lock_file_is_never_unlinked_so_two_holders_cannot_coexist(tmp_path):
    first = WorkdirLock(tmp_path, "first").__enter__()
    inode = os.stat(tmp_path / LOCK_NAME).st_ino
    first.__exit__(None, None, None)
    with WorkdirLock(tmp_path, "second"):
        assert os.stat(tmp_path / LOCK_NAME).st_ino == inode
        t0 = time.time()
        with pytest.raises(WorkdirBusy):
            WorkdirLock(tmp_path, "third").__enter__()
        assert time.time() - t0 < 5  # refused at once, not queued
