"""What a person watching a run sees: on a terminal, a progress display per pass and tokenmill's own lines;
Ray's and the libraries' output in WORKDIR/logs/, or live with --verbose."""

from __future__ import annotations

import os
import re
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest
from repo_paths import REPO

pytestmark = pytest.mark.slow
# a small pipeline: every pass and global step kind but the dedup ones, no classifier to train
SMALL = ["ray.num_cpus=2", "exact_dedup.enabled=false", "minhash.enabled=false", "quality.enabled=false"]
NOISE = ("Checkpoint successfully created", "Reporting training result", "Traceback", "core_worker.cc",
         "(pid=", "INFO mlflow", "Downloading artifacts", "Warning", "WARNING")


def _env(tmp_path: Path, **extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "TOKENMILL_")) and k != "RAY_ADDRESS"}
    return {**env, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}", **extra}


def _on_a_terminal(cmd: list[str], env: dict, timeout: float = 600) -> tuple[int, str]:
    """Run `cmd` with a pseudo-terminal as its stdout and stderr (what `make run` in a shell gets)."""
    try:
        master, slave = os.openpty()
    except OSError as exc:
        pytest.skip(f"no pseudo-terminal on this machine ({exc})")
    proc = subprocess.Popen(cmd, cwd=REPO, env={**env, "COLUMNS": "160", "TERM": "xterm"}, stdin=subprocess.DEVNULL,
                            stdout=slave, stderr=slave, start_new_session=True)
    os.close(slave)
    out, deadline = bytearray(), time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 1.0)
        if ready:
            try:
                chunk = os.read(master, 1 << 16)
            except OSError:  # the terminal closed: the process is gone
                break
            if not chunk:
                break
            out += chunk
        elif proc.poll() is not None:
            break
    os.close(master)
    return proc.wait(timeout=60), out.decode("utf-8", "replace")


def test_a_terminal_shows_a_progress_display_per_pass_and_no_library_noise(tmp_path):
    rc, screen = _on_a_terminal([sys.executable, "-m", "orchestration.cli", "pipeline", "configs/quickstart.yaml",
                                 "--workdir", str(tmp_path / "w"), *SMALL], _env(tmp_path))
    assert rc == 0, screen[-3000:]
    text = re.sub(r"\x1b\[[0-9;?]*[a-zA-Z]", "", screen).replace("\r", "\n")
    assert re.search(r"pass 0 ingest → extract → filter .*\d+ docs · [\d.]+/[\d.]+ MB · \d+ docs/s", text), text[-3000:]
    assert re.search(r"pass 1 tokenize .*\d+/\d+ docs", text), text[-3000:]
    assert "tokenmill: pass 0 [ingest -> extract -> filter]: 99 tasks" in text and "docs/CPU s" in text  # the table
    for noise in NOISE:
        assert noise not in text, noise
    logs = tmp_path / "w" / "logs"
    assert f"logs in {logs}" in text
    assert "Creating initial MLflow database tables" in (logs / "tokenmill.log").read_text()  # kept, not shown
    assert any((logs / "ray").glob("worker-*.out")) and (logs / "ray" / "raylet.out").is_file()


def test_verbose_shows_the_libraries_output_live(tmp_path):
    out = subprocess.run([sys.executable, "-m", "orchestration.cli", "pipeline", "configs/quickstart.yaml",
                          "--workdir", str(tmp_path / "w"), "--verbose", *SMALL], cwd=REPO, env=_env(tmp_path),
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "Creating initial MLflow database tables" in out.stderr
    assert "logs in" not in out.stdout and not (tmp_path / "w" / "logs" / "tokenmill.log").exists()
    assert "docs/CPU s" in out.stdout
