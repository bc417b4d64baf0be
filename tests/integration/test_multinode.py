"""The whole pipeline on a simulated 3-node Ray cluster (one CPU per node) gives the digests of one node,
also when a worker node is removed while the MinHash components run (Ray retries the lost tasks and
rebuilds their outputs from lineage). Its user stages' module, outside the repository, reaches the nodes'
workers through the runtime env."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from pipeline_runs import env, overrides, same_outputs
from repo_paths import REPO

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("remove_node", [False, True], ids=["three-nodes", "node-removed-mid-dedup"])
def test_three_node_cluster_gives_the_one_node_digests(tmp_path, corpora, langid_model, quality_model,
                                                       one_node_summary, user_config, remove_node):
    workdir, out = tmp_path / "work", tmp_path / "out.json"
    over = overrides(corpora, langid_model, quality_model, ["ray.shuffle_partitions=4", "ray.batch_size=64"])
    cmd = [sys.executable, str(REPO / "tests" / "support" / "multinode_run.py"), str(out), str(workdir),
           *(["--remove-node"] if remove_node else []), "--", str(user_config), *over]
    proc = subprocess.run(cmd, cwd=REPO, env=env(workdir), capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    summary, events = result["summary"], result["events"]
    same_outputs(one_node_summary, summary)
    assert summary["global_steps"]["minhash"]["skipped"] is False
    if remove_node:
        assert events["removed"] and events["alive_before"] == 3 and events["alive_after"] == 2
    else:
        assert events["removed"] is None and events["alive_after"] == 3
