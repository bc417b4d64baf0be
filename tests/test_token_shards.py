"""Token shards on real text, written by production's writer (TokenShardWriter, number_token_files) from the
encoder's output: re-read through numpy.memmap and ShardSet, verified (flipped bytes, wrong tokenizer, edited
manifest), byte-identical whatever order the input shards finish in; a real >65,536-piece vocabulary as uint32."""

from __future__ import annotations

import json
import random
import shutil
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from pipelines.records import make_id
from pipelines.manifest import ShardIntegrityError
from pipelines.shard_reader import ShardSet, to_hf_dataset
from pipelines.hashing import document_keys
from pipelines.token_shards import TokenShardWriter, build_token_manifest
from pipelines.tokenizer import Tokenizer, TokenizerConfig, train_tokenizer
from reference import sample_for_training
from token_sets import write_token_set

TARGET_TOKENS = 40_000


def gutenberg_sample(corpora: Path, n: int) -> list[str]:
    paths = sorted((corpora / "gutenberg").glob("pg*.txt"))
    ids = [p.name for p in paths]
    return sample_for_training(ids, [p.read_text(encoding="utf-8") for p in paths], n=n, seed=0)


@pytest.fixture(scope="module")
def tok(corpora, tmp_path_factory) -> Tokenizer:
    info = train_tokenizer(gutenberg_sample(corpora, 3), tmp_path_factory.mktemp("tok") / "gutenberg", TokenizerConfig())
    return Tokenizer(info["model_path"])


@pytest.fixture(scope="module")
def docs(corpora) -> dict[str, str]:
    """Real documents: Shakespeare speeches and WikiText articles, with record-style ids."""
    speeches = (corpora / "tinyshakespeare" / "input.txt").read_text(encoding="utf-8").split("\n\n")
    out = {make_id("tinyshakespeare/input.txt", k): s for k, s in enumerate(speeches[:3000])}
    wiki = (corpora / "wikitext2_test" / "wiki.test.raw").read_text(encoding="utf-8")
    articles = [a for a in wiki.split("\n = ") if a.strip()]
    out.update({make_id("wikitext2_test/wiki.test.raw", k): a for k, a in enumerate(articles[:40])})
    out[make_id("edge/empty.txt", 0)] = ""  # an empty document still gets its eos
    return out


@pytest.fixture(scope="module")
def encoded(tok, docs) -> dict[str, np.ndarray]:
    ids = list(docs)
    return dict(zip(ids, tok.encode_batch([docs[i] for i in ids])))


def by_source(encoded: dict[str, np.ndarray]) -> dict[str, dict[str, np.ndarray]]:
    """The documents grouped into input shards by their source file (ids are `source#n`), in arrival order."""
    shards: dict[str, dict[str, np.ndarray]] = {}
    for doc_id, a in encoded.items():
        shards.setdefault(doc_id.rsplit("#", 1)[0] + "/00000", {})[doc_id] = a
    return shards


def write_set(out_dir: Path, tok: Tokenizer, shards: dict, run_id=None) -> Path:
    return write_token_set(out_dir, shards, target_tokens=TARGET_TOKENS, eos_id=tok.eos_id, dtype=tok.dtype,
                           tokenizer_sha256=tok.sha256, vocab_size=tok.vocab_size, extra={"source": "test"},
                           run_id=run_id)


def arrival_order(encoded: dict) -> list[str]:
    """Production's document order: input shards by name, each in arrival order."""
    return [d for _, docs in sorted(by_source(encoded).items()) for d in docs]


@pytest.fixture(scope="module")
def shard_dir(tmp_path_factory, tok, encoded) -> Path:
    out = tmp_path_factory.mktemp("shards")
    write_set(out, tok, by_source(encoded))
    return out


