"""The whole corpus chain on a real local Ray with a real SQLite MLflow store, on real data."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import mlflow
import pyarrow.parquet as pq
import pytest
from conftest import stage_table, using_store

from orchestration.corpus.pipeline import run_pipeline
from orchestration.config.pipeline import load_pipeline_config
from orchestration.runtime.summary import format_table
from orchestration.runtime.tracking import OUTPUT_DIGEST_TAG, producer_of
from pipelines.manifest import load_manifest, mlflow_digest, verify_files
from pipelines.readers import read_file
from pipelines.records import REASON, load_metadata
from test_readers import flip_record
from repo_paths import REPO, DOLMA_CRAWL

pytestmark = pytest.mark.slow
STAGES = ["ingest", "extract", "filter", "exact_dedup", "minhash"]


def _malformed_jsonl(path: Path) -> dict[str, int]:
    """Good lines from a real crawl file, and bad lines of each kind between them."""
    good = []
    with gzip.open(REPO.parent / "shared" / "corpora" / DOLMA_CRAWL, "rt") as f:
        for _ in range(12):
            good.append(f.readline().rstrip("\n"))
    bad = [b'{"text": "unterminated', b'{"id": "x", "no_text": 1}', b'{"text": 42}', b'{"text": "caf\xe9 latin-1"}']
    with open(path, "wb") as f:
        for i, line in enumerate(good):
            f.write(line.encode() + b"\n")
            if i < len(bad):
                f.write(bad[i] + b"\n")
        for text in near_pair():
            f.write(json.dumps({"text": text}).encode() + b"\n")
    return {"good": len(good) + 2, "bad": len(bad)}


def near_pair() -> list[str]:
    """Two documents that differ in one word: Gutenberg prose (paragraphs unwrapped into lines, as on the web)."""
    book = (REPO.parent / "shared" / "corpora" / "gutenberg" / "pg1661.txt").read_text(encoding="utf-8")
    paragraphs = [" ".join(p.split()) for p in book[20_000:40_000].split("\n\n")[1:-1]]
    text = "\n".join(p for p in paragraphs if len(p) > 200)
    return [text, "Indeed, " + text]


def _damaged_warc(corpora: Path, path: Path) -> int:
    """A real WARC with 16 bytes flipped in its first HTML response record; returns that record's index."""
    src = corpora / "dolma_fixtures" / "sample-0001.warc.gz"
    first = next(load_metadata(m)["record"] for cols in read_file(str(src), "x", "warc", "x")
                 for m, r in zip(cols["metadata"], cols[REASON]) if r == "")
    path.write_bytes(flip_record(src.read_bytes(), first))
    return first


def _config(tmp_path: Path, corpora: Path, langid_model: Path, extra: list[str] = ()):
    bad = tmp_path / "bad" / "malformed.jsonl"
    bad.parent.mkdir()
    _malformed_jsonl(bad)
    _damaged_warc(corpora, tmp_path / "bad" / "damaged.warc.gz")
    overrides = [
        f'inputs=[{{name: crawl, format: jsonl, paths: ["{corpora / DOLMA_CRAWL}"]}},'
        f' {{name: warc, format: warc, paths: ["{corpora}/dolma_fixtures/*.warc.gz"]}},'
        f' {{name: bad, format: jsonl, paths: ["{bad}"]}},'
        f' {{name: damaged, format: warc, paths: ["{bad.parent}/damaged.warc.gz"]}}]',
        f"filter.language.model_path={langid_model}",
        "filter.language.languages=[eng]",
        "filter.language.min_score=0.3",
        "mlflow.experiment=integration",
        "quality.enabled=false",  # quality and tokenization are covered by test_tokenize_ray
        "tokenizer.enabled=false",
        "tokenize.enabled=false",
        *extra,
    ]
    return load_pipeline_config(REPO / "configs" / "quickstart.yaml", overrides)


@pytest.fixture(scope="module")
def pipeline_run(tmp_path_factory, corpora, ray_local, langid_model):

    tmp = tmp_path_factory.mktemp("chain")
    with using_store(tmp) as uri:
        summary = run_pipeline(_config(tmp, corpora, langid_model), tmp / "work")
        yield summary, tmp / "work", uri


def test_accounting_holds_and_bad_lines_are_quarantined(pipeline_run):
    summary, workdir, _ = pipeline_run
    assert [s["stage"] for s in summary["stages"]] == STAGES
    for s in summary["stages"]:
        assert s["docs_in"] == s["kept"] + sum(s["dropped"].values()) + sum(s["quarantined"].values())
    ingest = summary["stages"][0]
    # crawl docs + WARC HTML responses + good + bad lines + the damaged WARC's (15 responses: 14 read, one span row)
    assert ingest["docs_in"] == 697 + 37 + 14 + 4 + 15  # 14 good lines: 12 copies of crawl lines and a near pair
    assert ingest["quarantined"] == {"quarantine:bad_json": 1, "quarantine:corrupt_stream": 1,
                                     "quarantine:invalid_utf8": 1, "quarantine:missing_text": 1,
                                     "quarantine:text_not_string": 1}
    corrupt = ingest["corrupt"]  # the lost record is counted as such, beside the span's one row
    assert (corrupt["spans"], corrupt["records_lost"], corrupt["spans_uncounted"]) == (1, 1, 0)
    assert "records lost to corruption: 1 in 1 damaged spans" in format_table(summary)
    trimmed = summary["stages"][2]["trimmed"]  # what C4's line filter cut out of kept documents, by reason
    assert trimmed["c4.bytes"] > 0 and trimmed["c4.lines"] == sum(n for k, n in trimmed.items() if ".lines." in k)
    assert "filter: text cut from kept documents:" in format_table(summary)
    # each stage consumes exactly what the previous one kept
    for prev, cur in zip(summary["stages"], summary["stages"][1:]):
        assert cur["docs_in"] == prev["kept"]
    assert json.loads((workdir / "summary.json").read_text())["stages"] == summary["stages"]


