"""Exporting a token shard set, without re-tokenizing, to Megatron-LM, datatrove and dolma/OLMo files.

Every source shard (in manifest order) becomes one output part `part-{i:05d}` holding the same documents
in the same order (index row order). What a document is, in every format: its tokens FOLLOWED BY its eos
(`include_eos=True`, the default): our shards store one eos after each document, and each target format
expects it in the stream (Megatron's `preprocess_data.py --append-eod`, datatrove's tokenizer post-processor
`$A <EOS>` with `.ds.index` ends after the eos, dolma's `Tokenizer.add_special_tokens` with metadata `end`
after the eos and OLMo's `MemMapDataset` finding document boundaries by `eos_token_id`). With
`include_eos=False` a document is exactly `ShardSet.document(doc_id)` (no eos anywhere in the output).

Layouts (little-endian; each written from its writer's source, the versions named in the test):

* megatron (NVIDIA/Megatron-LM `megatron/core/datasets/indexed_dataset.py`): `part-i.bin` the raw tokens;
  `part-i.idx` = b"MMIDIDX\\x00\\x00", <Q version 1, <B dtype code (`DType`: 8 uint16, 4 int32), <Q
  sequence count n, <Q document count n+1, int32[n] sequence lengths, int64[n] byte pointers, int64[n+1]
  document indices 0..n (one sequence per document). dtype per `DType.optimal_dtype(vocab_size)`: uint16
  when vocab_size < 65500, else int32. Megatron keeps no ids: `part-i.doc_ids.jsonl` has one JSON string
  (the id) per line, line k = sequence k. `megatron_data_args.txt` lists the prefixes, for
  `--data-args-path` (relative to the export folder: run from there or edit the paths).
* datatrove (datatrove 0.10.1 `pipeline/tokens/tokenizer.py` TokenizedFile, `merger.py`): `part-i.ds`
  the raw tokens; `part-i.ds.index` <u8 end (exclusive, in tokens) of each document; `part-i.ds.metadata`
  = "{tokenizer_name}|{token_size}\\n{tokens}\\n{humanized}" as `write_final_metadata` writes it. token
  size 2 (uint16) when vocab_size <= 65536, else 4 (uint32). Ids: `part-i.ds.doc_ids.jsonl` as above
  (the name does not end in `.ds`, so datatrove's `*.ds` globs skip it).
* dolma (allenai/dolma `python/dolma/tokenizer/memmap_writer.py`, `data_types.MemmapMetadata`,
  `reshard.py`): `part-i.npy` a raw memmap (no .npy header, as dolma writes it) of
  `np.min_scalar_type(vocab_size - 1)` tokens; `part-i.csv.gz` one csv row per document
  `start,end,id,src,loc` (token offsets, end exclusive; src = the source shard's manifest path, loc = the
  document's 1-based row in that shard's index, like dolma's 1-based source line). Read by OLMo's
  `MemMapDataset(..., memmap_dtype=...)`.

`export.json` records the format, the source manifest digest, counts and every file with its sha256.
The export is streamed shard by shard in chunks (memory: one shard's index and one chunk of tokens),
written into `OUT.partial/` and renamed to OUT at the end; each source shard and index is checked against
its manifest sha256 while it is read (one pass), and the same manifest gives byte-identical files.
No Ray / MLflow.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
import shutil
import struct
from pathlib import Path

import numpy as np

from pipelines import storage
from pipelines.errors import UsageError
from pipelines.manifest import ShardIntegrityError
from pipelines.shard_reader import ShardSet
from pipelines.hashing import sha256_file
FORMATS = ("megatron", "datatrove", "dolma")
EXPORT_KIND = "token_shards_export"
EXPORT_VERSION = 1
MEGATRON_INDEX_HEADER = b"MMIDIDX\x00\x00"
MEGATRON_DTYPE_CODES = {"uint16": 8, "int32": 4}  # megatron.core.datasets.indexed_dataset.DType
DEFAULT_CHUNK_TOKENS = 1 << 24
_PARTIAL_MARK = ".tokenmill-export-partial"


def export_dtype(fmt: str, vocab_size: int) -> np.dtype:
    """The token dtype `fmt`'s own tokenizer would pick for `vocab_size` (little-endian)."""
    if vocab_size <= 0:
        raise ValueError(f"vocab_size must be positive, got {vocab_size}")
    if fmt == "megatron":  # DType.optimal_dtype
        if vocab_size > 2**31:
            raise ValueError(f"vocab size {vocab_size} does not fit Megatron's int32 tokens")
        dt = np.dtype(np.uint16) if vocab_size < 65500 else np.dtype(np.int32)
    elif fmt == "datatrove":  # PipelineStepWithTokenizer.token_size
        dt = np.dtype(np.uint16) if vocab_size <= np.iinfo(np.uint16).max + 1 else np.dtype(np.uint32)
    elif fmt == "dolma":  # dolma Tokenizer.dtype
        dt = np.min_scalar_type(vocab_size - 1)
    else:
        raise ValueError(f"unknown export format {fmt!r}; expected one of {', '.join(FORMATS)}")
    return dt.newbyteorder("<")


