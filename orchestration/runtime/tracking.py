"""MLflow bindings: the pipeline's parent run, a child run per stage, inputs/outputs chained by digest."""

from __future__ import annotations

import json
import os
import subprocess
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import mlflow
from mlflow.data.meta_dataset import MetaDataset
from mlflow.data.sources import LocalArtifactDatasetSource
from mlflow.exceptions import MlflowException

from orchestration.runtime import console
from pipelines import storage
from pipelines.manifest import mlflow_digest

WORKDIR_TAG = "tokenmill.workdir"  # on every run a process records for a workdir (parent, stages, training)
GIVEN_TAG = "tokenmill.given"  # "true" on a run that names an output it was given (a tokenizer's model_path)
OUTPUT_DIGEST_TAG = "tokenmill.output_digest"  # 32 hex chars, equal to the next run's input digest
OUTPUT_SHA256_TAG = "tokenmill.output_sha256"
KIND_TAG = "tokenmill.kind"


def code_version() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
                             text=True, timeout=10)
        if out.returncode == 0:
            dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                                   cwd=Path(__file__).parent, capture_output=True, text=True, timeout=10).stdout
            return out.stdout.strip() + ("-dirty" if dirty.strip() else "")
    except (OSError, subprocess.SubprocessError):
        pass
    from importlib.metadata import PackageNotFoundError, version

    try:
        return "tokenmill " + version("tokenmill")
    except PackageNotFoundError:
        return "unknown"


CODE_VERSION_TAG = "tokenmill.code_version"


def setup_uri() -> str:
    """The store named by MLFLOW_TRACKING_URI, else MLflow's default; for commands that only read. A server
    that cannot be reached is a MachineFault within STORE_CONNECT_TIMEOUT_S; a new SQLite store is created
    (its schema migrated) by one process at a time."""
    if os.environ.get("MLFLOW_TRACKING_URI"):
        mlflow.set_tracking_uri(os.environ["MLFLOW_TRACKING_URI"])
    console.quiet_libraries()  # MLflow's INFO lines (store set-up, new experiment) to the log file
    # no "Downloading artifacts" progress bars in a run's output (logging the trained model drew three)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    uri = mlflow.get_tracking_uri()
    reach_store(uri)
    with _store_lock(uri):
        mlflow.MlflowClient(uri).search_experiments(max_results=1)  # opens it (a new SQLite file: migrated)
    return uri


# How long a command waits to connect to an MLflow server (or its database) before it says it cannot: MLflow's
# own client retries a refused connection 7 times with exponential back-off (MLFLOW_HTTP_REQUEST_MAX_RETRIES,
# ..._BACKOFF_FACTOR), which kept an unreachable store silent for 4 min 16 s. Once a run has started, a server
# that goes away is retried by MLflow's client that long before the command stops (exit 2, re-run to resume).
STORE_CONNECT_TIMEOUT_S = 5.0
_PORTS = {"http": 80, "https": 443, "postgresql": 5432, "mysql": 3306, "mssql": 1433}


def shown_uri(uri: str) -> str:
    """A store URI with any password left out (for lines and errors)."""
    import urllib.parse

    parts = urllib.parse.urlsplit(uri)
    if parts.password is None:
        return uri
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


def reach_store(uri: str, timeout: float = STORE_CONNECT_TIMEOUT_S) -> None:
    """Connect to the host and port of a server store (http, https, a database) within `timeout` seconds, or
    raise MachineFault naming the URI. File and SQLite stores pass (their folder is checked when written)."""
    import socket
    import urllib.parse

    from pipelines.errors import MachineFault

    parts = urllib.parse.urlsplit(uri)
    port = _PORTS.get(parts.scheme.split("+")[0])
    if port is None or not parts.hostname:
        return
    try:
        port = parts.port or port
        with socket.create_connection((parts.hostname, port), timeout=timeout):
            pass
    except (OSError, ValueError) as exc:
        why = f"no answer within {timeout:g} s" if isinstance(exc, TimeoutError) else \
            (getattr(exc, "strerror", None) or str(exc))
        raise MachineFault(f"the MLflow store {shown_uri(uri)} cannot be reached ({parts.hostname}:{port}: {why}): "
                           "start it or set MLFLOW_TRACKING_URI to one you can reach, then re-run") from None


