"""Shared fixtures: the real corpora, a real local Ray, a real MLflow store in a temp dir.

The tests by kind: tests/test_*.py are unit tests (no Ray, no MLflow server: `make test-fast` runs them),
tests/integration/ the tests on a real local Ray, Ray clusters, MLflow stores and servers, tests/support/ the
helpers both use (importable by name: this file puts the folder on the path)."""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "support"))

import langid_fixture  # noqa: E402
from repo_paths import CORPORA  # noqa: E402

trained_langid_model = langid_fixture.trained_langid_model  # a session fixture, shared by name


@pytest.fixture(scope="session")
def corpora() -> Path:
    if not CORPORA.is_dir():
        pytest.skip("real corpora not found at ../shared/corpora (relative to the repository)")
    return CORPORA


@pytest.fixture(scope="session")
def ray_local():
    """One real local Ray for the session (2 CPUs, like CI)."""
    import ray

    from orchestration.runtime.cluster import init_ray

    os.environ.pop("RAY_ADDRESS", None)
    init_ray(num_cpus=2)
    yield ray
    ray.shutdown()


@contextlib.contextmanager
def using_store(folder: Path):
    """A SQLite MLflow store in `folder`, as MLFLOW_TRACKING_URI and mlflow's tracking URI while inside (both
    restored after): what a user's shell and a driver see. Yields the URI."""
    import mlflow

    uri = f"sqlite:///{Path(folder) / 'mlflow.db'}"
    old = os.environ.get("MLFLOW_TRACKING_URI")
    os.environ["MLFLOW_TRACKING_URI"] = uri
    mlflow.set_tracking_uri(uri)
    try:
        yield uri
    finally:
        if old is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = old
        mlflow.set_tracking_uri(None)


@pytest.fixture
def mlflow_store(tmp_path) -> str:
    """A fresh SQLite MLflow store for one test."""
    with using_store(tmp_path) as uri:
        yield uri


@pytest.fixture(scope="session")
def langid_model(trained_langid_model) -> Path:
    """A small fastText language-ID model trained on udhr2 (nothing is downloaded)."""
    return trained_langid_model


@pytest.fixture(scope="session")
def quality_model(tmp_path_factory, corpora) -> Path:
    """A fastText quality classifier trained on the dev recipe (reference text vs crawl/spam/4chan)."""
    from pipelines.quality import train_quality_classifier
    from quality_recipe import DEV_RECIPE_TRAIN_CONFIG, dev_recipe_sources

    positives, negatives = dev_recipe_sources(corpora)
    out = tmp_path_factory.mktemp("quality") / "quality.bin"
    return Path(train_quality_classifier(positives, negatives, out, DEV_RECIPE_TRAIN_CONFIG)["model_path"])


def stage_table(stage: dict, kind: str):
    """All of a stage's `kind` ("kept" or "dropped") documents, from its manifest (paths relative to the
    workdir, which holds stages/NAME/manifest.json)."""
    import json

    import pyarrow as pa
    import pyarrow.parquet as pq

    manifest_path = Path(stage["manifest"])
    workdir = manifest_path.parents[2]
    files = [workdir / f["path"] for f in json.loads(manifest_path.read_text())["files"] if f["kind"] == kind]
    if not files:
        return pa.table({"id": pa.array([], pa.string()), "text": pa.array([], pa.string()),
                         "metadata": pa.array([], pa.string()), "reason": pa.array([], pa.string())})
    return pa.concat_tables([pq.read_table(f) for f in sorted(files)])


@pytest.fixture(scope="session")
def user_config(tmp_path_factory) -> Path:
    """The shared runs' config, beside a module of user stages and a blocklist, outside the repository."""
    from pipeline_runs import outside_config

    return outside_config(tmp_path_factory.mktemp("outside"))


@pytest.fixture(scope="session")
def one_node_summary(tmp_path_factory, corpora, langid_model, quality_model, user_config) -> dict:
    """The full pipeline (with two user stages) on the dolma fixtures on one local Ray (1 CPU, small batches, 3
    key partitions): the reference every other run of the same config must match byte for byte."""
    from pipeline_runs import cli, overrides, run

    workdir = tmp_path_factory.mktemp("one-node") / "work"
    extra = ["ray.num_cpus=1", "ray.batch_size=16", "ray.shuffle_partitions=3"]
    return run(cli(workdir, overrides(corpora, langid_model, quality_model, extra), user_config), workdir)[0]


def lineage_chain(tree: dict) -> list[dict]:
    """The runs of a `tokenmill lineage --json` tree along its main line (the tokenizer's and the quality
    classifier's branches left out),
    from the start back to ingest; each must be FINISHED and carry a code version."""
    node, chain = tree["lineage"], []
    while node:
        assert node["code_version"] and node["status"] == "FINISHED", node
        chain.append(node)
        node = next((i["produced_by"] for i in node["inputs"]
                     if "produced_by" in i and i["name"] not in ("tokenizer", "quality_model")), None)
    return chain
