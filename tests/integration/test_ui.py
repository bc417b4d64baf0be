"""`tokenmill ui`: the MLflow UI for the configured store, bound to loopback, showing tokenmill's experiments
as model development (not MLflow 3's GenAI overview)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import mlflow
import pytest
from servers import free_port

from orchestration.runtime import tracking
from repo_paths import REPO

pytestmark = pytest.mark.slow


def _external_ip() -> str | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))  # no packet is sent: this only picks the outgoing interface
            ip = s.getsockname()[0]
        except OSError:
            return None
    return None if ip.startswith("127.") else ip


def test_ui_serves_the_store_on_loopback_only(tmp_path, monkeypatch):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    tracking.setup("tokenmill-ui-test")  # as a pipeline or training job creates its experiment
    mlflow.set_tracking_uri(None)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"} | {"MLFLOW_TRACKING_URI": uri}
    proc = subprocess.Popen([sys.executable, "-m", "orchestration.cli", "ui", "--port", str(port)], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    try:
        body = None
        for _ in range(120):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/2.0/mlflow/experiments/search?max_results=10",
                                            timeout=2) as r:
                    body = json.loads(r.read())
                break
            except OSError:
                time.sleep(0.5)
        assert body is not None, "the UI did not answer on 127.0.0.1"
        (exp,) = [e for e in body["experiments"] if e["name"] == "tokenmill-ui-test"]
        tags = {t["key"]: t["value"] for t in exp.get("tags", [])}
        assert tags["mlflow.experimentKind"] == "custom_model_development"
        ip = _external_ip()
        if ip:  # bound to loopback: the machine's own external address is refused
            with pytest.raises(OSError):
                socket.create_connection((ip, port), timeout=2).close()
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