@contextmanager
def _store_lock(uri: str) -> Iterator[None]:
    """For a SQLite store, a lock beside its file while a process opens it or creates an experiment: two
    commands that started at once on a new store both ran MLflow's schema migration, and the second failed
    ("duplicate column name: step"). Other stores serialize this themselves."""
    db = Path(uri[len("sqlite:///"):]) if uri.startswith("sqlite:///") else None
    if db is None or not db.parent.is_dir():  # a missing folder: MLflow names it itself
        yield
        return
    import fcntl

    with open(db.parent / f".{db.name}.tokenmill-init.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


EXPERIMENT_KIND_TAG = "mlflow.experimentKind"


def setup(experiment: str) -> str:
    """Use MLFLOW_TRACKING_URI if set, else MLflow's own default (sqlite:///mlflow.db in the cwd). The
    experiment is marked as model development, so that MLflow 3's UI opens it on its runs, not on the GenAI
    overview it shows an experiment of unknown kind (a kind someone set is left alone)."""
    uri = setup_uri()
    with _store_lock(uri):  # two runs creating the same new experiment at once
        exp = mlflow.set_experiment(experiment)
    if EXPERIMENT_KIND_TAG not in exp.tags:
        mlflow.MlflowClient().set_experiment_tag(exp.experiment_id, EXPERIMENT_KIND_TAG, "custom_model_development")
    return mlflow.get_tracking_uri()


def tokenmill_experiments() -> list[tuple[str, str]]:
    """(name, id) of every experiment of the store that holds a tokenmill run."""
    client = mlflow.MlflowClient()
    out = []
    for exp in client.search_experiments():
        if client.search_runs([exp.experiment_id], filter_string=f"tags.`{KIND_TAG}` LIKE '%'", max_results=1):
            out.append((exp.name, exp.experiment_id))
    return out


def flatten(prefix: str, value: Any, out: dict[str, str]) -> dict[str, str]:
    if isinstance(value, dict):
        for k, v in value.items():
            flatten(f"{prefix}.{k}" if prefix else str(k), v, out)
    else:
        text = json.dumps(value) if not isinstance(value, str) else value
        out[prefix] = text[:6000]  # MLflow's param value limit
    return out


def log_params(params: dict) -> None:
    flat = flatten("", params, {})
    items = list(flat.items())
    for i in range(0, len(items), 100):  # MLflow's log_batch limit on params
        mlflow.log_params(dict(items[i : i + 100]))


ENDED_TAG = "tokenmill.ended"  # why a run did not finish (killed by a signal, by a dead process, a stopped loss)


@contextmanager
def run(**start_run_kwargs) -> Iterator[mlflow.ActiveRun]:
    """mlflow.start_run, ended KILLED (not FAILED) when a signal stops the command (stopping.Interrupted, or
    Ctrl-C), with the signal in its ENDED_TAG. A top-level run also gets the tags of `tagged` blocks around it."""
    if not start_run_kwargs.get("nested"):
        tags = {**json.loads(os.environ.get(RUN_TAGS_ENV) or "{}"), **(_TAGGED[-1] if _TAGGED else {})}
        if tags:
            start_run_kwargs["tags"] = {**tags, **(start_run_kwargs.get("tags") or {})}
    stopped = None
    try:
        with mlflow.start_run(**start_run_kwargs) as active:
            try:
                yield active
            except KeyboardInterrupt as exc:
                stopped = exc
                try:
                    mlflow.set_tag(ENDED_TAG, f"killed: stopped by {getattr(exc, 'name', 'SIGINT')}")
                    mlflow.end_run("KILLED")
                except Exception:  # noqa: BLE001  (a store gone too: the next run marks it, close_dead_runs)
                    pass
                raise
    except Exception:
        if stopped is not None:  # the store failed to end the run: the stop is still what the user is told
            raise stopped from None
        raise


_TAGGED: list[dict[str, str]] = []
# JSON tags for every top-level run of this process, as `tagged` gives them in-process: an ablation's training
# runs started as processes of their own (orchestration/ablation/run.py) nest under the ablation's run this way
RUN_TAGS_ENV = "TOKENMILL_RUN_TAGS"


@contextmanager
def tagged(tags: dict[str, str]) -> Iterator[None]:
    """Every top-level run this process starts inside the block carries `tags` (an ablation's pipelines and
    training jobs: `mlflow.parentRunId` nests them under the ablation's run in the UI)."""
    _TAGGED.append({**(_TAGGED[-1] if _TAGGED else {}), **tags})
    try:
        yield
    finally:
        _TAGGED.pop()


@contextmanager
def parent_run(name: str, config: dict, tags: dict[str, str]) -> Iterator[mlflow.ActiveRun]:
    with run(run_name=f"pipeline:{name}",
             tags={KIND_TAG: "pipeline", CODE_VERSION_TAG: code_version(), **tags}) as run_:
        log_params(config)
        mlflow.log_dict(config, "config.json")
        yield run_


def close_dead_runs(workdir: Path, stale: dict | None, echo=print) -> list[str]:
    """Mark KILLED the runs of this workdir still RUNNING: the caller holds the workdir's lock, so the
    process that opened them is gone. Returns their ids."""
    client = mlflow.MlflowClient()
    runs = mlflow.search_runs(search_all_experiments=True, output_format="list",
                              filter_string=f"tags.`{WORKDIR_TAG}` = '{workdir}' and attributes.status = 'RUNNING'")
    from orchestration.runtime.workdir_lock import describe

    who = describe(stale) if stale else "an earlier process"
    for r in runs:
        client.set_tag(r.info.run_id, ENDED_TAG, f"killed: {who} died before finishing it")
        client.set_terminated(r.info.run_id, "KILLED")
    if runs:
        echo(f"tokenmill: marked {len(runs)} MLflow run(s) left RUNNING by {who} as KILLED: "
             + ", ".join(r.info.run_id for r in runs))
    return [r.info.run_id for r in runs]


@contextmanager
def stage_run(stage: str, params: dict) -> Iterator[mlflow.ActiveRun]:
    parent = mlflow.active_run().data.tags if mlflow.active_run() else {}
    tags = {KIND_TAG: "stage", "tokenmill.stage": stage,
            **{k: parent[k] for k in (WORKDIR_TAG, CODE_VERSION_TAG) if k in parent}}
    with run(run_name=stage, nested=True, tags=tags) as run_:
        log_params(params)
        yield run_


def log_input_manifest(name: str, manifest_path, digest: str, context: str = "stage_input",
                       tags: dict[str, str] | None = None) -> None:
    ds = MetaDataset(
        source=LocalArtifactDatasetSource(str(storage.path(manifest_path).resolve())),
        name=name,
        digest=mlflow_digest(digest),
    )
    _log_input(ds, context, tags)


# What a store says when two processes register the same dataset at once (SQLite, PostgreSQL, MySQL)
_DUPLICATE_ROW = ("UNIQUE constraint failed", "duplicate key value", "Duplicate entry")


def _log_input(ds: MetaDataset, context: str, tags: dict[str, str] | None = None) -> None:
    """mlflow.log_input, once more when another process registered the same dataset between MLflow's lookup
    and its insert: two training runs side by side log the same eval files and shards, and CI's run of the
    ablation test lost one of them to "UNIQUE constraint failed: datasets.experiment_id, datasets.name,
    datasets.digest". The retry finds the row and only links it to this run (MLflow rolled the first try
    back)."""
    import time

    for attempt in range(5):
        try:
            mlflow.log_input(ds, context=context, tags=tags)
            return
        except MlflowException as e:
            if attempt == 4 or not any(m in str(e) for m in _DUPLICATE_ROW):
                raise
            time.sleep(0.05 * (attempt + 1))


def log_raw_input(name: str, source: str, digest: str) -> None:
    """Raw files are recorded by the digest of their list (path, bytes, sha256), logged beside it."""
    ds = MetaDataset(source=LocalArtifactDatasetSource(source), name=name, digest=mlflow_digest(digest))
    _log_input(ds, "raw_input")


def log_artifact(path, artifact_path: str | None = None) -> None:
    """mlflow.log_artifact(s) for a local file or directory, or one on object storage (through the cache)."""
    local = storage.local_copy(path)
    if local.is_dir():
        mlflow.log_artifacts(str(local), artifact_path)
    else:
        mlflow.log_artifact(str(local), artifact_path)


def log_output_manifest(manifest_path, digest: str) -> None:
    log_artifact(manifest_path)
    mlflow.set_tags({OUTPUT_DIGEST_TAG: mlflow_digest(digest), OUTPUT_SHA256_TAG: digest})


def producer_of(digest: str, experiment_ids: list[str] | None = None) -> list[Any]:
    """Runs whose output is the dataset with this digest (what a lineage query walks back through), a run that
    made it before one that was given it (an ablation's variants name the baseline's tokenizer: the baseline's
    tokenizer run trained it, on the baseline's documents)."""
    runs = mlflow.search_runs(  # finished runs only: a killed run's tag names outputs it may not have written
        experiment_ids=experiment_ids,
        filter_string=f"tags.`{OUTPUT_DIGEST_TAG}` = '{mlflow_digest(digest)}' and attributes.status = 'FINISHED'",
        output_format="list",
        search_all_experiments=experiment_ids is None,
    )
    return sorted(runs, key=lambda r: r.data.tags.get(GIVEN_TAG) == "true")
