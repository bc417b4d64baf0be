"""Stage output shards and manifests: deterministic bytes, round trips, tamper detection."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pyarrow as pa
import pytest

from pipelines.manifest import build_manifest, load_manifest, verify_files, write_manifest
from pipelines.records import REASON, STAGE_SCHEMA, quarantine
from pipelines.stage_files import read_shard, write_shard

DOLMA_CRAWL = "dolma_fixtures/CC-MAIN-20190717121559-20190717143559-00140.jsonl.gz"


def _table(corpora: Path, n: int = 60) -> pa.Table:
    rows = []
    with gzip.open(corpora / DOLMA_CRAWL, "rt") as f:
        for i, line in zip(range(n), f):
            doc = json.loads(line)
            reason = "" if i % 5 else ("gopher_quality:gopher_short_doc" if i % 10 else quarantine("bad_json"))
            rows.append({"id": f"crawl/x#{i:010d}", "text": doc["text"], "source": "crawl", "url": "",
                         "metadata": "{}", REASON: reason})
    return pa.Table.from_pylist(rows, schema=STAGE_SCHEMA)


@pytest.mark.parametrize("fmt", ["parquet", "jsonl.zst"])
def test_shard_round_trip_and_same_bytes_whatever_the_row_order(tmp_path, corpora, fmt):
    table = _table(corpora)
    a = write_shard(table, tmp_path / "a", 0, 1, fmt)
    b = write_shard(table.take(list(reversed(range(table.num_rows)))), tmp_path / "b", 0, 1, fmt)
    assert [f["sha256"] for f in a["files"]] == [f["sha256"] for f in b["files"]]
    assert a["kept"] == 48 and a["dropped"] == {"gopher_quality:gopher_short_doc": 6}
    assert a["quarantined"] == {"quarantine:bad_json": 6}
    kept = pa.concat_tables(read_shard(tmp_path / "a" / a["files"][0]["path"], batch_docs=7))
    expected = table.filter(pa.compute.equal(table.column(REASON), "")).sort_by("id")
    assert kept.column("id").to_pylist() == expected.column("id").to_pylist()
    assert kept.column("text").to_pylist() == expected.column("text").to_pylist()


def test_manifest_detects_a_flipped_byte_and_an_edited_manifest(tmp_path, corpora):
    result = write_shard(_table(corpora), tmp_path, 0, 1, "parquet")
    manifest = build_manifest("x", result["files"], {"in": 60}, {})
    write_manifest(manifest, tmp_path / "manifest.json")
    verify_files(load_manifest(tmp_path / "manifest.json"), tmp_path)
    shard = tmp_path / result["files"][0]["path"]
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 1
    shard.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=result["files"][0]["path"]):
        verify_files(manifest, tmp_path)
    edited = json.loads((tmp_path / "manifest.json").read_text())
    edited["counts"]["in"] = 61
    (tmp_path / "manifest.json").write_text(json.dumps(edited))
    with pytest.raises(ValueError, match="digest does not match"):
        load_manifest(tmp_path / "manifest.json")
