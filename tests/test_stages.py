"""The stage shape and the shard task, without a Ray cluster: real files streamed through real stages in
this process (orchestration.corpus.passes.run_task is what each Ray task runs)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from orchestration.corpus.passes import pass_spec, plan_passes, run_task
from orchestration.config.pipeline import load_pipeline_config
from pipelines.exact_dedup import normalize
from pipelines.minhash import MinHashConfig, band_keys, signatures
from pipelines.readers import read_file
from pipelines.records import REASON, STAGE_SCHEMA
from pipelines.shard_reader import ShardSet
from pipelines.stage_files import RECORD_SCHEMA, RecordWriter
from pipelines.stages import REGISTRY, ShardContext, build
from pipelines.stages.dedup_common import write_drops
from pipelines.stages.ingest import cut_into_shards
from pipelines.token_shards import build_token_manifest, number_token_files, write_token_manifest, TokenShardWriter
from reference import plan_shards
from repo_paths import REPO, DOLMA_CRAWL

DOCS = REPO / "configs" / "data" / "python3.11-doc"


def _cfg(*overrides):
    # the quickstart trains and applies a quality classifier; these tests add quality where they test it
    return load_pipeline_config(REPO / "configs" / "quickstart.yaml", ["quality.enabled=false", *overrides])


def _batches(table: pa.Table, size: int):
    for i in range(0, table.num_rows, size):
        yield table.slice(i, size)


def _crawl_table(corpora: Path, n: int | None = None) -> pa.Table:
    cols = [pa.Table.from_pydict(c, schema=STAGE_SCHEMA)
            for c in read_file(str(corpora / DOLMA_CRAWL), "crawl/x.jsonl.gz", "jsonl", "crawl", batch_size=100)]
    t = pa.concat_tables(cols)
    return t.slice(0, n) if n else t


def test_registry_has_one_class_per_stage_and_build_follows_the_config():
    assert list(REGISTRY) == ["ingest", "extract", "filter", "exact_dedup", "minhash", "quality", "decontaminate",
                              "tokenize"]
    names = [s.name for s in build(_cfg())]
    assert names == ["ingest", "extract", "filter", "exact_dedup", "minhash", "tokenize"]
    assert [s.name for s in build(_cfg("extract.enabled=false", "minhash.enabled=false"))] == \
        ["ingest", "filter", "exact_dedup", "tokenize"]


def test_passes_fuse_one_to_one_stages_and_break_before_global_steps():
    def shape(*overrides):
        return [([s.name for s in p.apply], [s.name for s in p.collect]) for p in plan_passes(build(_cfg(*overrides)))]

    # MinHash keys are collected with exact dedup's; the dedup stages apply together with quality
    q = ["quality.enabled=true", "quality.model_path=x.bin"]
    assert shape(*q, "quality.threshold=0.5") == [
        (["ingest", "extract", "filter"], ["exact_dedup", "minhash"]),
        (["exact_dedup", "minhash", "quality"], ["tokenize"]),
        (["tokenize"], []),
    ]
    # a global quality cut-off needs the scores of the whole corpus first: one more pass
    assert shape(*q, "quality.threshold=null", "quality.keep_fraction=0.5") == [
        (["ingest", "extract", "filter"], ["exact_dedup", "minhash"]),
        (["exact_dedup", "minhash"], ["quality"]),
        (["quality"], ["tokenize"]),
        (["tokenize"], []),
    ]
    # without exact dedup MinHash cannot be hoisted over anything
    assert shape("exact_dedup.enabled=false", "tokenize.enabled=false", "tokenizer.enabled=false") == [
        (["ingest", "extract", "filter"], ["minhash"]), (["minhash"], [])]


def test_shard_cuts_depend_on_the_documents_not_on_batch_sizes(corpora):
    table = _crawl_table(corpora)
    target = 200_000

    def cuts(size):
        out = {}
        for name, batch in cut_into_shards(_batches(table, size), "crawl/x", target):
            out.setdefault(name, []).extend(batch.column("id").to_pylist())
        return out

    a, b = cuts(7), cuts(1000)
    assert a == b and len(a) > 3
    ids = [i for name in sorted(a) for i in a[name]]
    assert ids == table.column("id").to_pylist()  # shards are consecutive runs of the file, in order
    text = dict(zip(table.column("id").to_pylist(), table.column("text").to_pylist()))
    for name in sorted(a)[:-1]:  # every shard but the last reaches the target with its last document
        sizes = [len(text[i].encode()) for i in a[name]]
        assert sum(sizes) >= target and sum(sizes) - sizes[-1] < target


@pytest.mark.parametrize("fmt", ["parquet", "jsonl.zst"])
def test_record_writer_bytes_do_not_depend_on_batch_sizes(tmp_path, corpora, fmt):
    table = _crawl_table(corpora, 300).select(RECORD_SCHEMA.names)
    entries = []
    for size in (1, 37, 300):
        w = RecordWriter(tmp_path / str(size) / f"out.{fmt}", fmt, RECORD_SCHEMA, group_rows=64)
        for b in _batches(table, size):
            w.write(b)
        entries.append(w.close(tmp_path))
    assert len({e["sha256"] for e in entries}) == 1 and entries[0]["docs"] == 300
    w = RecordWriter(tmp_path / "empty" / f"out.{fmt}", fmt, RECORD_SCHEMA)
    assert w.close(tmp_path) is None and not (tmp_path / "empty" / f"out.{fmt}").exists()


def test_token_shard_writer_cuts_like_the_reference_and_reads_back(tmp_path):
    rng = np.random.default_rng(0)
    ids = [f"d#{i:04d}" for i in range(200)]
    arrays = [rng.integers(0, 1000, size=int(n)).astype(np.uint16) for n in rng.integers(0, 400, size=200)]
    arrays[50] = rng.integers(0, 1000, size=7000)  # int64, longer than a file: a file of its own
    w = TokenShardWriter(tmp_path, "s/00000", 5000, eos_id=1, dtype="uint16")
    for i in range(0, 200, 13):
        w.add(ids[i:i + 13], arrays[i:i + 13])
    entries = w.close()
    assert [e["documents"] for e in entries] == [len(s) for s in plan_shards([(i, len(a) + 1) for i, a in zip(ids, arrays)], 5000)]
    manifest = build_token_manifest(number_token_files({"s/00000": entries}), "x" * 64, 1000, "uint16",
                                    None, {}, eos_id=1)
    write_token_manifest(manifest, tmp_path / "manifest.json")
    shards = ShardSet(tmp_path / "manifest.json")
    for doc_id, a in zip(ids, arrays):
        assert shards.document(doc_id).tolist() == a.tolist()
    idx = pq.read_table(tmp_path / entries[0]["index_path"])
    assert idx.column("doc_key").type == pa.uint64()
    assert 7001 in [e["tokens"] for e in entries]
    with pytest.raises(ValueError, match="'bad': token id out of range"):
        TokenShardWriter(tmp_path / "x", "s", 100, eos_id=1, dtype="uint16").add(["ok", "bad"], [np.arange(3), np.array([70000])])


@pytest.mark.parametrize("mode", ["none", "whitespace", "lower"])
def test_exact_duplicates_get_identical_band_keys_by_construction(mode):
    """What lets MinHash keys be collected before exact dedup ran (pipelines/stages/minhash.py)."""
    a = "The  Quick brown fox\tjumps over the lazy dog near the river bank today"
    variants = {"none": a, "whitespace": " The Quick brown  fox jumps\nover the lazy dog near the river bank today ",
                "lower": "THE QUICK BROWN FOX JUMPS OVER THE LAZY DOG NEAR THE RIVER BANK TODAY"}
    b = variants[mode]
    assert normalize(a, mode) == normalize(b, mode)
    cfg = MinHashConfig()
    keys = band_keys(signatures([normalize(a, mode), normalize(b, mode)], cfg), cfg)
    assert (keys[0] == keys[1]).all()


def _spec(cfg, tmp_path: Path, pass_index: int, state: dict | None = None):
    passes = plan_passes(build(cfg))
    return pass_spec(passes[pass_index], state or {}, tmp_path, cfg.output, cfg.ray, pass_index == len(passes) - 1)


def _crawl_task(cfg, corpora: Path, folder: Path, n: int = 250) -> dict:
    """A pass-0 task over the first n documents of the dolma crawl (about 1.1 MB at 250: 3+ shards at 0.3 MB)."""
    import gzip

    path = folder / "x.jsonl.gz"
    if not path.exists():
        folder.mkdir(parents=True, exist_ok=True)
        with gzip.open(corpora / DOLMA_CRAWL, "rb") as f:
            path.write_bytes(gzip.compress(b"\n".join(f.read().splitlines()[:n]) + b"\n", mtime=0))
    return {"kind": "raw", "id": "crawl/x.jsonl.gz", "input": dataclasses.asdict(cfg.inputs[0]) | {
        "name": "crawl", "format": "jsonl"}, "path": str(path), "relpath": "crawl/x.jsonl.gz",
        "prefix": "crawl/x.jsonl.gz", "sha256": "raw-sha"}


def test_shard_task_streams_a_raw_file_through_fused_stages_whatever_the_batch_size(tmp_path, corpora):
    outs = []
    for batch in (16, 500):
        cfg = _cfg("output.shard_mb=0.3", f"ray.batch_size={batch}")
        root = tmp_path / str(batch)
        outs.append(run_task(_spec(cfg, root, 0), _crawl_task(cfg, corpora, tmp_path / "raw")))
    a, b = outs
    assert not a["skipped"] and len(a["shards"]) >= 3
    def strip(r):  # what was written (paths, sizes, sha256), not how long it took
        return json.dumps([{"docs": s["docs_file"], "keys": {c: v["keys"] for c, v in s["collect"].items()},
                            "dropped": {n: v["dropped_file"] for n, v in s["stages"].items()}} for s in r["shards"]])

    assert strip(a) == strip(b)  # same files, same sha256, same key files
    for shard in a["shards"]:
        st = shard["stages"]
        assert st["ingest"]["in"] == st["ingest"]["kept"] + sum(st["ingest"]["quarantined"].values())
        assert st["extract"]["in"] == st["ingest"]["kept"]
        assert st["filter"]["in"] == st["extract"]["kept"]
        f = st["filter"]
        assert f["in"] == f["kept"] + sum(f["dropped"].values())
        assert shard["docs_file"]["docs"] == f["kept"]
        assert set(shard["collect"]) == {"exact_dedup", "minhash"}
    assert sum(s["stages"]["ingest"]["in"] for s in a["shards"]) == 250


def test_a_completed_task_is_skipped_and_a_changed_collect_recollects_without_rerunning(tmp_path, corpora):
    cfg = _cfg("output.shard_mb=0.3")
    task = _crawl_task(cfg, corpora, tmp_path / "raw")
    first = run_task(_spec(cfg, tmp_path, 0), task)
    docs = tmp_path / first["shards"][0]["docs_file"]["path"]
    mtime = docs.stat().st_mtime_ns
    again = run_task(_spec(cfg, tmp_path, 0), task)
    assert again["skipped"] and again["shards"] == first["shards"]
    # a different raw file under the same name is not skipped
    assert not run_task(_spec(cfg, tmp_path, 0), {**task, "sha256": "other"})["skipped"]
    # MinHash's bands change: its keys are collected again from the written documents, the rest stays
    cfg2 = _cfg("output.shard_mb=0.3", "minhash.bands=7")
    run_task(_spec(cfg, tmp_path, 0), task)
    mtime = docs.stat().st_mtime_ns
    third = run_task(_spec(cfg2, tmp_path, 0), task)
    assert not third["skipped"] and docs.stat().st_mtime_ns == mtime
    k_old = first["shards"][0]["collect"]["minhash"]["keys"]
    k_new = third["shards"][0]["collect"]["minhash"]["keys"]
    rows = lambda ks: sum(e["docs"] for e in ks.values())  # noqa: E731  (rows written, as recorded)
    assert rows(k_new) * 2 == rows(k_old)  # 7 bands instead of 14
    assert third["shards"][0]["collect"]["exact_dedup"]["keys"] == first["shards"][0]["collect"]["exact_dedup"]["keys"]


def test_drop_lists_are_applied_per_shard(tmp_path, corpora):
    cfg = _cfg()
    stage = build(cfg)[3]
    assert stage.name == "exact_dedup"
    table = _crawl_table(corpora, 50)
    ids = table.column("id").to_pylist()
    drops = pa.table({"id": [ids[3], ids[7], "other#1"], "survivor": [ids[0], ids[1], "other#0"],
                      "shard": ["s/00000", "s/00000", "t/00000"]})
    f = write_drops(drops, tmp_path / "drops.parquet")["path"]
    ctx = ShardContext("s/00000", {"exact_dedup": {"drop_files": [f]}})
    stage.open_shard(ctx)
    out = stage.apply(table.set_column(table.schema.get_field_index(REASON), REASON, pa.array([""] * 50)), ctx)
    reasons = out.column(REASON).to_pylist()
    assert [i for i, r in enumerate(reasons) if r] == [3, 7] and reasons[3] == "exact_duplicate"
    assert json.loads(out.column("metadata")[7].as_py())["duplicate_of"] == ids[1]
    other = ShardContext("t/00000", ctx.state)
    stage.open_shard(other)
    assert stage.apply(out, other).column(REASON).to_pylist() == reasons  # another shard's list: no change


def test_filter_stage_runs_the_chain_then_masks_pii_on_kept_documents_only(corpora):
    from pipelines.filters import FilterChain
    from pipelines.pii import mask_pii

    cfg = _cfg("filter.c4.filter_no_terminal_punct=false")
    stage = next(s for s in build(cfg) if s.name == "filter")
    table = _crawl_table(corpora, 200)
    table = table.filter(pa.compute.equal(table.column(REASON), ""))
    ctx = ShardContext("crawl/x/00000")
    stage.open_shard(ctx)
    out = stage.apply(table, ctx)
    chain = FilterChain({k: getattr(cfg.filter, k) for k in ("word_splitter", "gopher_quality", "gopher_repetition",
                                                             "c4", "fineweb")})
    for text, got_text, reason, meta in zip(table.column("text").to_pylist(), out.column("text").to_pylist(),
                                            out.column(REASON).to_pylist(), out.column("metadata").to_pylist()):
        want_text, want_reason = chain.apply(text, {})
        assert reason == want_reason
        if reason:
            assert "pii_masked" not in json.loads(meta)
        else:
            assert got_text == mask_pii(want_text, emails=True, ips=True)[0]
    assert 0 < out.column(REASON).to_pylist().count("") < table.num_rows
