"""A signal that lands in the middle of an MLflow write (orchestration/runtime/stopping.py): real SIGINT and
SIGTERM, sent by a timer into a process that does nothing but write metrics to a SQLite store."""

from __future__ import annotations

import json
import subprocess
import sys

from repo_paths import REPO


def test_a_stop_inside_a_store_write_still_ends_the_run_killed(tmp_path):
    """Each round's run is ended KILLED with the signal's name, at once (was: the exception raised inside
    SQLite's executemany kept the write lock, ending the run failed with "database is locked" after 5 s and
    the run stayed RUNNING: round 0 of this test, without the deferral)."""
    rounds = 8
    out = subprocess.run([sys.executable, str(REPO / "tests" / "support" / "stop_in_writes.py"), str(tmp_path),
                          str(rounds)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    results = [json.loads(line) for line in out.stdout.splitlines()]
    assert [r["round"] for r in results] == list(range(rounds))
    assert {r["signal"] for r in results} == {"SIGINT", "SIGTERM"}
    for r in results:
        assert r["steps"] > 0 and r["status"] == "KILLED", r
        assert r["ended_tag"] == f"killed: stopped by {r['signal']}", r