class _HashingWriter:
    """A binary file written once, front to back, hashed as it goes."""

    def __init__(self, path: Path):
        self.path = path
        self._f = open(path, "wb")
        self._sha = hashlib.sha256()
        self.bytes = 0

    def write(self, data: bytes) -> None:
        self._f.write(data)
        self._sha.update(data)
        self.bytes += len(data)

    def close(self) -> dict:
        self._f.close()
        return {"sha256": self._sha.hexdigest(), "bytes": self.bytes}


def _stream_shard(shard_set: ShardSet, i: int, out: _HashingWriter, out_dt: np.dtype, include_eos: bool,
                  chunk_tokens: int, verify: bool) -> None:
    """Copy shard i's tokens into `out` as `out_dt`, chunk by chunk, dropping each eos unless include_eos,
    checking every eos position and (verify) the shard's sha256 against the manifest."""
    meta = shard_set.shards_meta[i]
    path = shard_set.root / meta["path"]
    idx = shard_set.index(i)  # cached by ShardSet until export_shards drops it
    eos_pos = idx["offset"] + idx["n_tokens"]  # sorted, one per document
    src_dt = shard_set.dtype
    limit = np.iinfo(out_dt).max
    sha = hashlib.sha256()
    total = int(meta["tokens"])
    with path.open("rb") as f:  # a local file, or streamed from object storage
        start = 0
        while start < total:
            n = min(chunk_tokens, total - start)
            data = f.read(n * src_dt.itemsize)
            if len(data) != n * src_dt.itemsize:
                raise ShardIntegrityError(f"token shard {meta['path']}: ends at token {start + len(data) // src_dt.itemsize}, "
                                          f"the manifest says {total} tokens")
            sha.update(data)
            chunk = np.frombuffer(data, dtype=src_dt)
            lo, hi = np.searchsorted(eos_pos, [start, start + n])
            local = eos_pos[lo:hi] - start
            if not np.all(chunk[local] == shard_set.eos_id):
                bad = int(local[np.argmax(chunk[local] != shard_set.eos_id)]) + start
                raise ShardIntegrityError(f"token shard {meta['path']}: token {bad} should be the eos "
                                          f"({shard_set.eos_id}) closing a document, found {int(chunk[bad - start])}")
            if not include_eos and local.size:
                keep = np.ones(n, dtype=bool)
                keep[local] = False
                chunk = chunk[keep]
            if chunk.dtype != out_dt:
                if chunk.size and int(chunk.max()) > limit:
                    raise ValueError(f"token shard {meta['path']}: token id {int(chunk.max())} does not fit "
                                     f"{out_dt.name} (vocab size {shard_set.vocab_size})")
                chunk = chunk.astype(out_dt)
            out.write(chunk.tobytes())
            start += n
    if verify and sha.hexdigest() != meta["sha256"]:
        raise ShardIntegrityError(f"token shard {meta['path']}: sha256 {sha.hexdigest()[:12]}... does not match the "
                                  f"manifest ({meta['sha256'][:12]}...)")


def _write_bytes(path: Path, data: bytes) -> dict:
    path.write_bytes(data)
    return {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}


def _doc_ids_jsonl(doc_ids: list[str]) -> bytes:
    return "".join(json.dumps(d, ensure_ascii=False) + "\n" for d in doc_ids).encode("utf-8")


def _megatron_index(lengths: np.ndarray, itemsize: int, dtype_code: int) -> bytes:
    n = len(lengths)
    pointers = np.zeros(n, dtype="<i8")
    np.cumsum(lengths[:-1] * itemsize, out=pointers[1:])
    return b"".join([
        MEGATRON_INDEX_HEADER, struct.pack("<Q", 1), struct.pack("<B", dtype_code),
        struct.pack("<Q", n), struct.pack("<Q", n + 1),
        lengths.astype("<i4").tobytes(), pointers.tobytes(), np.arange(n + 1, dtype="<i8").tobytes(),
    ])


def _humanize_tokens(n: int) -> str:
    try:
        import humanize  # what datatrove's write_final_metadata uses (a datatrove dependency)
        return humanize.metric(n, unit="T")
    except ImportError:
        return f"{n} T"


