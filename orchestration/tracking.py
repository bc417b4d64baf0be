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

from orchestration import console
from pipelines import storage
from pipelines.manifest import mlflow_digest

WORKDIR_TAG = "tokenmill.workdir"  # on every run a process records for a workdir (parent, stages, training)
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
    """The store named by MLFLOW_TRACKING_URI, else MLflow's default; for commands that only read."""
    if os.environ.get("MLFLOW_TRACKING_URI"):
        mlflow.set_tracking_uri(os.environ["MLFLOW_TRACKING_URI"])
    console.quiet_libraries()  # MLflow's INFO lines (store set-up, new experiment) to the log file
    return mlflow.get_tracking_uri()


EXPERIMENT_KIND_TAG = "mlflow.experimentKind"


def setup(experiment: str) -> str:
    """Use MLFLOW_TRACKING_URI if set, else MLflow's own default (sqlite:///mlflow.db in the cwd). The
    experiment is marked as model development, so that MLflow 3's UI opens it on its runs, not on the GenAI
    overview it shows an experiment of unknown kind (a kind someone set is left alone)."""
    setup_uri()
    exp = mlflow.set_experiment(experiment)
    if EXPERIMENT_KIND_TAG not in exp.tags:
        mlflow.MlflowClient().set_experiment_tag(exp.experiment_id, EXPERIMENT_KIND_TAG, "custom_model_development")
    return mlflow.get_tracking_uri()


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


@contextmanager
def parent_run(name: str, config: dict, tags: dict[str, str]) -> Iterator[mlflow.ActiveRun]:
    with mlflow.start_run(run_name=f"pipeline:{name}",
                          tags={KIND_TAG: "pipeline", CODE_VERSION_TAG: code_version(), **tags}) as run:
        log_params(config)
        mlflow.log_dict(config, "config.json")
        yield run


def close_dead_runs(workdir: Path, stale: dict | None, echo=print) -> list[str]:
    """Mark KILLED the runs of this workdir still RUNNING: the caller holds the workdir's lock, so the
    process that opened them is gone. Returns their ids."""
    client = mlflow.MlflowClient()
    runs = mlflow.search_runs(search_all_experiments=True, output_format="list",
                              filter_string=f"tags.`{WORKDIR_TAG}` = '{workdir}' and attributes.status = 'RUNNING'")
    from orchestration.workdir_lock import describe

    who = describe(stale) if stale else "an earlier process"
    for r in runs:
        client.set_tag(r.info.run_id, "tokenmill.ended", f"killed: {who} died before finishing it")
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
    with mlflow.start_run(run_name=stage, nested=True, tags=tags) as run:
        log_params(params)
        yield run


def log_input_manifest(name: str, manifest_path, digest: str, context: str = "stage_input") -> None:
    ds = MetaDataset(
        source=LocalArtifactDatasetSource(str(storage.path(manifest_path).resolve())),
        name=name,
        digest=mlflow_digest(digest),
    )
    mlflow.log_input(ds, context=context)


def log_raw_input(name: str, source: str, digest: str) -> None:
    """Raw files are recorded by the digest of their list (path, bytes, sha256), logged beside it."""
    ds = MetaDataset(source=LocalArtifactDatasetSource(source), name=name, digest=mlflow_digest(digest))
    mlflow.log_input(ds, context="raw_input")


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
    """Runs whose output is the dataset with this digest (what a lineage query walks back through)."""
    return mlflow.search_runs(  # finished runs only: a killed run's tag names outputs it may not have written
        experiment_ids=experiment_ids,
        filter_string=f"tags.`{OUTPUT_DIGEST_TAG}` = '{mlflow_digest(digest)}' and attributes.status = 'FINISHED'",
        output_format="list",
        search_all_experiments=experiment_ids is None,
    )
