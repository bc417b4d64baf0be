"""Local Ray means local: with another Ray cluster running on the machine (started by `ray start`, which a
plain ray.init() would join), a run without RAY_ADDRESS starts a Ray of its own with the CPUs it asked for."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from servers import free_port
from repo_paths import REPO

pytestmark = pytest.mark.slow


def test_a_foreign_local_cluster_is_left_alone(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    ray_bin = Path(sys.executable).with_name("ray")
    foreign = subprocess.Popen([str(ray_bin), "start", "--head", "--block", "--num-cpus=1", f"--port={free_port()}",
                                "--include-dashboard=false", "--node-ip-address=127.0.0.1"],
                               env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        time.sleep(8)  # the foreign head is up (its address file is what a plain ray.init() would find)
        assert foreign.poll() is None, "the foreign `ray start --head` did not stay up"
        code = ("from orchestration.runtime.cluster import describe, init_ray; import ray; "
                "r = init_ray(2); print(describe(), int(r['CPU']), len(ray.nodes())); ray.shutdown()")
        out = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr[-2000:]
        assert out.stdout.strip().splitlines()[-1] == "a local Ray of its own 2 1"
    finally:
        os.killpg(foreign.pid, signal.SIGTERM)
        foreign.wait(timeout=60)
