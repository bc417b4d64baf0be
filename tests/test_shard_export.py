"""Exporting token shards to Megatron-LM, datatrove and dolma/OLMo, read back with each format's own reader
logic: datatrove's own functions/classes (datatrove 0.10.1 is installed); Megatron-LM's and dolma/OLMo's
readers re-implemented from their sources in a few lines (cited at each reader). Every document's tokens,
the document count, order and ids are checked against ShardSet; exports are byte-identical run to run."""

from __future__ import annotations

import csv
import gzip
import hashlib
import json
import re
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
from token_sets import write_token_set
from train_fixture import build_shakespeare_shards

from pipelines.errors import UsageError
from pipelines.shard_export import FORMATS, export_shards
from pipelines.manifest import ShardIntegrityError
from pipelines.shard_reader import ShardSet

TARGET_TOKENS = 60_000  # tinyshakespeare (~627k tokens, 4 input shards) -> 13 files


@pytest.fixture(scope="module")
def shards(tmp_path_factory, corpora) -> dict:
    return build_shakespeare_shards(corpora, tmp_path_factory.mktemp("export-src"), target_tokens=TARGET_TOKENS)


def expected_documents(shard_set: ShardSet, include_eos: bool) -> list[tuple[str, np.ndarray]]:
    """(id, tokens) of every document in manifest order, from ShardSet.document()."""
    eos = np.array([shard_set.eos_id], dtype=np.int64)
    out = []
    for doc_id in shard_set.document_ids():
        tokens = shard_set.document(doc_id).astype(np.int64)
        out.append((doc_id, np.concatenate([tokens, eos]) if include_eos else tokens))
    return out


def read_jsonl_ids(path: Path) -> list[str]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


# --- Megatron-LM: megatron/core/datasets/indexed_dataset.py (_IndexReader.__init__, IndexedDataset.__init__
# and __getitem__, DType), NVIDIA/Megatron-LM commit 00caa53a, re-implemented (Megatron is not installable here).
MEGATRON_DTYPES = {1: np.uint8, 2: np.int8, 3: np.int16, 4: np.int32, 5: np.int64, 6: np.float64, 7: np.float32,
                   8: np.uint16}


def read_megatron(prefix: Path) -> tuple[np.dtype, list[np.ndarray]]:
    idx_path, bin_path = f"{prefix}.idx", f"{prefix}.bin"
    with open(idx_path, "rb") as stream:
        assert stream.read(9) == b"MMIDIDX\x00\x00", f"bad header, cannot read: {idx_path}"
        assert struct.unpack("<Q", stream.read(8))[0] == 1, f"bad version, cannot read: {idx_path}"
        dtype = MEGATRON_DTYPES[struct.unpack("<B", stream.read(1))[0]]
        sequence_count = struct.unpack("<Q", stream.read(8))[0]
        document_count = struct.unpack("<Q", stream.read(8))[0]
        offset = stream.tell()
    buf = np.memmap(idx_path, mode="r", order="C")
    lengths = np.frombuffer(buf, dtype=np.int32, count=sequence_count, offset=offset)
    pointers = np.frombuffer(buf, dtype=np.int64, count=sequence_count, offset=offset + lengths.nbytes)
    doc_indices = np.frombuffer(buf, dtype=np.int64, count=document_count,
                                offset=offset + lengths.nbytes + pointers.nbytes)
    assert offset + lengths.nbytes + pointers.nbytes + doc_indices.nbytes == buf.size  # nothing else in the file
    assert lengths.shape[0] == doc_indices[-1] == sequence_count  # IndexedDataset.__init__'s checks
    data = np.memmap(bin_path, mode="r", order="C")
    sequences = [np.frombuffer(data, dtype=dtype, count=int(n), offset=int(p)) for p, n in zip(pointers, lengths)]
    documents = [np.concatenate(sequences[a:b]) if b > a else np.zeros(0, dtype)
                 for a, b in zip(doc_indices[:-1], doc_indices[1:])]
    return np.dtype(dtype), documents


