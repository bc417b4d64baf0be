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


def test_decontamination_drops_what_an_evaluation_suite_holds_and_lineage_names_the_item(tmp_path, corpora, ray_local):
    """A crawl sample with three planted documents (an ARC question with its answer inside a page, a COPA premise
    quoted whole, a WikiText paragraph): the decontaminate stage drops exactly those, counts them per evaluation
    set in its MLflow run, tags the pipeline's run with the suite it was checked against, and `--doc` says why."""
    import gzip

    import yaml
    from repo_paths import EVALS

    if not EVALS.is_dir():
        pytest.skip(f"the shared evaluation sets are not at {EVALS}")
    from pipelines.stages.decontaminate import DROPPED_TAG, SUITE_TAG

    with gzip.open(corpora / DOLMA_CRAWL, "rt", encoding="utf-8") as f:
        docs = [json.loads(line) for line in f][:40]
    arc = json.loads((EVALS / "arc_easy.jsonl").read_text().splitlines()[9])
    copa = json.loads((EVALS / "copa.jsonl").read_text().splitlines()[4])
    wiki = (corpora / "wikitext2_test" / "wiki.test.raw").read_text(encoding="utf-8")
    docs[5]["text"] += f"\n\nQuiz time. {arc['query']} {arc['choices'][arc['gold']]}"
    docs[11]["text"] = f"{copa['query']} {copa['choices'][copa['gold']]}"
    docs[30]["text"] = wiki[200_000:203_000]
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "sample.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    (tmp_path / "suite.yaml").write_text(yaml.safe_dump({"name": "decon", "texts": [
        {"name": "wikitext", "path": str(corpora / "wikitext2_test" / "wiki.test.raw"), "format": "text",
         "max_doc_chars": 1000}], "tasks": [
        {"name": "arc_easy", "path": str(EVALS / "arc_easy.jsonl"), "schema": "mc", "max_items": 10},
        {"name": "copa", "path": str(EVALS / "copa.jsonl"), "schema": "mc"}]}))
    with using_store(tmp_path) as uri:
        cfg = load_pipeline_config(REPO / "configs" / "quickstart.yaml", [
            f'inputs=[{{name: crawl, format: jsonl, paths: ["{tmp_path}/in/*.jsonl"]}}]',
            "extract.enabled=false", "filter.enabled=false", "exact_dedup.enabled=false", "minhash.enabled=false",
            "quality.enabled=false", "tokenizer.enabled=false", "tokenize.enabled=false",
            "decontaminate.enabled=true", f"decontaminate.suite={tmp_path / 'suite.yaml'}"])
        summary = run_pipeline(cfg, tmp_path / "work", echo=lambda *_: None)
        stage = summary["stages"][-1]
        assert stage["stage"] == "decontaminate" and stage["dropped"] == {"decontaminated": 3}
        dropped = stage_table(stage, "dropped")
        metas = {i: json.loads(m) for i, m in zip(dropped.column("id").to_pylist(), dropped.column("metadata").to_pylist())}
        assert {m["decontam_match"] for m in metas.values()} == {"arc_easy#9", "copa#4", "wikitext#0"}
        client = mlflow.MlflowClient(uri)
        run = client.get_run(stage["run_id"])
        assert run.data.metrics["matched.arc_easy"] == run.data.metrics["matched.copa"] == 1
        assert run.data.metrics["matched.wikitext"] == 1
        parent = client.get_run(summary["mlflow_run_id"]).data.tags
        assert parent[DROPPED_TAG] == "3" and len(parent[SUITE_TAG]) == 64
        arc_doc = next(i for i, m in metas.items() if m["decontam_match"] == "arc_easy#9")
        text = format_fate(doc_fate(arc_doc, [Path(summary["workdir"])]))
        assert "dropped at stage decontaminate: decontaminated" in text and "with evaluation item arc_easy#9" in text
