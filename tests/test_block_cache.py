"""Remote token shards read by byte ranges (pipelines/block_cache.py) on an in-process object store (fsspec's
memory://, through the same pyarrow filesystem surface as S3): the same windows as the local memmap, a bounded
cache, blocks fetched ahead, a corrupted block named, a restarted reader keeping its blocks. The S3 (moto)
run is tests/integration/test_object_store.py; speed is benchmarks/bench_remote_shards.py."""

from __future__ import annotations

import hashlib
import uuid

import numpy as np
import pyarrow.parquet as pq
import pytest

from model.data import TrainingData
from model.mixture import MixtureData, Phase
from pipelines import storage
from pipelines.block_cache import BlockCache
from pipelines.manifest import ShardIntegrityError
from pipelines.shard_reader import ShardSet
from pipelines.token_shards import BLOCK_BYTES, BLOCK_SHA256_KEY
from tests.support.token_sets import write_token_set

SEQ = 64


@pytest.fixture(scope="module")
def token_set(tmp_path_factory):
    """~1.2 MB of uint16 tokens in 4 input shards (files of up to 150k tokens: 5 blocks each), locally and
    copied to a fresh memory:// bucket."""
    rng = np.random.default_rng(7)
    local = tmp_path_factory.mktemp("tokens")
    shards = {f"s{j}": {f"s{j}-d{i}": rng.integers(1, 30_000, int(rng.integers(50, 4_000))).astype(np.uint16)
                        for i in range(80)} for j in range(4)}
    manifest = write_token_set(local, shards, target_tokens=150_000, eos_id=0, dtype="uint16",
                               tokenizer_sha256="0" * 64, vocab_size=32_000)
    remote = storage.path(f"memory://shards-{uuid.uuid4().hex[:8]}/tokens")
    for f in sorted(local.iterdir()):
        (remote / f.name).write_bytes(f.read_bytes())
    return manifest, remote / "manifest.json"


