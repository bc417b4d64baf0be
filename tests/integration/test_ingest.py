"""Ingest on Ray from every input kind: jsonl.zst, parquet, a Hugging Face dataset on disk, WARC."""

from __future__ import annotations

import gzip
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import stage_table
import zstandard

from orchestration.corpus.pipeline import run_pipeline
from orchestration.config.pipeline import load_pipeline_config
from repo_paths import REPO, DOLMA_CRAWL

pytestmark = pytest.mark.slow
INGEST_ONLY = ["extract.enabled=false", "filter.enabled=false", "exact_dedup.enabled=false", "minhash.enabled=false",
               "quality.enabled=false", "tokenizer.enabled=false", "tokenize.enabled=false"]


def test_ingest_reads_zstd_parquet_hf_and_warc(tmp_path, corpora, ray_local, mlflow_store):
    import datasets

    with gzip.open(corpora / DOLMA_CRAWL, "rb") as f:
        lines = f.read().splitlines()
    (tmp_path / "zst").mkdir()
    (tmp_path / "zst" / "a.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(b"\n".join(lines[:100]) + b"\n"))
    docs = [json.loads(line) for line in lines[100:250]]
    (tmp_path / "pq").mkdir()
    pq.write_table(pa.Table.from_pylist([{"text": d["text"], "id": d["id"]} for d in docs[:100]]),
                   tmp_path / "pq" / "b.parquet")
    hf = datasets.Dataset.from_list([{"id": d["id"], "text": d["text"]} for d in docs[100:]])
    hf.save_to_disk(str(tmp_path / "hf"))

    inputs = (
        f'[{{name: zst, format: jsonl, paths: ["{tmp_path}/zst/*.jsonl.zst"]}},'
        f' {{name: pq, format: parquet, paths: ["{tmp_path}/pq/*.parquet"]}},'
        f' {{name: hf, format: hf, hf_dataset: "{tmp_path}/hf", id_field: id}},'
        f' {{name: warc, format: warc, paths: ["{corpora}/dolma_fixtures/*.warc.gz"]}}]'
    )
    cfg = load_pipeline_config(REPO / "configs" / "quickstart.yaml", [f"inputs={inputs}", *INGEST_ONLY])
    summary = run_pipeline(cfg, tmp_path / "work", echo=lambda *_: None)
    (ingest,) = summary["stages"]
    kept = stage_table(ingest, "kept")
    ids = kept.column("id").to_pylist()
    by_source = {s: sum(1 for x in kept.column("source").to_pylist() if x == s) for s in ("zst", "pq", "hf", "warc")}
    assert by_source == {"zst": 100, "pq": 100, "hf": 50, "warc": 37}
    assert ingest["docs_in"] == 287 + sum(ingest["dropped"].values())  # WARC non-HTML responses are drops
    assert len(set(ids)) == len(ids)
    assert f"hf#{docs[100]['id']}" in ids and "zst/a.jsonl.zst#0000000000" in ids
    texts = dict(zip(ids, kept.column("text").to_pylist()))
    assert texts["zst/a.jsonl.zst#0000000099"] == json.loads(lines[99])["text"]
    raw = json.loads((tmp_path / "work" / "raw_files.json").read_text())
    assert {f["path"] for f in raw["files"]} >= {"zst/a.jsonl.zst", "pq/b.parquet"}
