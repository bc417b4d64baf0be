"""Exact and MinHash dedup on Ray (keys shuffled, drop lists applied per shard) on real corpora, against in-process references."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pytest
from conftest import stage_table

from orchestration.pipeline import run_pipeline
from orchestration.pipeline_config import load_pipeline_config
from pipelines.minhash import MinHashConfig, near_duplicate_survivors
from pipelines.readers import list_inputs, read_file

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]
DOLMA_CRAWL = "dolma_fixtures/CC-MAIN-20190717121559-20190717143559-00140.jsonl.gz"
ONLY_DEDUP = ["extract.enabled=false", "filter.enabled=false", "tokenizer.enabled=false", "tokenize.enabled=false"]


def _run(tmp_path: Path, inputs: str, overrides: list[str]) -> dict:
    cfg = load_pipeline_config(REPO / "configs" / "quickstart.yaml", [f"inputs={inputs}", *overrides])
    return run_pipeline(cfg, tmp_path / "work", echo=lambda *_: None)


def _dropped(stage: dict) -> pa.Table:
    return stage_table(stage, "dropped")


def _kept_texts(stage: dict) -> dict[str, str]:
    table = stage_table(stage, "kept")
    return dict(zip(table.column("id").to_pylist(), table.column("text").to_pylist()))


def test_exact_dedup_removes_exactly_the_repeated_texts(tmp_path, corpora, ray_local, mlflow_store):
    summary = _run(tmp_path, f'[{{name: crawl, format: jsonl, paths: ["{corpora / DOLMA_CRAWL}"]}}]',
                   [*ONLY_DEDUP, "minhash.enabled=false"])
    ingest, exact = summary["stages"]
    assert ingest["kept"] == 697
    # reference: the first occurrence (file order) of each text survives
    texts = [t for cols in read_file(str(corpora / DOLMA_CRAWL), "x", "jsonl", "crawl") for t in cols["text"]]
    assert len(texts) - len(set(texts)) == 35
    assert exact["dropped"] == {"exact_duplicate": 35} and exact["kept"] == 662
    dropped = _dropped(exact)
    kept = _kept_texts(ingest)
    for doc_id, text, meta in zip(*(dropped.column(c).to_pylist() for c in ("id", "text", "metadata"))):
        survivor = json.loads(meta)["duplicate_of"]
        assert survivor < doc_id and kept[survivor] == text


def test_minhash_stage_on_ray_equals_the_in_process_reference(tmp_path, corpora, ray_local, mlflow_store):
    clough = corpora / "clough_stevenson" / "data"
    summary = _run(tmp_path, f'[{{name: clough, format: text, paths: ["{clough}/*.txt"]}}]',
                   [*ONLY_DEDUP, "exact_dedup.enabled=false"])
    ingest, minhash = summary["stages"]
    ids, texts = [], []
    for path, rel in list_inputs([f"{clough}/*.txt"]):
        for cols in read_file(path, f"clough/{rel}", "text", "clough"):
            good = [i for i, r in enumerate(cols["_reason"]) if not r]  # 17 files are latin-1: quarantined
            ids += [cols["id"][i] for i in good]
            texts += [cols["text"][i] for i in good]
    assert len(ids) == ingest["kept"] and sum(ingest["quarantined"].values()) == 100 - len(ids)
    reference = near_duplicate_survivors(ids, texts, MinHashConfig())
    expected = {i: s for i, s in reference.items() if i != s}
    dropped = _dropped(minhash)
    got = {i: json.loads(m)["duplicate_of"] for i, m in zip(dropped.column("id").to_pylist(),
                                                            dropped.column("metadata").to_pylist())}
    assert got == expected and len(expected) > 0
    assert minhash["dropped"] == {"near_duplicate": len(expected)}
    # no "non" (independently written) answer is ever grouped with a task's original
    non = _answers_of(clough, "non")
    assert non and not [i for i in got if _file_of(i) in non or _file_of(got[i]) in non]


def _file_of(doc_id: str) -> str:
    return doc_id.split("/")[-1].split("#")[0]


def _answers_of(clough: Path, category: str) -> set[str]:
    import csv

    with open(clough / "file_information.csv", newline="", encoding="utf-8", errors="replace") as f:
        return {r["File"] for r in csv.DictReader(f) if r["Category"].strip() == category}