def test_the_block_table_is_the_sha256_of_each_64k_of_the_file(token_set):
    manifest, _ = token_set
    ss = ShardSet(manifest)
    assert ss.num_shards >= 8
    for meta in ss.shards_meta:
        data = (manifest.parent / meta["path"]).read_bytes()
        table = pq.read_schema(manifest.parent / meta["index_path"]).metadata[BLOCK_SHA256_KEY]
        expected = b"".join(hashlib.sha256(data[o:o + BLOCK_BYTES]).digest() for o in range(0, len(data), BLOCK_BYTES))
        assert meta["block_bytes"] == BLOCK_BYTES and table == expected and len(table) == 32 * -(-len(data) // BLOCK_BYTES)


def test_range_reads_give_the_local_windows_through_a_bounded_cache(token_set, tmp_path, monkeypatch):
    manifest, remote = token_set
    monkeypatch.setenv("TOKENMILL_CACHE", str(tmp_path / "objects"))
    cache = BlockCache(tmp_path / "blocks", max_bytes=4 * BLOCK_BYTES)
    far = ShardSet(remote, verify=True, cache=cache)  # indexes hashed, block tables checked; no shard downloaded
    assert not list((tmp_path / "objects").rglob("*.bin"))
    near = TrainingData(ShardSet(manifest), SEQ, seed=3, val_fraction=0.05)
    data = TrainingData(far, SEQ, seed=3, val_fraction=0.05)
    n = data.train.num_windows
    for first in range(0, n, 97):
        count = min(97, n - first)
        assert all(np.array_equal(a, b) for a, b in zip(data.train.windows(first, count), near.train.windows(first, count)))
    assert np.array_equal(far.tokens(0, far.total_tokens), ShardSet(manifest).tokens(0, far.total_tokens))
    assert cache.peak_bytes <= 4 * BLOCK_BYTES and cache.stats["evicted"] > 0
    assert len(list((tmp_path / "blocks").iterdir())) <= 4
    cache.close()


def test_blocks_are_fetched_ahead_and_a_restarted_reader_keeps_them(token_set, tmp_path):
    _, remote = token_set
    cache = BlockCache(tmp_path / "blocks", max_bytes=64 * BLOCK_BYTES)
    data = TrainingData(ShardSet(remote, cache=cache), SEQ, seed=3, val_fraction=0.05)
    batch, world = 16, 2
    data.rank_batch(batch, 1, world)
    data.prefetch(batch, 1, world, steps=3)
    cache.drain()
    missed = cache.stats["missed"]
    for _ in range(3):
        data.advance(batch)
        data.rank_batch(batch, 1, world)
    assert cache.stats["prefetched"] > 0 and cache.stats["missed"] == missed  # the 3 steps read no block themselves
    kept = set(p.name for p in (tmp_path / "blocks").iterdir())
    cache.close()
    again = BlockCache(tmp_path / "blocks", max_bytes=64 * BLOCK_BYTES)
    data2 = TrainingData(ShardSet(remote, cache=again), SEQ, seed=3, val_fraction=0.05)
    data2.position = data.position
    data2.rank_batch(batch, 1, world)
    assert again.stats["missed"] == 0 and again.stats["hits"] > 0 and again.bytes == sum(
        (tmp_path / "blocks" / k).stat().st_size for k in kept)
    again.close()


def test_a_mixture_fetches_ahead_from_every_source(token_set, tmp_path):
    manifest, remote = token_set
    cache = BlockCache(tmp_path / "blocks", max_bytes=64 * BLOCK_BYTES)
    sources = [TrainingData(ShardSet(remote, cache=cache), SEQ, seed=s, val_fraction=0.05) for s in (1, 2)]
    local = [TrainingData(ShardSet(manifest), SEQ, seed=s, val_fraction=0.05) for s in (1, 2)]
    far, near = (MixtureData(["a", "b"], srcs, [Phase(1, (0.7, 0.3))], 20, seed=5) for srcs in (sources, local))
    far.rank_batch(20, 0, 1)
    far.prefetch(20, 0, 1, steps=2)
    cache.drain()
    missed = cache.stats["missed"]
    for _ in range(2):
        far.advance(20)
        near.advance(20)
        assert all(np.array_equal(a, b) for a, b in zip(far.rank_batch(20, 0, 1), near.rank_batch(20, 0, 1)))
    assert cache.stats["missed"] == missed and far.step == 2
    cache.close()


def test_a_corrupted_block_is_named_and_the_others_still_read(token_set, tmp_path):
    manifest, remote = token_set
    bucket = storage.path(f"memory://bad-{uuid.uuid4().hex[:8]}/tokens")
    for f in sorted(manifest.parent.iterdir()):
        (bucket / f.name).write_bytes(f.read_bytes())
    ss = ShardSet(manifest)
    i = next(i for i, m in enumerate(ss.shards_meta) if m["bytes"] > 2 * BLOCK_BYTES)
    meta = ss.shards_meta[i]
    data = bytearray((manifest.parent / meta["path"]).read_bytes())
    data[BLOCK_BYTES + 10] ^= 0xFF  # one byte of block 1
    (bucket / meta["path"]).write_bytes(bytes(data))
    far = ShardSet(bucket / "manifest.json", verify=False, cache=BlockCache(tmp_path / "b", 8 * BLOCK_BYTES))
    assert np.array_equal(far.shard(i)[:100], ss.shard(i)[:100])  # block 0 is intact
    with pytest.raises(ShardIntegrityError, match=rf"{meta['path']}: block 1 \(bytes {BLOCK_BYTES}-{2 * BLOCK_BYTES}\)"):
        far.shard(i)[BLOCK_BYTES // 2: BLOCK_BYTES // 2 + 10]
    assert not list((tmp_path / "b").glob("*.00000001"))  # a bad block is never kept


def test_a_short_block_table_is_refused_when_the_set_opens(token_set, tmp_path):
    manifest, _ = token_set
    bucket = storage.path(f"memory://short-{uuid.uuid4().hex[:8]}/tokens")
    ss = ShardSet(manifest)
    meta = ss.shards_meta[0]
    for f in sorted(manifest.parent.iterdir()):
        (bucket / f.name).write_bytes(f.read_bytes())
    table = pq.read_table(manifest.parent / meta["index_path"])
    bad = table.replace_schema_metadata({BLOCK_SHA256_KEY: table.schema.metadata[BLOCK_SHA256_KEY][:-32]})
    pq.write_table(bad, tmp_path / "idx.parquet", compression="zstd")
    (bucket / meta["index_path"]).write_bytes((tmp_path / "idx.parquet").read_bytes())
    far = ShardSet(bucket / "manifest.json", verify=False, cache=BlockCache(tmp_path / "b", 8 * BLOCK_BYTES))
    with pytest.raises(ShardIntegrityError, match=rf"{meta['index_path']}: \d+ block checksums, the shard's"):
        far.shard(0)[:10]
