"""Quality scoring, tokenizer training and token shards as Ray stages, recorded in MLflow."""

from __future__ import annotations

import json
import math
from pathlib import Path

import mlflow
import pytest
from conftest import stage_table, using_store

from orchestration.lineage.walk import doc_fate, format_fate
from orchestration.corpus.pipeline import run_pipeline
from orchestration.config.pipeline import load_pipeline_config
from orchestration.runtime.tracking import OUTPUT_DIGEST_TAG
from pipelines.manifest import mlflow_digest
from pipelines.quality import QualityScorer
from pipelines.shard_reader import ShardSet
from pipelines.tokenizer import Tokenizer
from repo_paths import REPO, DOLMA_CRAWL

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def chain(tmp_path_factory, corpora, ray_local, quality_model):

    tmp = tmp_path_factory.mktemp("tokens")
    with using_store(tmp) as uri:
        cfg = load_pipeline_config(REPO / "configs" / "quickstart.yaml", [
            f'inputs=[{{name: crawl, format: jsonl, paths: ["{corpora / DOLMA_CRAWL}"]}}]',
            "extract.enabled=false", "filter.enabled=false", "minhash.enabled=false",
            "quality.enabled=true", f"quality.model_path={quality_model}", "quality.threshold=null",
            "quality.keep_fraction=0.5",
            "tokenizer.enabled=true", "tokenizer.vocab_size=4000", "tokenize.enabled=true",
            "tokenize.target_shard_tokens=100000",
        ])
        summary = run_pipeline(cfg, tmp / "work", echo=lambda *_: None)
    yield summary, uri


def _kept(stage: dict):
    return stage_table(stage, "kept")


def test_quality_keeps_the_global_top_fraction_and_ray_scores_equal_plain_python(chain, quality_model):
    summary, _ = chain
    exact, quality = summary["stages"][1], summary["stages"][2]
    assert quality["docs_in"] == exact["kept"] == 662
    assert quality["kept"] == math.ceil(0.5 * 662) and quality["dropped"] == {"quality": 662 - quality["kept"]}
    kept = _kept(quality)
    ray_scores = [json.loads(m)["quality_score"] for m in kept.column("metadata").to_pylist()]
    plain = QualityScorer(str(quality_model)).score(kept.column("text").to_pylist())
    assert ray_scores == [round(float(s), 6) for s in plain]
    dropped = stage_table(quality, "dropped")
    metas = [json.loads(m) for m in dropped.column("metadata").to_pylist()]
    assert max(m["quality_score"] for m in metas) <= min(ray_scores)
    # each dropped document records the cut-off it missed; tokenmill lineage --doc says it
    (cutoff,) = {m["quality_cutoff"] for m in metas}
    assert all(m["quality_score"] < cutoff for m in metas) and min(ray_scores) >= round(cutoff, 6) - 1e-6
    mlflow.set_tracking_uri(chain[1])
    try:
        fate = doc_fate(dropped.column("id")[0].as_py(), [Path(summary["workdir"])])
    finally:
        mlflow.set_tracking_uri(None)
    (where,) = fate["pipelines"]
    assert (where["fate"], where["stage"], where["reason"]) == ("dropped", "quality", "quality")
    assert f"< the cut-off {cutoff:.6f}" in format_fate(fate)


def test_token_shards_verify_and_hold_each_documents_tokens(chain):
    summary, _ = chain
    tokens = summary["tokens"]
    shards = ShardSet(tokens["manifest_path"], tokenizer_path=summary["tokenizer"]["model_path"])
    kept = _kept(summary["stages"][-1])
    assert sorted(shards.document_ids()) == sorted(kept.column("id").to_pylist())
    assert shards.total_tokens == tokens["tokens"] and tokens["shards"] >= 2
    tok = Tokenizer(summary["tokenizer"]["model_path"])
    for doc_id, text in list(zip(kept.column("id").to_pylist(), kept.column("text").to_pylist()))[:50]:
        assert shards.document(doc_id).tolist() == tok.encode(text).tolist()


def test_mlflow_records_quality_tokenizer_and_tokenize_runs(chain):
    summary, uri = chain
    client = mlflow.MlflowClient(uri)
    parent = client.get_run(summary["mlflow_run_id"])
    runs = {r.info.run_name: r for r in client.search_runs(
        [parent.info.experiment_id], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")}
    assert {"quality", "tokenizer", "tokenize"} <= set(runs)
    quality_digest = mlflow_digest(summary["stages"][-1]["output_digest"])
    for name in ("tokenizer", "tokenize"):
        assert quality_digest in [d.dataset.digest for d in runs[name].inputs.dataset_inputs]
    assert runs["tokenizer"].data.tags["tokenmill.tokenizer_sha256"] == summary["tokenizer"]["sha256"]
    assert "tokenizer/tokenizer.model" in {a.path for a in client.list_artifacts(runs["tokenizer"].info.run_id, "tokenizer")}
    tok_run = runs["tokenize"]
    assert tok_run.data.metrics["tokens"] == summary["tokens"]["tokens"] and tok_run.data.metrics["tokens_per_cpu_second"] > 0
    assert tok_run.data.tags[OUTPUT_DIGEST_TAG] == mlflow_digest(summary["tokens"]["digest"])
    assert "plots/tokens_per_document.png" in {a.path for a in client.list_artifacts(tok_run.info.run_id, "plots")}
    assert "plots/quality_scores.png" in {a.path for a in client.list_artifacts(runs["quality"].info.run_id, "plots")}
    manifest = json.loads(Path(summary["tokens"]["manifest_path"]).read_text())
    assert manifest["mlflow_run_id"] == tok_run.info.run_id
