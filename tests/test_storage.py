"""pipelines.storage against a real S3 protocol server (moto's, on loopback): the pathlib surface tokenmill
uses, local copies for libraries that need files, atomic publishing, and the readers and writers on top."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from servers import moto_s3

from pipelines import storage
from pipelines.readers import list_inputs, read_file
from pipelines.records import RECORD_SCHEMA
from pipelines.readers.paths import InputError
from pipelines.shard_reader import ShardSet
from pipelines.stage_files import RecordWriter, read_shard
from pipelines.hashing import sha256_file
from pipelines.token_shards import TokenShardWriter, build_token_manifest, write_token_manifest

BUCKET = "tokenmill-storage"


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    with moto_s3(tmp_path_factory.mktemp("moto"), BUCKET, export_env=True) as server:
        yield server  # this process reads the bucket too (pyarrow takes the endpoint from the environment)


@pytest.fixture
def root(s3, request, monkeypatch, tmp_path):
    monkeypatch.setenv("TOKENMILL_CACHE", str(tmp_path / "cache"))
    return storage.path(f"s3://{BUCKET}/{request.node.name}")


def keys(s3, prefix: str) -> list[str]:
    """The object keys under `prefix`, without the empty "dir/" markers pyarrow leaves when it moves or deletes
    the last object under a prefix (it keeps the "directory" existing)."""
    out = s3["client"].list_objects_v2(Bucket=BUCKET, Prefix=prefix)
    return sorted(o["Key"] for o in out.get("Contents", []) if not o["Key"].endswith("/"))


def test_paths_are_local_or_remote_by_their_scheme(tmp_path):
    assert storage.path("data/x.jsonl") == Path("data/x.jsonl")
    assert storage.path(f"file://{tmp_path}/a b.txt") == tmp_path / "a b.txt"
    p = storage.path("s3://bucket//runs/./one/")
    assert isinstance(p, storage.RemotePath) and str(p) == "s3://bucket/runs/one"
    assert str(p / "tokens" / "manifest.json") == "s3://bucket/runs/one/tokens/manifest.json"
    assert (p / "a/b.parquet").name == "b.parquet" and (p / "a/b.parquet").parent == p / "a"
    assert (p / "x.jsonl.zst").suffixes == [".jsonl", ".zst"] and (p / "m.bin").with_suffix(".idx").name == "m.idx"
    assert (p / "a" / "b").relative_to(p) == Path("a/b") and (p / "a").parents[1] == storage.path("s3://bucket/runs")
    with pytest.raises(ValueError, match="not under"):
        (p / "a").relative_to("s3://bucket/other")
    with pytest.raises(ValueError, match="cannot join"):
        p / "/etc/passwd"
    with pytest.raises(TypeError):  # no __fspath__: a URI never silently becomes a local file named "s3:"
        open(p / "x", "wb")  # noqa: SIM115
    assert storage.is_uri("gs://b/x") and storage.is_uri(p) and not storage.is_uri("/tmp/x") \
        and not storage.is_uri("file:///tmp/x")


def test_files_on_s3_through_the_pathlib_surface(s3, root):
    f = root / "dir" / "a.txt"
    assert not f.exists() and not root.exists()
    f.write_text("héllo\n")
    assert f.is_file() and (root / "dir").is_dir() and not f.is_dir()
    assert f.read_text() == "héllo\n" and f.stat().st_size == len("héllo\n".encode())
    with f.open("r") as text:
        assert text.read() == "héllo\n"
    storage.write_atomic(root / "dir" / "b.json", json.dumps({"k": 1}))
    (root / "dir" / "sub" / "c.txt").write_bytes(b"c")
    assert [p.name for p in (root / "dir").iterdir()] == ["a.txt", "b.json", "sub"]
    assert [str(p.relative_to(root)) for p in root.glob("dir/*.txt")] == ["dir/a.txt"]
    assert [str(p.relative_to(root)) for p in root.rglob("*.txt")] == ["dir/a.txt", "dir/sub/c.txt"]
    (root / "dir" / "b.json").replace(root / "dir" / "d.json")
    assert keys(s3, root.key) == [f"{root.key}/dir/a.txt", f"{root.key}/dir/d.json", f"{root.key}/dir/sub/c.txt"]
    (root / "dir" / "d.json").unlink()
    (root / "dir" / "d.json").unlink(missing_ok=True)
    with pytest.raises(FileNotFoundError):
        (root / "dir" / "d.json").unlink()
    with pytest.raises(FileNotFoundError, match="no such file"):
        (root / "nothing").read_bytes()
    assert sha256_file(f) == sha256_file(storage.local_copy(f))


def test_local_copies_are_cached_and_refreshed_when_the_object_changes(s3, root, tmp_path):
    f = root / "model.bin"
    f.write_bytes(b"one")
    first = storage.local_copy(f)
    assert first.read_bytes() == b"one" and first.name == "model.bin" and str(tmp_path / "cache") in str(first)
    mtime = first.stat().st_mtime_ns
    assert storage.local_copy(f) == first and first.stat().st_mtime_ns == mtime  # not downloaded again
    time.sleep(1.1)  # S3 mtimes have one-second resolution
    f.write_bytes(b"two!")
    assert storage.local_copy(f).read_bytes() == b"two!"
    local = tmp_path / "plain.txt"
    local.write_text("x")
    assert storage.local_copy(local) == local  # a local path is used where it is
    with pytest.raises(FileNotFoundError):
        storage.local_copy(root / "missing.bin")


def test_publish_uploads_files_and_folders_whole(s3, root, tmp_path):
    folder = tmp_path / "export"
    (folder / "inner").mkdir(parents=True)
    (folder / "w.safetensors").write_bytes(b"\x00" * 1000)
    (folder / "inner" / "config.json").write_text("{}")
    (root / "export" / "stale.txt").write_text("from an earlier run")
    storage.publish(folder, root / "export")
    assert not folder.exists()  # moved, not copied
    assert keys(s3, f"{root.key}/export") == [f"{root.key}/export/inner/config.json",
                                              f"{root.key}/export/w.safetensors"]
    copy = storage.local_copy(root / "export")
    assert (copy / "inner" / "config.json").read_text() == "{}" and (copy / "w.safetensors").stat().st_size == 1000
    scratch = storage.scratch_for(root / "one.txt")
    assert scratch.exists() and not str(scratch).startswith("s3:")  # a local temporary file
    scratch.write_text("1")
    storage.publish(scratch, root / "one.txt")
    assert (root / "one.txt").read_text() == "1" and not scratch.exists()


def test_stage_files_and_token_shards_round_trip_on_s3(s3, root):
    rows = pa.table({"id": [f"d{i}" for i in range(2500)], "text": [f"text {i} " * (i % 7 + 1) for i in range(2500)],
                     "source": ["s"] * 2500, "url": [None] * 2500, "metadata": ["{}"] * 2500})
    for fmt, ext in (("parquet", ".parquet"), ("jsonl.zst", ".jsonl.zst")):
        w = RecordWriter(root / "docs" / f"shard{ext}", fmt, RECORD_SCHEMA)
        for i in range(0, 2500, 700):
            w.write(rows.slice(i, 700))
        entry = w.close(root)
        assert entry["path"] == f"docs/shard{ext}" and entry["docs"] == 2500
        assert entry["sha256"] == sha256_file(root / entry["path"]) and entry["bytes"] == (root / entry["path"]).stat().st_size
        back = pa.concat_tables(read_shard(root / entry["path"], 1000))
        assert back.column("id").to_pylist() == rows.column("id").to_pylist()
        assert back.column("text").to_pylist() == rows.column("text").to_pylist()
    assert RecordWriter(root / "docs" / "empty.parquet", "parquet", RECORD_SCHEMA).close(root) is None
    assert not (root / "docs" / "empty.parquet").exists()

    rng = np.random.default_rng(0)
    docs = {f"doc{i:03d}": rng.integers(0, 3000, int(rng.integers(1, 400))).astype(np.int64) for i in range(60)}
    writer = TokenShardWriter(root / "tokens", "src/file", 5000, eos_id=2, dtype="uint16")
    ids = sorted(docs)
    writer.add(ids[:25], [docs[i] for i in ids[:25]])
    writer.add(ids[25:], [docs[i] for i in ids[25:]])
    entries = [{**e, "shard": k} for k, e in enumerate(writer.close())]
    assert len(entries) > 2
    manifest = build_token_manifest(entries, "0" * 64, 3000, "uint16", None, {}, eos_id=2)
    write_token_manifest(manifest, root / "tokens" / "manifest.json")
    shards = ShardSet(str(root / "tokens" / "manifest.json"), verify=True)  # sha256 of every file, read from S3
    got = {}
    for k in range(shards.num_shards):
        index, tokens = shards.index(k), shards.shard(k)
        for doc_id, off, n in zip(index["doc_id"], index["offset"], index["n_tokens"]):
            got[doc_id] = np.asarray(tokens[off:off + n])
            assert tokens[off + n] == 2
    assert got.keys() == docs.keys() and all(np.array_equal(got[i], docs[i]) for i in docs)
    (root / "tokens" / entries[0]["path"]).write_bytes(b"\x00\x00" * entries[0]["tokens"])  # same size, new bytes
    with pytest.raises(ValueError, match="sha256"):  # though the cached copy looks current (same size and second)
        ShardSet(str(root / "tokens" / "manifest.json"), verify=True)


def test_inputs_are_listed_and_read_from_s3(s3, root):
    for rel, body in (("2024/a.jsonl", '{"text": "one"}\n{"text": "two"}\n'), ("2024/b.jsonl", '{"text": "three"}\n'),
                      ("2025/deep/c.jsonl", '{"text": "four"}\n'), ("notes.txt", "not jsonl")):
        (root / "crawl" / rel).write_text(body)
    found = list_inputs([f"{root}/crawl/**/*.jsonl"])
    assert [rel for _, rel in found] == ["2024/a.jsonl", "2024/b.jsonl", "2025/deep/c.jsonl"]
    assert all(p.startswith(f"{root}/crawl/") for p, _ in found)
    assert list_inputs([f"{root}/crawl/2024/b.jsonl"]) == [(f"{root}/crawl/2024/b.jsonl", "b.jsonl")]
    batches = list(read_file(found[0][0], found[0][1], "jsonl", "crawl", batch_size=10))
    assert [t for b in batches for t in b["text"]] == ["one", "two"]
    with pytest.raises(FileNotFoundError, match="matches no object"):
        list_inputs([f"{root}/crawl/**/*.warc.gz"])
    with pytest.raises(InputError, match="is a directory"):
        list_inputs([f"{root}/crawl/2024"])