def _dolma_metadata(starts: np.ndarray, ends: np.ndarray, doc_ids: list[str], src: str) -> bytes:
    text = io.StringIO(newline="")
    w = csv.writer(text)  # dolma's MemmapWriter: csv.writer rows of MemmapMetadata(start, end, id, src, loc)
    for k, (s, e, d) in enumerate(zip(starts.tolist(), ends.tolist(), doc_ids)):
        w.writerow([s, e, d, src, k + 1])
    raw = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz:  # no name, no time: deterministic
        gz.write(text.getvalue().encode("utf-8"))
    return raw.getvalue()


def _refuse_occupied(out, force: bool) -> None:
    if force:
        return
    if out.exists() and not out.is_dir():
        raise UsageError(f"export folder {out} is a file: give a new or empty folder, or --force to replace it")
    if out.is_dir() and any(out.iterdir()):
        raise UsageError(f"export folder {out} is not empty: give a new or empty folder, or --force to replace "
                         "what it holds")


def _prepare_out_dir(out_dir: Path, force: bool) -> Path:
    _refuse_occupied(out_dir, force)
    partial = out_dir.with_name(out_dir.name + ".partial")
    if partial.exists():
        if not (partial / _PARTIAL_MARK).is_file():
            raise UsageError(f"{partial} exists and is not an unfinished export of this tool: remove it first")
        shutil.rmtree(partial)  # left by an export that crashed
    partial.mkdir(parents=True)
    (partial / _PARTIAL_MARK).write_bytes(b"")
    return partial


