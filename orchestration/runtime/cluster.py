"""Starting (or joining) Ray for a run."""

from __future__ import annotations

import json
import logging
import os
import signal
import threading
from contextlib import contextmanager
from pathlib import Path

import ray

import model
import orchestration
import pipelines
from orchestration.runtime import console, stopping
from pipelines.errors import UsageError


_SHIPPED: set[str] = set()  # the user modules the Ray of this process was started with
_ALSO: set[str] = set()  # ... and those it must start with, whoever starts it (also_ship)


def also_ship(modules) -> None:
    """User modules the Ray this process starts later must ship, whichever run starts it: an ablation's first
    pipeline starts the Ray every variant's pipeline then uses, so it ships the user stages of them all."""
    _ALSO.update(modules)


def init_ray(num_cpus: int | None = None, user_modules: list[str] = ()) -> dict:
    """Join the cluster named by RAY_ADDRESS, else start a local Ray of our own sized to this machine
    (address="local": even when another Ray runs on the machine, which a plain ray.init() would join, and
    then refuse num_cpus).

    On a cluster the project's packages travel with the job (runtime_env py_modules), so workers run
    the same code as the driver without a shared install. `user_modules` (the files or package folders of a
    pipeline's user stages) travel the same way, to a cluster and to the local Ray alike (whose workers do
    not see the folders the driver added to its own Python path).
    """
    user_modules = sorted({*user_modules, *_ALSO})
    if ray.is_initialized():
        missing = sorted(set(user_modules) - _SHIPPED)
        if missing:  # a runtime env is fixed when Ray starts: its workers would fail to import them
            raise UsageError(f"Ray is already running in this process without the user stage module(s) "
                             f"{', '.join(missing)}: start it with every module (init_ray(..., user_modules))")
        return ray.cluster_resources()
    _SHIPPED.clear()
    _SHIPPED.update(user_modules)
    address = os.environ.get("RAY_ADDRESS")
    # ray library logs in workers at ERROR: the libraries' warnings belong in the logs (Ray Train's placement-group
    # cleaner warned every second that the state API, which needs the dashboard, is unavailable; training jobs now
    # leave the cleaner out where no dashboard runs: orchestration/train/job.py)
    # the workers' output reaches this terminal only with --verbose (orchestration/runtime/console.py): else it stays
    # in Ray's session logs, which the run copies into its log folder
    common = dict(log_to_driver=console.worker_log_to_driver(), logging_level=logging.WARNING,
                  logging_config=ray.LoggingConfig(log_level="ERROR"))
    if address:
        ray.init(address=address, runtime_env=_code_runtime_env(list(user_modules)), **common)
    else:
        env = {"py_modules": list(user_modules)} if user_modules else None
        with _children_ignore_sigint():
            ray.init(address="local", num_cpus=num_cpus or os.cpu_count(), include_dashboard=False, runtime_env=env,
                     **common)
        console.keep_ray_logs(ray._private.worker._global_node.get_logs_dir_path())
    console.quiet_libraries()
    stopping.install()  # ray.init put its own SIGTERM handler (exit 15, a C++ stack dump) in place of ours
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    return ray.cluster_resources()


@contextmanager
def _children_ignore_sigint():
    """Start the local Ray's processes with SIGINT ignored (a disposition they inherit): Ctrl-C signals the
    terminal's whole process group, which holds the raylet and the GCS, and a raylet that dies ends the driver
    at once (exit 1, not a word) before tokenmill can stop the run cleanly (orchestration/runtime/stopping.py)."""
    main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN) if main else None
    try:
        yield
    finally:
        if main:
            signal.signal(signal.SIGINT, previous)


def _code_runtime_env(user_modules: list[str]) -> dict | None:
    """How the project's code reaches the cluster's workers. Inside `ray job submit` whose runtime env ships
    it (a working_dir or py_modules, e.g. `--working-dir .` from a checkout) the job's own env applies and
    nothing is added; otherwise the three packages go as py_modules (by path: Ray deep-copies the env to
    merge it with a job's, and module objects cannot be copied). The user stages' modules go as py_modules too,
    merged by Ray with a job's working_dir; a job that ships py_modules of its own must list them there (Ray
    refuses to merge two py_modules lists)."""
    job = os.environ.get("RAY_JOB_CONFIG_JSON_ENV_VAR")  # set by Ray for the driver of a submitted job
    try:
        job_env = (json.loads(job).get("runtime_env") or {}) if job else {}
    except ValueError:
        job_env = {}
    if job_env.get("py_modules"):
        return None
    if job_env.get("working_dir"):
        return {"py_modules": user_modules} if user_modules else None
    return {"py_modules": [str(Path(m.__file__).parent) for m in (pipelines, orchestration, model)] + user_modules}


def describe() -> str:
    """Where this run's Ray is, for the line a run prints when it starts."""
    address = os.environ.get("RAY_ADDRESS")
    return f"the Ray cluster at RAY_ADDRESS={address}" if address else "a local Ray of its own"
