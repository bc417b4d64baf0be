"""benchmarks/gpu_check.py, the GPU readiness check: skipped with its reason where no GPU is present, and its code
paths run on CPU (--dry-run: tiny sizes, gloo, fp32) so that whoever first gets a GPU finds it working."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from repo_paths import REPO

SCRIPT = REPO / "benchmarks" / "gpu_check.py"


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present: the check runs instead of skipping")
def test_without_a_gpu_it_says_why_and_exits_0():
    out = subprocess.run([sys.executable, str(SCRIPT)], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "skipped: no CUDA device here" in out.stdout, (out.stdout, out.stderr)


def test_the_dry_run_goes_through_every_part_and_writes_its_table(tmp_path):
    out = subprocess.run([sys.executable, str(SCRIPT), "--dry-run", "--json", str(tmp_path / "r.json")], cwd=REPO,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads((tmp_path / "r.json").read_text())
    assert [r["ac"] for r in result["throughput"]] == ["none", "full"]
    assert all(r["tokens_per_s"] > 0 for r in result["throughput"])
    assert [r["ac"] for r in result["memory"]] == ["none", "selective", "full"]
    assert all(0.95 < r["ratio"] < 1.05 for r in result["memory"])  # the plan against the tensors measured
    curve = result["loss_curve"]
    assert curve["ok"] and curve["device_losses"] == curve["cpu_fp32_losses"]  # both on CPU in fp32: equal
    assert curve["device_losses"][-1] < curve["device_losses"][0]
    assert "| tiny | 256 x 4 | full |" in out.stdout
