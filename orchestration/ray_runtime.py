"""Starting (or joining) Ray for a run."""

from __future__ import annotations

import logging
import os

import ray

import model
import orchestration
import pipelines


def init_ray(num_cpus: int | None = None) -> dict:
    """Join the cluster named by RAY_ADDRESS, else start a local Ray sized to this machine.

    On a cluster the project's packages travel with the job (runtime_env py_modules), so workers run
    the same code as the driver without a shared install.
    """
    if ray.is_initialized():
        return ray.cluster_resources()
    address = os.environ.get("RAY_ADDRESS")
    common = dict(log_to_driver=True, logging_level=logging.WARNING)
    if address:
        ray.init(address=address, runtime_env={"py_modules": [pipelines, orchestration, model]}, **common)
    else:
        ray.init(num_cpus=num_cpus or os.cpu_count(), include_dashboard=False, **common)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    return ray.cluster_resources()
