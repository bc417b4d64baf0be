"""Run the pipeline on a simulated 3-node Ray cluster (ray.cluster_utils.Cluster: one CPU per node) and
write its summary; with --remove-node, a worker node is removed while the MinHash components run.

    python tests/support/multinode_run.py OUT.json WORKDIR [--remove-node] -- CONFIG OVERRIDES...

A separate process, so the test session's own local Ray is left alone.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from repo_paths import REPO

sys.path.insert(0, str(REPO))


def main(argv: list[str]) -> None:
    import ray
    from ray.cluster_utils import Cluster

    sep = argv.index("--")
    out, workdir, flags = Path(argv[0]), Path(argv[1]), argv[2:sep]
    config, overrides = argv[sep + 1], argv[sep + 2:]
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    workers = [cluster.add_node(num_cpus=1) for _ in range(2)]
    cluster.wait_for_nodes()
    os.environ["RAY_ADDRESS"] = cluster.address
    events: dict = {"removed": None}
    try:
        from orchestration.corpus import components
        from orchestration.corpus.pipeline import run_pipeline
        from orchestration.config.pipeline import load_pipeline_config

        if "--remove-node" in flags:
            wait_round = components._wait_round

            def remove_then_wait(refs):  # after the first components round is submitted
                if events["removed"] is None:
                    victim = workers[0]
                    events["removed"] = victim.node_id
                    events["alive_before"] = sum(n["Alive"] for n in ray.nodes())
                    cluster.remove_node(victim, allow_graceful=False)
                    # go on only once the cluster knows (its health check): the next rounds cannot use the
                    # node, and what it held (bucket and round outputs) must be rebuilt from lineage
                    deadline = time.time() + 120
                    while time.time() < deadline and any(n["NodeID"] == victim.node_id and n["Alive"]
                                                         for n in ray.nodes()):
                        time.sleep(0.5)
                    events["dead_after_s"] = round(120 - (deadline - time.time()), 1)
                return wait_round(refs)

            components._wait_round = remove_then_wait
        summary = run_pipeline(load_pipeline_config(config, overrides), workdir, echo=print)
        events["nodes"] = len({n["NodeID"] for n in ray.nodes()})
        events["alive_after"] = sum(n["Alive"] for n in ray.nodes())
        out.write_text(json.dumps({"summary": summary, "events": events}))
    finally:
        ray.shutdown()
        cluster.shutdown()


if __name__ == "__main__":
    main(sys.argv[1:])