def copy_of(shard_dir: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "copy"
    shutil.copytree(shard_dir, dst)
    return dst


def test_shards_reread_through_memmap_equal_the_encoder_output(shard_dir, tok, encoded):
    manifest = json.loads((shard_dir / "manifest.json").read_text())
    assert len(manifest["shards"]) > 3
    assert manifest["dtype"] == "uint16" and manifest["eos_id"] == tok.eos_id == 2
    seen = []
    for entry in manifest["shards"]:
        flat = np.memmap(shard_dir / entry["path"], dtype="<u2", mode="r")
        index = pq.read_table(shard_dir / entry["index_path"]).to_pydict()
        expected = np.concatenate([np.append(encoded[d], tok.eos_id) for d in index["doc_id"]])
        assert np.array_equal(flat, expected)
        for d, off, n in zip(index["doc_id"], index["offset"], index["n_tokens"]):
            assert np.array_equal(flat[off : off + n], encoded[d]) and flat[off + n] == tok.eos_id
        assert entry["tokens"] == flat.size <= TARGET_TOKENS
        assert index["doc_key"] == document_keys(index["doc_id"]).tolist()
        seen += index["doc_id"]
    assert seen == arrival_order(encoded)  # every document once, in arrival order, none split
    assert manifest["totals"]["tokens"] == sum(len(a) + 1 for a in encoded.values())


def test_shard_set_maps_documents_back_to_their_ids(shard_dir, tok, encoded, docs):
    ss = ShardSet(shard_dir / "manifest.json", tokenizer_path=tok.model_path)
    assert ss.document_ids() == arrival_order(docs)
    assert ss.num_documents == len(docs) and ss.total_tokens == sum(len(a) + 1 for a in encoded.values())
    assert ss.dtype == np.dtype("<u2") and ss.vocab_size == tok.vocab_size
    for doc_id in random.Random(0).sample(sorted(docs), 50) + [make_id("edge/empty.txt", 0)]:
        assert np.array_equal(ss.document(doc_id), encoded[doc_id])
        assert tok.decode(ss.document(doc_id)) == docs[doc_id]
    with pytest.raises(KeyError, match="not-there"):
        ss.document("not-there")
    assert isinstance(ss.shard(0), np.memmap)


def test_token_range_across_shard_boundaries(shard_dir):
    ss = ShardSet(shard_dir / "manifest.json")
    everything = np.concatenate([np.asarray(ss.shard(i)) for i in range(ss.num_shards)])
    assert everything.size == ss.total_tokens
    sizes = [m["tokens"] for m in ss.shards_meta]
    k = next(i for i in range(len(sizes) - 2) if min(sizes[i:i + 3]) > 10)  # three files of > 10 tokens in a row
    boundary = sum(sizes[:k + 1])
    two_boundaries = boundary + sizes[k + 1]
    for start, stop in [(boundary - 5, boundary + 7), (boundary - 1, two_boundaries + 1), (0, ss.total_tokens),
                        (boundary, boundary), (ss.total_tokens - 3, ss.total_tokens), (3, 4)]:
        assert np.array_equal(ss.tokens(start, stop), everything[start:stop]), (start, stop)
    with pytest.raises(IndexError):
        ss.tokens(0, ss.total_tokens + 1)


def test_flipped_byte_in_a_shard_is_refused_naming_it(shard_dir, tmp_path):
    d = copy_of(shard_dir, tmp_path)
    path = d / json.loads((d / "manifest.json").read_text())["shards"][2]["path"]
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(ShardIntegrityError, match=rf"token shard {path.relative_to(d)}: sha256"):
        ShardSet(d / "manifest.json")
    ShardSet(d / "manifest.json", verify=False)  # same size: only the checksum can tell


def test_damaged_index_or_truncated_shard_is_refused(shard_dir, tmp_path):
    d = copy_of(shard_dir, tmp_path)
    entries = json.loads((d / "manifest.json").read_text())["shards"]
    idx = d / entries[1]["index_path"]
    data = bytearray(idx.read_bytes())
    data[10] ^= 0xFF
    idx.write_bytes(bytes(data))
    with pytest.raises(ShardIntegrityError, match=rf"token shard index {entries[1]['index_path']}"):
        ShardSet(d / "manifest.json")
    shard = d / entries[3]["path"]
    shard.write_bytes(shard.read_bytes()[:-2])
    with pytest.raises(ShardIntegrityError, match=rf"token shard {entries[3]['path']}: \d+ bytes"):
        ShardSet(d / "manifest.json", verify=False)


def test_a_different_tokenizer_is_refused_naming_it(shard_dir, corpora, tmp_path, tok):
    other = train_tokenizer(gutenberg_sample(corpora, 1), tmp_path / "other", TokenizerConfig(vocab_size=4000))
    with pytest.raises(ShardIntegrityError, match=r"tokenizer .*other\.model .* is not the tokenizer these shards were made with"):
        ShardSet(shard_dir / "manifest.json", tokenizer_path=other["model_path"])
    ShardSet(shard_dir / "manifest.json", tokenizer_path=tok.model_path, verify=False)


def test_edited_manifest_is_refused(shard_dir, tmp_path):
    d = copy_of(shard_dir, tmp_path)
    manifest = json.loads((d / "manifest.json").read_text())
    manifest["totals"]["tokens"] += 1
    (d / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ShardIntegrityError, match="manifest digest does not match"):
        ShardSet(d / "manifest.json")


def test_same_bytes_and_digest_whatever_order_the_input_shards_finish(shard_dir, tmp_path, tok, encoded):
    """Tasks finish in any order: the files are numbered by input shard name, so the manifest is the same."""
    shards = by_source(encoded)
    assert len(shards) == 3
    other = write_set(tmp_path / "reversed", tok, dict(reversed(list(shards.items()))), run_id="0123abcd")
    a = json.loads((shard_dir / "manifest.json").read_text())
    b = json.loads(other.read_text())
    assert a["digest"] == b["digest"] and a["shards"] == b["shards"]  # the MLflow run id is not part of the digest
    assert b["mlflow_run_id"] == "0123abcd" and a["mlflow_run_id"] is None
    names = sorted(p.relative_to(shard_dir).as_posix() for p in shard_dir.rglob("*") if p.is_file())
    assert names == sorted(p.relative_to(other.parent).as_posix() for p in other.parent.rglob("*") if p.is_file())
    for name in names:
        if name != "manifest.json":
            assert (shard_dir / name).read_bytes() == (other.parent / name).read_bytes(), name
    ShardSet(other)  # a run id attached after the fact still verifies


def test_to_hf_dataset_has_one_row_per_document(shard_dir, encoded):
    ds = to_hf_dataset(ShardSet(shard_dir / "manifest.json"))
    assert ds.num_rows == len(encoded)
    assert ds.column_names == ["id", "input_ids"]
    assert ds["id"] == arrival_order(encoded)
    for k in (0, 1, len(encoded) // 2, len(encoded) - 1):
        row = ds[k]
        assert row["input_ids"] == encoded[row["id"]].tolist()


def test_writer_closes_a_file_before_the_document_that_would_overflow_it(tmp_path):
    """Sizes with the eos 3, 4, 30, 5, 1 at a 10-token target: [a b] [c] [d e]; a document is never split."""
    sizes = {"a": 3, "b": 4, "c": 30, "d": 5, "e": 1}
    w = TokenShardWriter(tmp_path, "s/00000", 10, eos_id=2, dtype=np.uint16)
    w.add(list(sizes), [np.full(n - 1, 7, dtype=np.int64) for n in sizes.values()])
    entries = w.close()
    files = [pq.read_table(tmp_path / e["index_path"]).column("doc_id").to_pylist() for e in entries]
    assert files == [["a", "b"], ["c"], ["d", "e"]]
    assert [e["tokens"] for e in entries] == [7, 30, 6]
    assert [e["path"] for e in entries] == ["s/00000.0000.bin", "s/00000.0001.bin", "s/00000.0002.bin"]
    with pytest.raises(ValueError, match="'b': token id out of range for uint16"):
        TokenShardWriter(tmp_path / "x", "s", 100, eos_id=2, dtype=np.uint16).add(["a", "b"], [np.array([1]), np.array([70000])])
    with pytest.raises(ValueError, match="target_tokens must be positive"):
        TokenShardWriter(tmp_path / "y", "s", 0, eos_id=2, dtype=np.uint16)


def test_vocabulary_over_65536_pieces_is_stored_as_uint32(corpora, tmp_path):
    """A real 66,000-piece BPE model trained on ~10 MB of Gutenberg, its ids above 65,535 written
    as uint32 and read back."""
    texts, size = [], 0
    for text in gutenberg_sample(corpora, 12):
        texts.append(text)
        size += len(text)
        if size > 10_000_000:
            break
    t0 = time.perf_counter()
    info = train_tokenizer(texts, tmp_path / "big", TokenizerConfig(vocab_size=66_000))
    assert time.perf_counter() - t0 < 60
    big = Tokenizer(info["model_path"])
    assert big.vocab_size == 66_000 and big.dtype == np.uint32
    doc_texts = [t[:200_000] for t in texts[:3]]
    arrays = big.encode_batch(doc_texts)
    assert all(a.dtype == np.uint32 for a in arrays)
    assert max(int(a.max()) for a in arrays) > 65_535
    ids = [f"book-{k}" for k in range(len(arrays))]
    path = write_token_set(tmp_path / "shards", {"books/00000": dict(zip(ids, arrays))}, target_tokens=60_000,
                           eos_id=big.eos_id, dtype=big.dtype, tokenizer_sha256=big.sha256, vocab_size=big.vocab_size)
    manifest = json.loads(path.read_text())
    shards = manifest["shards"]
    ss = ShardSet(path, tokenizer_path=info["model_path"])
    assert ss.dtype == np.dtype("<u4") and manifest["dtype"] == "uint32"
    assert (tmp_path / "shards" / shards[0]["path"]).stat().st_size == 4 * shards[0]["tokens"]
    for doc_id, a, text in zip(ids, arrays, doc_texts):
        assert np.array_equal(ss.document(doc_id), a)
        assert big.decode(ss.document(doc_id)) == text
    with pytest.raises(ValueError, match="does not fit uint16"):
        build_token_manifest(shards, big.sha256, big.vocab_size, "uint16", None, {}, eos_id=big.eos_id)