def export_shards(manifest_path, out_dir, fmt: str, *, include_eos: bool = True, verify: bool = True,
                  tokenizer_name: str | None = None, chunk_tokens: int = DEFAULT_CHUNK_TOKENS,
                  force: bool = False) -> dict:
    """Export the token shard set of `manifest_path` to `out_dir` (new or empty) in format `fmt`.

    fmt: "megatron" (`.bin` + `.idx` + ids sidecar), "datatrove" (`.ds` + `.ds.index` + `.ds.metadata`
    + ids sidecar) or "dolma" (raw `.npy` memmap + `.csv.gz` metadata with the ids); one output part per
    source shard, documents in manifest order. See the module docstring for the exact layouts.
    include_eos: each exported document ends with the manifest's eos token (default, as the shards store
    it and as each format's own tokenizer writes it); False exports the bare document tokens.
    verify: check every shard's and index's sha256 against the manifest while streaming (one read).
    tokenizer_name: the name datatrove's `.ds.metadata` records (default "tokenmill-sha256-<sha256>").
    Raises ShardIntegrityError (a ValueError naming the file) on a manifest, shard or index that does
    not verify, UsageError when out_dir is a file or not empty (unless `force`: then what it holds is replaced
    once the export is complete), ValueError on an unknown format. Nothing is left under out_dir on failure. Returns the content of `out_dir/export.json` plus "path" (its path).
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; expected one of {', '.join(FORMATS)}")
    if chunk_tokens <= 0:
        raise ValueError(f"chunk_tokens must be positive, got {chunk_tokens}")
    shard_set = ShardSet(manifest_path, verify=False)  # manifest digest + sizes now; sha256 while streaming
    m = shard_set.manifest
    if tokenizer_name is None:
        tokenizer_name = f"tokenmill-sha256-{shard_set.tokenizer_sha256}"
    if "|" in tokenizer_name or "\n" in tokenizer_name:
        raise ValueError(f"tokenizer_name {tokenizer_name!r}: datatrove's metadata cannot hold '|' or newlines")
    out_dt = export_dtype(fmt, shard_set.vocab_size)
    if not 0 <= shard_set.eos_id <= np.iinfo(out_dt).max:
        raise ValueError(f"{shard_set.manifest_path}: eos id {shard_set.eos_id} does not fit {out_dt.name}")

    dest = storage.path(out_dir)
    if storage.is_uri(dest):  # built in a local folder, uploaded whole at the end
        _refuse_occupied(dest, force)
        out_dir = storage.scratch_for(dest, directory=True) / "export"
    else:
        out_dir = dest
    partial = _prepare_out_dir(out_dir, force)
    files: list[dict] = []
    parts: list[dict] = []
    try:
        for i in range(shard_set.num_shards):
            meta = shard_set.shards_meta[i]
            if verify:
                actual = sha256_file(shard_set.root / meta["index_path"])
                if actual != meta["index_sha256"]:
                    raise ShardIntegrityError(f"token shard index {meta['index_path']}: sha256 {actual[:12]}... does "
                                              f"not match the manifest ({meta['index_sha256'][:12]}...)")
            idx = shard_set.index(i)
            doc_ids = idx["doc_id"]
            lengths = idx["n_tokens"] + (1 if include_eos else 0)
            if fmt == "megatron" and lengths.size and int(lengths.max()) > np.iinfo(np.int32).max:
                raise ValueError(f"token shard {meta['path']}: a document of {int(lengths.max())} tokens does not fit "
                                 "Megatron's int32 sequence lengths")
            ends = np.cumsum(lengths, dtype=np.int64)
            name = f"part-{i:05d}"
            token_name = {"megatron": f"{name}.bin", "datatrove": f"{name}.ds", "dolma": f"{name}.npy"}[fmt]
            writer = _HashingWriter(partial / token_name)
            try:
                _stream_shard(shard_set, i, writer, out_dt, include_eos, chunk_tokens, verify)
            finally:
                token_info = writer.close()
            part_files = [{"path": token_name, "role": "tokens", **token_info}]
            if fmt == "megatron":
                part_files.append({"path": f"{name}.idx", "role": "index", **_write_bytes(
                    partial / f"{name}.idx", _megatron_index(lengths, out_dt.itemsize, MEGATRON_DTYPE_CODES[out_dt.name]))})
                part_files.append({"path": f"{name}.doc_ids.jsonl", "role": "doc_ids", **_write_bytes(
                    partial / f"{name}.doc_ids.jsonl", _doc_ids_jsonl(doc_ids))})
            elif fmt == "datatrove":
                part_files.append({"path": f"{name}.ds.index", "role": "index", **_write_bytes(
                    partial / f"{name}.ds.index", ends.astype("<u8").tobytes())})
                n_out = int(ends[-1]) if ends.size else 0
                text = "\n".join([f"{tokenizer_name}|{out_dt.itemsize}", str(n_out), _humanize_tokens(n_out)])
                part_files.append({"path": f"{name}.ds.metadata", "role": "metadata", **_write_bytes(
                    partial / f"{name}.ds.metadata", text.encode("utf-8"))})
                part_files.append({"path": f"{name}.ds.doc_ids.jsonl", "role": "doc_ids", **_write_bytes(
                    partial / f"{name}.ds.doc_ids.jsonl", _doc_ids_jsonl(doc_ids))})
            else:
                part_files.append({"path": f"{name}.csv.gz", "role": "metadata", **_write_bytes(
                    partial / f"{name}.csv.gz", _dolma_metadata(ends - lengths, ends, doc_ids, meta["path"]))})
            files += part_files
            shard_set._indexes.pop(i, None)  # ShardSet caches every index it reads: keep one shard's in memory
            parts.append({"part": name, "source_shard": meta["path"], "source_sha256": meta["sha256"],
                          "documents": len(doc_ids), "tokens": int(ends[-1]) if ends.size else 0})

        extra_files = []
        if fmt == "megatron":
            text = "".join(f"{p['part']}\n" for p in parts)
            extra_files.append({"path": "megatron_data_args.txt", "role": "data_args", **_write_bytes(
                partial / "megatron_data_args.txt", text.encode("utf-8"))})
        if fmt == "megatron":
            reader = {"dtype_code": MEGATRON_DTYPE_CODES[out_dt.name], "prefixes": [p["part"] for p in parts],
                      "data_args_path": "megatron_data_args.txt"}
        elif fmt == "datatrove":
            reader = {"token_size": out_dt.itemsize, "tokenizer_name": tokenizer_name}
        else:
            reader = {"memmap_dtype": out_dt.name, "eos_token_id": shard_set.eos_id}
        record = {
            "kind": EXPORT_KIND,
            "export_version": EXPORT_VERSION,
            "format": fmt,
            "source": {"manifest_digest": m["digest"], "tokenizer_sha256": shard_set.tokenizer_sha256,
                       "vocab_size": shard_set.vocab_size, "eos_id": shard_set.eos_id, "dtype": shard_set.dtype.name,
                       "documents": shard_set.num_documents, "tokens": shard_set.total_tokens},
            "include_eos": include_eos,
            "dtype": out_dt.name,
            "byte_order": "little",
            "ids": {"megatron": "sidecar part-*.doc_ids.jsonl (one JSON string per line, line k = sequence k)",
                    "datatrove": "sidecar part-*.ds.doc_ids.jsonl (one JSON string per line, line k = document k)",
                    "dolma": "id column of part-*.csv.gz (start,end,id,src,loc)"}[fmt],
            "documents": sum(p["documents"] for p in parts),
            "tokens": sum(p["tokens"] for p in parts),
            "reader": reader,
            "parts": parts,
            "files": files + extra_files,
        }
        (partial / "export.json").write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
        (partial / _PARTIAL_MARK).unlink()
        if out_dir.is_dir() and not out_dir.is_symlink():
            shutil.rmtree(out_dir)  # empty, or --force
        elif out_dir.exists() or out_dir.is_symlink():
            out_dir.unlink()  # a file, with --force
        partial.rename(out_dir)
        if out_dir != dest:
            if force and dest.is_file():
                dest.unlink()
            elif force:
                dest.rmtree()
            storage.publish(out_dir, dest)
            shutil.rmtree(out_dir.parent, ignore_errors=True)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return {**record, "path": str(dest / "export.json")}
