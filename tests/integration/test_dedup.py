"""Exact and MinHash dedup on Ray (keys shuffled, drop lists applied per shard) on real corpora, against in-process references."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pytest
from conftest import stage_table

from orchestration.corpus.pipeline import run_pipeline
from orchestration.config.pipeline import load_pipeline_config
from pipelines.minhash import MinHashConfig
from reference import near_duplicate_survivors
from pipelines.readers import list_inputs, read_file
from repo_paths import REPO, DOLMA_CRAWL

pytestmark = pytest.mark.slow
ONLY_DEDUP = ["extract.enabled=false", "filter.enabled=false", "quality.enabled=false", "tokenizer.enabled=false",
              "tokenize.enabled=false"]


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


def _write_jsonl(path: Path, docs: list[str]) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in docs))
    return str(path)


def _edit(text: str, every: int) -> str:
    words = text.split(" ")
    return " ".join("xyzzy" if i % every == every // 2 else w for i, w in enumerate(words))


def test_incremental_dedup_against_earlier_runs_indexes(tmp_path, corpora, ray_local, mlflow_store):
    """Run A indexes what it keeps; run B (a new dump) names A and drops the copies of A's documents,
    naming A's document and MLflow run; run C names only B and still sees A (indexes chain)."""
    texts = [t for cols in read_file(str(corpora / DOLMA_CRAWL), "x", "jsonl", "crawl") for t in cols["text"]]
    long = list(dict.fromkeys(t for t in texts if len(t.split()) >= 150))  # distinct, long enough to edit

    def run(name: str, docs: list[str], previous: list[str]) -> dict:
        path = _write_jsonl(tmp_path / f"{name}.jsonl", docs)
        return _run(tmp_path / name, f'[{{name: {name}, format: jsonl, paths: ["{path}"]}}]',
                    [*ONLY_DEDUP, f"dedup_index.previous={json.dumps(previous)}"])

    a = run("a", long[:150], [])
    assert (tmp_path / "a" / "work" / "dedup" / "index" / "manifest.json").is_file()
    a_kept = _kept_texts(a["stages"][-1])  # id -> text of what A kept
    a_ids = {t: i for i, t in a_kept.items()}
    a_docs = [a_kept[i] for i in sorted(a_kept)]
    assert len(a_docs) >= 140
    fresh = long[150:230]
    exact_copies = [a_docs[i] for i in range(0, 40, 2)]
    near_copies = [_edit(a_docs[i], 60) for i in range(1, 41, 2)]
    b_docs = fresh + exact_copies + near_copies
    b = run("b", b_docs, [str(tmp_path / "a" / "work")])
    _, exact, near = b["stages"]
    ex = _dropped(exact)
    metas = [json.loads(m) for m in ex.column("metadata").to_pylist()]
    assert exact["dropped"] == {"exact_duplicate": 20}
    assert sorted(ex.column("text").to_pylist()) == sorted(exact_copies)
    assert all(m["duplicate_of"] == a_ids[t] and m["duplicate_of_run"] == a["mlflow_run_id"]
               for m, t in zip(metas, ex.column("text").to_pylist()))
    nd = _dropped(near)
    found = {t: json.loads(m) for t, m in zip(nd.column("text").to_pylist(), nd.column("metadata").to_pylist())}
    assert set(found) <= set(near_copies) and len(found) >= 18  # 1 word in 60 edited: Jaccard ~0.92
    for i, t in zip(range(1, 41, 2), near_copies):
        if t in found:
            assert found[t]["duplicate_of"] == a_ids[a_docs[i]] and found[t]["duplicate_of_run"] == a["mlflow_run_id"]
    assert near["kept"] == len(fresh) + 20 - len(found)

    # C names only B, and holds a copy of one of A's documents and one of B's fresh ones
    c = run("c", [a_docs[100], fresh[5], "a new text " * 40], [str(tmp_path / "b" / "work")])
    cx = _dropped(c["stages"][1])
    runs = {t: json.loads(m)["duplicate_of_run"] for t, m in zip(cx.column("text").to_pylist(), cx.column("metadata").to_pylist())}
    assert runs == {a_docs[100]: a["mlflow_run_id"], fresh[5]: b["mlflow_run_id"]}
    assert c["stages"][-1]["kept"] == 1

    # keys made with other MinHash parameters cannot be compared: refused, naming the index
    from orchestration.corpus.dedup_index import DedupIndexError

    with pytest.raises(DedupIndexError, match=r"manifest.json: its minhash parameters") as err:
        _run(tmp_path / "d", f'[{{name: d, format: jsonl, paths: ["{tmp_path / "c.jsonl"}"]}}]',
             [*ONLY_DEDUP, f'dedup_index.previous=["{tmp_path / "a" / "work"}"]', "minhash.bands=20"])
    assert str(tmp_path / "a" / "work" / "dedup" / "index" / "manifest.json") in str(err.value)

    # a damaged earlier index: files deleted are named before anything runs (was: --check said valid, then
    # "internal error: RayTaskError(FileNotFoundError)" after pass 0) ...
    import shutil

    from orchestration.config.preflight import check_pipeline

    damaged = tmp_path / "a-damaged"
    shutil.copytree(tmp_path / "a" / "work", damaged)
    index = damaged / "dedup" / "index"
    files = sorted((index / "minhash").rglob("*.parquet"))
    for f in files[:2]:
        f.unlink()
    cfg = load_pipeline_config(REPO / "configs" / "quickstart.yaml",
                               [f'inputs=[{{name: e, format: jsonl, paths: ["{tmp_path / "c.jsonl"}"]}}]', *ONLY_DEDUP,
                                f'dedup_index.previous=["{damaged}"]'])
    with pytest.raises(DedupIndexError, match=r"2 index file\(s\) missing, e\.g\. .*a-damaged/dedup/index/minhash"):
        check_pipeline(cfg)  # what --check and the start of a run call, before Ray
    # ... and a file swapped for another valid parquet file of the index is found by its sha256 as it is read
    # (was: not noticed, and a duplicate leaked through)
    shutil.copy(files[2], files[0])
    shutil.copy(files[3], files[1])
    exact = sorted((index / "exact_dedup").rglob("*.parquet"))
    shutil.copy(exact[1], exact[0])
    with pytest.raises(DedupIndexError, match=r"dedup index file .*a-damaged/dedup/index/.* does not match its index "
                                              r"manifest"):
        run_pipeline(cfg, tmp_path / "e" / "work", echo=lambda *_: None)

    # a new dump whose every document is in A: nothing is left to tokenize, which is said with each stage's
    # counts (was: "internal error: ValueError: tokenizer: no document survived ... (see the stage counts above)"
    # with no counts shown)
    from orchestration.corpus.pipeline import NothingLeft

    with pytest.raises(NothingLeft, match=r"no document is left after pass 1 \(ingest kept 150 of 150; exact_dedup "
                                          r"kept \d+ of 150 \(exact_duplicate=\d+\); minhash kept 0 of \d+.*\): "
                                          r"nothing to tokenize"):
        _run(tmp_path / "f", f'[{{name: f, format: jsonl, paths: ["{tmp_path / "a.jsonl"}"]}}]',
             [*ONLY_DEDUP, "tokenizer.enabled=true", "tokenize.enabled=true",
              f'dedup_index.previous=["{tmp_path / "a" / "work"}"]'])


def test_incompatible_earlier_index_is_refused_before_anything_runs(tmp_path, corpora, ray_local, mlflow_store):
    from orchestration.corpus.dedup_index import DedupIndexError

    with pytest.raises(DedupIndexError, match="no dedup index at"):
        _run(tmp_path, f'[{{name: crawl, format: jsonl, paths: ["{corpora / DOLMA_CRAWL}"]}}]',
             [*ONLY_DEDUP, f'dedup_index.previous=["{tmp_path / "nowhere"}"]'])
