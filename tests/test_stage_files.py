"""Stage output files and manifests: round trips, tamper detection."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pyarrow as pa
import pytest

from pipelines.manifest import build_manifest, load_manifest, verify_files, write_manifest
from pipelines.records import REASON, STAGE_SCHEMA, quarantine
from pipelines.stage_files import FORMATS, RECORD_SCHEMA, RecordWriter, read_shard
from repo_paths import DOLMA_CRAWL



def _table(corpora: Path, n: int = 60) -> pa.Table:
    rows = []
    with gzip.open(corpora / DOLMA_CRAWL, "rt") as f:
        for i, line in zip(range(n), f):
            doc = json.loads(line)
            reason = "" if i % 5 else ("gopher_quality:gopher_short_doc" if i % 10 else quarantine("bad_json"))
            rows.append({"id": f"crawl/x#{i:010d}", "text": doc["text"], "source": "crawl", "url": "",
                         "metadata": "{}", REASON: reason})
    return pa.Table.from_pylist(rows, schema=STAGE_SCHEMA)


def _write(table: pa.Table, root: Path, fmt: str) -> dict:
    w = RecordWriter(root / f"docs/x{FORMATS[fmt]}", fmt, RECORD_SCHEMA, group_rows=16)
    w.write(table)
    return w.close(root)


@pytest.mark.parametrize("fmt", ["parquet", "jsonl.zst"])
def test_shard_round_trip_keeps_rows_in_order(tmp_path, corpora, fmt):
    table = _table(corpora)
    entry = _write(table, tmp_path, fmt)
    assert entry["docs"] == 60 and entry["path"] == f"docs/x{FORMATS[fmt]}"
    back = pa.concat_tables(read_shard(tmp_path / entry["path"], batch_docs=7))
    assert back.column("id").to_pylist() == table.column("id").to_pylist()
    assert back.column("text").to_pylist() == table.column("text").to_pylist()


def test_manifest_detects_a_flipped_byte_and_an_edited_manifest(tmp_path, corpora):
    entry = _write(_table(corpora), tmp_path, "parquet")
    manifest = build_manifest("x", [{**entry, "kind": "kept"}], {"in": 60}, {})
    write_manifest(manifest, tmp_path / "manifest.json")
    verify_files(load_manifest(tmp_path / "manifest.json"), tmp_path)
    shard = tmp_path / entry["path"]
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 1
    shard.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=entry["path"]):
        verify_files(manifest, tmp_path)
    edited = json.loads((tmp_path / "manifest.json").read_text())
    edited["counts"]["in"] = 61
    (tmp_path / "manifest.json").write_text(json.dumps(edited))
    with pytest.raises(ValueError, match="digest does not match"):
        load_manifest(tmp_path / "manifest.json")