def test_outputs_verify_and_load_with_datasets(pipeline_run):
    import datasets

    summary, workdir, _ = pipeline_run
    for s in summary["stages"]:
        manifest = load_manifest(Path(s["manifest"]))
        verify_files(manifest, workdir)  # file paths are relative to the workdir
        assert manifest["digest"] == s["output_digest"]
    files = [str(workdir / f) for f in summary["stages"][-1]["kept_files"]]
    ds = datasets.load_dataset("parquet", data_files=files, split="train")
    assert len(ds) == summary["stages"][-1]["kept"]
    assert set(ds.column_names) == {"id", "text", "source", "url", "metadata"}
    dropped = stage_table(summary["stages"][0], "dropped")
    reasons = set(dropped.column("reason").to_pylist())
    assert {"quarantine:bad_json", "quarantine:missing_text"} <= reasons


def test_mlflow_run_tree_params_metrics_and_digest_chain(pipeline_run):
    summary, _, uri = pipeline_run
    client = mlflow.MlflowClient(uri)
    parent = client.get_run(summary["mlflow_run_id"])
    exp = parent.info.experiment_id
    children = client.search_runs([exp], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    by_stage = {r.data.tags["tokenmill.stage"]: r for r in children}
    assert sorted(by_stage) == sorted(STAGES)
    for i, stage in enumerate(STAGES):
        run = by_stage[stage]
        assert run.info.status == "FINISHED"
        s = summary["stages"][i]
        assert run.data.metrics["docs_in"] == s["docs_in"] and run.data.metrics["docs_kept"] == s["kept"]
        assert run.data.metrics["docs_per_cpu_second"] > 0 and run.data.metrics["pass_wall_seconds"] > 0
        if stage == "ingest":
            assert run.data.metrics["records_lost_to_corruption"] == 1 and run.data.metrics["corrupt_spans"] == 1
        if stage == "filter":
            assert run.data.metrics["trimmed.c4.bytes"] == s["trimmed"]["c4.bytes"]
        assert run.data.tags[OUTPUT_DIGEST_TAG] == mlflow_digest(s["output_digest"])
        artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert "manifest.json" in artifacts
        plots = {a.path for a in client.list_artifacts(run.info.run_id, "plots")}
        assert "plots/length_histogram.png" in plots and "plots/reasons.png" in plots
        inputs = run.inputs.dataset_inputs
        assert len(inputs) == 1
        if i > 0:
            # the input digest finds the run that produced it
            digest = inputs[0].dataset.digest
            assert digest == mlflow_digest(summary["stages"][i - 1]["output_digest"])
            producers = producer_of(digest, [exp])
            assert [r.info.run_id for r in producers] == [by_stage[STAGES[i - 1]].info.run_id]
    assert by_stage["filter"].data.params["language.languages"] == '["eng"]'
    assert by_stage["minhash"].data.params["bands"] == "14"
    assert "plots/cluster_sizes.png" in {a.path for a in client.list_artifacts(by_stage["minhash"].info.run_id, "plots")}
    assert "plots/language_scores.png" in {a.path for a in client.list_artifacts(by_stage["filter"].info.run_id, "plots")}


def test_lineage_doc_reports_the_stage_reason_and_surviving_twin(pipeline_run):
    """`tokenmill lineage --doc` (lineage.doc_fate) on real drops: a near-duplicate names the MinHash stage and
    the document it duplicates, which was kept; a filtered one names the filter's reason."""
    from orchestration.lineage.walk import doc_fate, format_fate

    summary, workdir, _ = pipeline_run
    by_stage = {s["stage"]: s for s in summary["stages"]}
    dropped = stage_table(by_stage["minhash"], "dropped").to_pylist()
    near = next(r for r in dropped if r["reason"] == "near_duplicate" and r["id"].startswith("bad/"))
    (fate,) = doc_fate(near["id"], [workdir])["pipelines"]
    assert fate["fate"] == "dropped" and fate["stage"] == "minhash" and fate["reason"] == "near_duplicate"
    twin = fate["metadata"]["duplicate_of"]
    kept_ids = set()
    for f in by_stage["minhash"]["kept_files"]:
        kept_ids |= set(pq.read_table(workdir / f, columns=["id"]).column("id").to_pylist())
    assert twin in kept_ids and twin != near["id"]
    filtered = next(r for r in stage_table(by_stage["filter"], "dropped").to_pylist() if r["reason"].startswith("gopher"))
    (fate,) = doc_fate(filtered["id"], [workdir])["pipelines"]
    assert (fate["stage"], fate["reason"]) == ("filter", filtered["reason"])
    # and the value that failed it: every filter drop (language ID and each heuristic) records value,
    # threshold and the rule in words
    drops = stage_table(by_stage["filter"], "dropped").to_pylist()
    assert {r["reason"].split(":")[0] for r in drops} >= {"language", "gopher_quality"}
    for r in drops:
        meta = json.loads(r["metadata"])
        assert {"filter_value", "filter_threshold", "filter_rule"} <= set(meta), (r["reason"], meta)
        if r["reason"] == "language":
            assert meta["filter_value"] == meta["language_score"] and meta["filter_threshold"] == 0.3
            assert ("min_score" in meta["filter_rule"]) == (meta["language"].startswith("eng")), meta
    assert fate["metadata"]["filter_rule"] in format_fate(doc_fate(filtered["id"], [workdir]))
