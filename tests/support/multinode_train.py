"""Training jobs on a simulated 3-node Ray cluster (ray.cluster_utils.Cluster: a head without CPUs, two nodes of
2 CPUs): 4 workers as a 2 x 2 HSDP mesh, whose rows Ray Train places one per node, stopped after step 10 and
resumed as a 1 x 4 mesh (FSDP over all) to step 20; and the same job on the flat 1 x 4 mesh throughout.

    python tests/support/multinode_train.py OUT.json WORKDIR MANIFEST TOKENIZER

Writes {"hsdp": {step: loss}, "flat": {step: loss}, "lines": [what the jobs printed]}. A separate process, so the
test session's own local Ray is left alone.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from repo_paths import REPO

sys.path.insert(0, str(REPO))

STEPS, STOP = 20, 10


def main(out: Path, workdir: Path, manifest: str, tokenizer: str) -> None:
    import mlflow
    import ray
    from ray.cluster_utils import Cluster

    from orchestration.config.train import train_config_from_dict
    from orchestration.train.job import run_train
    from train_fixture import train_job

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    for _ in range(2):
        cluster.add_node(num_cpus=2)
    cluster.wait_for_nodes()
    os.environ["RAY_ADDRESS"] = cluster.address
    lines: list[str] = []
    shards = {"manifest": manifest, "tokenizer": tokenizer}
    try:
        def job(name: str, mesh: dict, **train):
            raw = train_job(name, shards, STEPS, ray={"num_workers": 4, "cpus_per_worker": 1, "mesh": mesh},
                            train={"log_every": 1, **train}, checkpoint={"every": STOP})
            return run_train(train_config_from_dict(raw, REPO / "configs" / "train"), workdir / name, echo=lines.append)

        first = job("hsdp", {"replicate": 2, "shard": 2}, stop_after=STOP)
        resumed = job("hsdp", {"replicate": 1, "shard": 4})
        flat = job("flat", {})
        assert first["run_id"] == resumed["run_id"]

        def losses(run_id: str) -> dict[int, float]:
            got: dict[int, float] = {}
            for m in sorted(mlflow.MlflowClient().get_metric_history(run_id, "loss"), key=lambda m: m.timestamp):
                got[m.step] = m.value
            return got

        out.write_text(json.dumps({"hsdp": losses(resumed["run_id"]), "flat": losses(flat["run_id"]),
                                   "nodes": sum(n["Alive"] for n in ray.nodes()), "lines": lines}))
    finally:
        ray.shutdown()
        cluster.shutdown()


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).parent))
    main(Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], sys.argv[4])