# --- dolma: python/dolma/tokenizer/reshard.py merge_group (csv.reader rows start,end,id,src,idx over the
# .csv.gz; np.memmap of the .npy with the tokenizer's dtype) and tokenizer.py (dtype =
# np.min_scalar_type(vocab_size - 1)), allenai/dolma; re-implemented (dolma needs a HF tokenizer download).
def read_dolma(npy_path: Path, vocab_size: int) -> list[tuple[str, str, int, np.ndarray]]:
    dtype = np.min_scalar_type(vocab_size - 1)
    memmap = np.memmap(npy_path, mode="r", dtype=dtype, shape=(npy_path.stat().st_size // dtype.itemsize,))
    csv_path = npy_path.with_suffix(".csv.gz")
    assert Path(npy_path).stem == Path(Path(csv_path).stem).stem  # TokensMetadataPaths.__post_init__
    out = []
    with gzip.open(csv_path, "rt", encoding="utf-8", newline="") as g:
        for start, end, id_, src, idx in csv.reader(g):
            out.append((id_, src, int(idx), np.asarray(memmap[int(start):int(end)])))
    return out


# --- OLMo: olmo/data/memmap_dataset.py MemMapDataset (_get_file_length, _read_chunk_from_memmap) and
# olmo/util.py get_document_lengths, allenai/OLMo commit 0b2af8c6; re-implemented (torch-free).
def olmo_chunks(paths: list[Path], chunk_size: int, memmap_dtype) -> list[np.ndarray]:
    item = np.dtype(memmap_dtype).itemsize
    chunks = []
    for path in paths:
        n = -(-path.stat().st_size // (item * chunk_size))  # math.ceil(file_size / (item_size * chunk_size))
        with open(path, "rb") as f:
            for index in range(n):
                f.seek(index * item * chunk_size)
                chunks.append(np.frombuffer(f.read(item * chunk_size), dtype=memmap_dtype).astype(np.int64))
    return chunks


def olmo_document_lengths(input_ids: np.ndarray, eos_token_id: int) -> np.ndarray:
    bounds = np.concatenate([[-1], np.flatnonzero(input_ids == eos_token_id),
                             [] if input_ids[-1] == eos_token_id else [input_ids.shape[0] - 1]])
    return np.diff(bounds).astype(np.int64)


def read_export(out: Path, fmt: str, vocab_size: int) -> tuple[list[str | None], list[np.ndarray], np.dtype]:
    """(ids, documents, token dtype) of a whole export, parts in export.json order, via the format's reader."""
    record = json.loads((out / "export.json").read_text())
    ids: list[str | None] = []
    docs: list[np.ndarray] = []
    dtype = None
    for part in record["parts"]:
        name = part["part"]
        if fmt == "megatron":
            dtype, part_docs = read_megatron(out / name)
            part_ids = read_jsonl_ids(out / f"{name}.doc_ids.jsonl")
        elif fmt == "datatrove":
            from datatrove.pipeline.tokens.merger import get_data_reader, load_doc_ends

            # DocumentTokenizerMerger.run: token size from the first line of the .ds.metadata, then
            # load_doc_ends(.ds.index) and get_data_reader(.ds) yield each document's bytes
            tokenizer_name, token_size = (out / f"{name}.ds.metadata").read_text().splitlines()[0].split("|")
            token_size = int(token_size)
            dtype = np.dtype(np.uint16 if token_size == 2 else np.uint32)  # DatatroveFileDataset._get_input_ids
            doc_ends = load_doc_ends(open(out / f"{name}.ds.index", "rb"))
            part_docs = [np.frombuffer(b, dtype=dtype)
                         for b in get_data_reader(open(out / f"{name}.ds", "rb"), doc_ends, nb_bytes=token_size)]
            part_ids = read_jsonl_ids(out / f"{name}.ds.doc_ids.jsonl")
        else:
            rows = read_dolma(out / f"{name}.npy", vocab_size)
            dtype = np.min_scalar_type(vocab_size - 1)
            assert [r[1] for r in rows] == [part["source_shard"]] * len(rows)
            assert [r[2] for r in rows] == list(range(1, len(rows) + 1))
            part_docs = [r[3] for r in rows]
            part_ids = [r[0] for r in rows]
        assert len(part_ids) == len(part_docs) == part["documents"]
        ids += part_ids
        docs += part_docs
    return ids, docs, np.dtype(dtype)


def check_files(out: Path, record: dict) -> None:
    listed = {f["path"] for f in record["files"]}
    assert listed | {"export.json"} == {p.name for p in out.iterdir()}
    for f in record["files"]:
        data = (out / f["path"]).read_bytes()
        assert len(data) == f["bytes"] and hashlib.sha256(data).hexdigest() == f["sha256"], f["path"]


@pytest.mark.parametrize("include_eos", [True, False], ids=["with-eos", "no-eos"])
@pytest.mark.parametrize("fmt", FORMATS)
def test_export_reads_back_every_document(shards, tmp_path, fmt, include_eos):
    shard_set = ShardSet(shards["manifest"])
    assert shard_set.num_shards >= 5
    out = tmp_path / fmt
    record = export_shards(shards["manifest"], out, fmt, include_eos=include_eos)
    check_files(out, record)
    expected = expected_documents(shard_set, include_eos)
    ids, docs, dtype = read_export(out, fmt, shard_set.vocab_size)
    assert dtype == np.dtype(np.uint16)  # vocab 512: every format's own rule picks uint16
    assert len(docs) == len(expected) == shard_set.num_documents == record["documents"] == shards["documents"]
    assert ids == [d for d, _ in expected]  # ids kept (sidecar or csv), in manifest order
    for (doc_id, want), got in zip(expected, docs):
        assert np.array_equal(got.astype(np.int64), want), doc_id
    n_eos = shard_set.num_documents if include_eos else 0
    assert record["tokens"] == sum(d.size for d in docs) == shard_set.total_tokens - shard_set.num_documents + n_eos
    assert record["source"]["manifest_digest"] == shard_set.manifest["digest"]
    assert record["include_eos"] is include_eos and record["format"] == fmt
    if include_eos:  # the token stream is the shard itself: the same bytes as the source shards
        token_files = [f["path"] for f in record["files"] if f["role"] == "tokens"]
        assert [(out / p).read_bytes() for p in token_files] == \
            [(shard_set.root / s["path"]).read_bytes() for s in shard_set.shards_meta]


def test_datatrove_own_dataset_reads_the_export(shards, tmp_path):
    """datatrove's DatatroveFolderDataset (the training-side reader): windows of seq_len+1 tokens over each
    .ds file, positions from the .ds.index restarting at every document end."""
    from datatrove.utils.dataset import DatatroveFolderDataset

    shard_set = ShardSet(shards["manifest"])
    out = tmp_path / "dt"
    export_shards(shards["manifest"], out, "datatrove")
    seq_len = 511
    dataset = DatatroveFolderDataset(str(out), seq_len=seq_len, token_size=2, return_positions=True)
    assert sorted(Path(f.file_path).name for f in dataset.files) == [f"part-{i:05d}.ds" for i in range(shard_set.num_shards)]
    n_windows = 0
    for f in dataset.files:
        i = int(Path(f.file_path).name[5:10])
        flat = np.asarray(shard_set.shard(i)).astype(np.int64)
        ends = np.fromfile(out / f"{Path(f.file_path).name}.index", dtype="<u8").astype(np.int64)
        assert len(f) == flat.size // (seq_len + 1)
        for j in range(len(f)):
            item = f[j]
            lo = j * (seq_len + 1)
            assert np.array_equal(item["input_ids"].numpy(), flat[lo:lo + seq_len + 1])
            g = np.arange(lo, lo + seq_len + 1)
            prev_end = np.concatenate([[0], ends])[np.searchsorted(ends, g, side="right")]
            assert np.array_equal(item["positions"].numpy(), g - np.maximum(prev_end, lo))
        n_windows += len(f)
    assert len(dataset) == n_windows > 0


def test_olmo_memmap_dataset_reads_the_dolma_export(shards, tmp_path):
    """OLMo's MemMapDataset chunks of the .npy files concatenate to every document followed by its eos, and
    its eos-based document lengths match the csv.gz metadata."""
    shard_set = ShardSet(shards["manifest"])
    out = tmp_path / "dolma"
    record = export_shards(shards["manifest"], out, "dolma")
    memmap_dtype = np.dtype(record["reader"]["memmap_dtype"])
    paths = [out / f"{p['part']}.npy" for p in record["parts"]]
    stream = np.concatenate(olmo_chunks(paths, 256, memmap_dtype))
    want = np.concatenate([t for _, t in expected_documents(shard_set, include_eos=True)])
    assert np.array_equal(stream, want)
    for path in paths:
        rows = read_dolma(path, shard_set.vocab_size)
        tokens = np.fromfile(path, dtype=memmap_dtype).astype(np.int64)
        assert np.array_equal(olmo_document_lengths(tokens, record["reader"]["eos_token_id"]),
                              [r[3].size for r in rows])


def test_exports_are_byte_identical(shards, tmp_path):
    """Same manifest -> the same bytes, whatever the folder and the chunk size used to stream."""
    for fmt in FORMATS:
        a = export_shards(shards["manifest"], tmp_path / f"{fmt}-a", fmt)
        b = export_shards(shards["manifest"], tmp_path / "elsewhere" / f"{fmt}-b", fmt, chunk_tokens=997)
        files_a = {p.name: p.read_bytes() for p in (tmp_path / f"{fmt}-a").iterdir()}
        files_b = {p.name: p.read_bytes() for p in (tmp_path / "elsewhere" / f"{fmt}-b").iterdir()}
        assert files_a == files_b and {k: v for k, v in a.items() if k != "path"} == \
            {k: v for k, v in b.items() if k != "path"}


@pytest.mark.parametrize("vocab_size, dtypes", [
    (65_520, {"megatron": "int32", "datatrove": "uint16", "dolma": "uint16"}),   # Megatron's < 65500 rule
    (100_000, {"megatron": "int32", "datatrove": "uint32", "dolma": "uint32"}),  # uint32 shards
])
def test_large_vocabularies_follow_each_formats_dtype_rule(tmp_path, vocab_size, dtypes):
    rng = np.random.default_rng(0)
    storage = np.uint16 if vocab_size <= 65_536 else np.uint32
    ids = [f"doc/{k:03d}" for k in range(40)]
    arrays = [rng.integers(0, vocab_size, size=int(rng.integers(0, 50)), dtype=np.int64).astype(storage) for _ in ids]
    arrays[3] = np.zeros(0, dtype=storage)  # an empty document: only its eos
    arrays[5][:1] = vocab_size - 1
    eos = vocab_size - 2
    arrays = [np.where(a == eos, 0, a).astype(storage) for a in arrays]
    src = tmp_path / "src"
    write_token_set(src, {"edge/00000": dict(zip(ids, arrays))}, target_tokens=300, eos_id=eos, dtype=storage,
                    tokenizer_sha256="0" * 64, vocab_size=vocab_size)
    shard_set = ShardSet(src / "manifest.json")
    assert shard_set.num_shards > 1
    for fmt in FORMATS:
        for include_eos in (True, False):
            out = tmp_path / f"{fmt}-{include_eos}"
            record = export_shards(src / "manifest.json", out, fmt, include_eos=include_eos)
            assert record["dtype"] == dtypes[fmt]
            got_ids, docs, _ = read_export(out, fmt, vocab_size)
            expected = expected_documents(shard_set, include_eos)
            assert got_ids == [d for d, _ in expected]
            for (doc_id, want), got in zip(expected, docs):
                assert np.array_equal(got.astype(np.int64), want), (fmt, doc_id)
    megatron_code = (tmp_path / "megatron-True" / "part-00000.idx").read_bytes()[17]
    assert megatron_code == 4  # DType.int32
    meta = (tmp_path / "datatrove-True" / "part-00000.ds.metadata").read_text().splitlines()[0]
    assert meta.endswith(f"|{2 if vocab_size <= 65_536 else 4}")


def test_bad_input_is_refused_naming_the_file(shards, tmp_path):
    src = tmp_path / "tokens"
    shutil.copytree(Path(shards["manifest"]).parent, src)
    manifest = src / "manifest.json"

    with pytest.raises(ValueError, match="unknown export format 'parquet'"):
        export_shards(manifest, tmp_path / "x", "parquet")
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "keep.txt").write_text("mine")
    with pytest.raises(UsageError, match="busy is not empty.*--force"):
        export_shards(manifest, busy, "dolma")
    assert (busy / "keep.txt").read_text() == "mine"
    a_file = tmp_path / "a_file"
    a_file.write_text("mine")
    with pytest.raises(UsageError, match="a_file is a file"):
        export_shards(manifest, a_file, "dolma")
    assert a_file.read_text() == "mine"
    # --force replaces what the folder (or file) held, once the export is complete
    for occupied in (busy, a_file):
        out = export_shards(manifest, occupied, "dolma", force=True)
        assert not (occupied / "keep.txt").exists() and (occupied / "export.json").is_file()
        assert sorted(p.name for p in occupied.iterdir()) == sorted(["export.json", *(f["path"] for f in out["files"])])

    # a flipped token in the middle of shard 3 (same size): found while streaming, nothing left behind
    shard3 = src / json.loads(manifest.read_text())["shards"][3]["path"]
    data = bytearray(shard3.read_bytes())
    data[len(data) // 2] ^= 0x01
    shard3.write_bytes(bytes(data))
    out = tmp_path / "out"
    with pytest.raises(ShardIntegrityError, match=re.escape(shard3.relative_to(src).as_posix())):
        export_shards(manifest, out, "megatron")
    assert not out.exists() and not (tmp_path / "out.partial").exists()

    # an edited manifest: its digest no longer matches
    m = json.loads(manifest.read_text())
    m["eos_id"] = 0
    manifest.write_text(json.dumps(m))
    with pytest.raises(ShardIntegrityError, match=r"manifest\.json.*digest"):
        export_shards(manifest, out, "datatrove")
    assert not out.exists()


def test_datatrove_metadata_is_what_the_merger_parses(shards, tmp_path):
    record = export_shards(shards["manifest"], tmp_path / "dt", "datatrove", tokenizer_name="my/tokenizer")
    lines = (tmp_path / "dt" / "part-00000.ds.metadata").read_text().splitlines()
    assert lines[0] == "my/tokenizer|2" and int(lines[1]) == record["parts"][0]["tokens"]
    with pytest.raises(ValueError, match="cannot hold"):
        export_shards(shards["manifest"], tmp_path / "dt2", "datatrove", tokenizer_name="a|b")


def test_the_cli_writes_what_the_function_writes(shards, tmp_path, capsys):
    from orchestration.cli import main

    assert main(["export-shards", str(shards["manifest"]), "--format", "megatron", "--out", str(tmp_path / "cli")]) == 0
    assert "exported" in capsys.readouterr().out
    export_shards(shards["manifest"], tmp_path / "fn", "megatron")
    assert (tmp_path / "cli" / "export.json").read_bytes() == (tmp_path / "fn" / "export.json").read_bytes()
    ids, docs, _ = read_export(tmp_path / "cli", "megatron", ShardSet(shards["manifest"]).vocab_size)
    assert len(ids) == len(docs) == shards["documents"]
    # a second export onto the same folder: one line, exit 2, the folder untouched; --force replaces it
    before = (tmp_path / "cli" / "export.json").read_bytes()
    assert main(["export-shards", str(shards["manifest"]), "--format", "dolma", "--out", str(tmp_path / "cli")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("tokenmill: error: export folder") and "--force" in err and "internal" not in err
    assert len(err.splitlines()) == 1 and (tmp_path / "cli" / "export.json").read_bytes() == before
    assert main(["export-shards", str(shards["manifest"]), "--format", "dolma", "--out", str(tmp_path / "cli"),
                 "--force"]) == 0
    assert json.loads((tmp_path / "cli" / "export.json").read_text())["format"] == "dolma"
