"""Token shards: flat little-endian token files with a per-document index, and their manifest.

Layout (all paths relative to the folder holding `manifest.json`):

- The tokenize stage writes, for each input shard `S` (a pipeline shard name such as
  `python-docs/faq/general.html/00000`), files `S.{j:04d}.bin` and `S.{j:04d}.idx.parquet`, j = 0, 1, ...
  A `.bin` file is the file's documents in the order they arrived (the input shard's order), each
  document's tokens followed by one eos token, as a flat array of little-endian uint16 (vocabularies up
  to 65,536 pieces) or uint32; nothing else (no header), so `np.memmap(path, dtype="<u2")` reads it.
- A file holds at most `target_tokens` tokens (eos included), except a document longer than that, which
  gets a file of its own; a document is never split. A file is closed before the document that would
  take it over the target (`TokenShardWriter`, the only writer).
- `.idx.parquet` has one row per document: `doc_id` (string), `offset` (int64, the position of its first
  token in the file), `n_tokens` (int64, its token count WITHOUT the eos, which sits at
  `offset + n_tokens`) and `doc_key` (uint64, `pipelines.hashing.document_key(doc_id)`, so a training
  job splits train/validation without hashing a string). Its schema metadata `tokenmill.block_sha256` holds
  the raw 32-byte sha256 of each consecutive `BLOCK_BYTES` (64 KiB) block of the `.bin` file (the last one
  shorter), concatenated: a reader of byte ranges (a remote shard read through `pipelines.block_cache`)
  verifies every block it fetches, and the index's own sha256 in the manifest covers the table.
- `manifest.json` (`build_token_manifest`): `format_version` (1), `kind` ("token_shards"),
  `tokenizer_sha256`, `dtype` ("uint16" | "uint32"), `byte_order` ("little"), `vocab_size`, `eos_id`,
  `shards` (one entry per file: `shard` (its global number), `path`, `index_path`, `tokens`,
  `documents`, `sha256`, `index_sha256`, `bytes`, `block_bytes`), `totals` (`tokens`, `documents`, `bytes`), `extra`
  (the input stage and its digest), `mlflow_run_id`, and `digest`: the sha256 of the canonical JSON of
  everything but `digest` and `mlflow_run_id`. Files are numbered by input shard name, then j
  (`number_token_files`), so the manifest does not depend on the order in which tasks finished.

The bytes of a file depend only on its input shard's documents and the tokenizer: the same corpus and
tokenizer give byte-identical files and the same digest on any cluster size.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipelines import storage
from pipelines.hashing import canonical_sha256, document_keys, sha256_file

FORMAT_VERSION = 1
KIND = "token_shards"
# The unit of a range read and its checksum. A training window is 0.5-32 KB (seq_len x 2-4 bytes), so a
# 64 KiB block reads 2-128x the bytes a window needs, and its 32-byte digest costs 1/2048 of the shard in
# the index (64 KiB per 128 MB shard); a 1 MiB block would read up to 2,000x per window.
BLOCK_BYTES = 1 << 16
BLOCK_SHA256_KEY = b"tokenmill.block_sha256"


def storage_dtype(dtype) -> np.dtype:
    """uint16 or uint32, little-endian, whatever the machine's byte order."""
    dt = np.dtype(dtype)
    if dt not in (np.dtype(np.uint16), np.dtype(np.uint32)):
        raise ValueError(f"token dtype must be uint16 or uint32, got {dt}")
    return dt.newbyteorder("<")


def number_token_files(files_by_shard: Mapping[str, list[dict]]) -> list[dict]:
    """The manifest's `shards` list: each input shard's file entries (as `TokenShardWriter.close()` returns
    them), input shards in name order, each file given its global number `shard`."""
    entries = [e for name in sorted(files_by_shard) for e in files_by_shard[name]]
    return [{**e, "shard": k} for k, e in enumerate(entries)]


def token_manifest_digest(manifest: dict) -> str:
    """sha256 of the canonical JSON of the manifest without `digest` and `mlflow_run_id` (the run id is
    attached after the fact and does not change what the shards are)."""
    body = {k: v for k, v in manifest.items() if k not in ("digest", "mlflow_run_id")}
    return canonical_sha256(body)


def build_token_manifest(shards: list[dict], tokenizer_sha256: str, vocab_size: int, dtype: str,
                         mlflow_run_id: str | None, extra: dict, *, eos_id: int) -> dict:
    """The manifest of a set of token shards; `extra` (JSON-serializable, e.g. the input stage's
    digest, tokenizer config, special ids) is stored under "extra" and covered by the digest."""
    dt = storage_dtype(dtype)
    if vocab_size > np.iinfo(dt).max + 1:
        raise ValueError(f"vocab size {vocab_size} does not fit {dt.name}")
    entries = sorted((dict(s) for s in shards), key=lambda s: s["shard"])
    if [s["shard"] for s in entries] != list(range(len(entries))):
        raise ValueError(f"shards must be numbered 0..{len(entries) - 1}, got {[s['shard'] for s in entries]}")
    manifest = {
        "format_version": FORMAT_VERSION,
        "kind": KIND,
        "tokenizer_sha256": tokenizer_sha256,
        "dtype": dt.name,
        "byte_order": "little",
        "vocab_size": int(vocab_size),
        "eos_id": int(eos_id),
        "shards": entries,
        "totals": {
            "tokens": sum(s["tokens"] for s in entries),
            "documents": sum(s["documents"] for s in entries),
            "bytes": sum(s["bytes"] for s in entries),
        },
        "extra": extra or {},
        "mlflow_run_id": mlflow_run_id,
    }
    manifest["digest"] = token_manifest_digest(manifest)
    return manifest


def write_token_manifest(manifest: dict, path) -> None:
    storage.write_atomic(path, json.dumps(manifest, indent=2, sort_keys=True) + "\n")


class TokenShardWriter:
    """The token files of one input shard, written while its documents stream in, in their arrival order
    (no sort, so memory is a batch and one file's index, never a whole shard): `{prefix}.{j:04d}.bin` and
    `.idx.parquet`, laid out and cut as the module docstring says. `close()` returns the files' manifest
    entries, without the global `shard` number (`number_token_files` assigns it).
    """

    def __init__(self, out_dir, prefix: str, target_tokens: int, eos_id: int, dtype):
        if target_tokens <= 0:
            raise ValueError(f"target_tokens must be positive, got {target_tokens}")
        self.out_dir, self.prefix, self.target = storage.path(out_dir), prefix, target_tokens
        self.dt = storage_dtype(dtype)
        self.eos = np.array([eos_id], dtype=self.dt)
        self.entries: list[dict] = []
        self._file = None

    def _open(self) -> None:
        j = len(self.entries)
        self._bin = f"{self.prefix}.{j:04d}.bin"
        self._idx = f"{self.prefix}.{j:04d}.idx.parquet"
        self._scratch = storage.scratch_for(self.out_dir / self._bin)
        self._file = open(self._scratch, "wb")
        self._sha = hashlib.sha256()
        self._block, self._block_fill, self._blocks = hashlib.sha256(), 0, []
        self._ids: list[str] = []
        self._n: list[int] = []
        self._tokens = 0

    def _close_file(self) -> None:

        self._file.close()
        storage.publish(self._scratch, self.out_dir / self._bin)
        n = np.array(self._n, dtype=np.int64)
        offsets = np.zeros(len(n), dtype=np.int64)
        np.cumsum(n[:-1] + 1, out=offsets[1:])
        keys = document_keys(self._ids)
        if self._block_fill:
            self._blocks.append(self._block.digest())
        index = pa.table({"doc_id": pa.array(self._ids, pa.string()), "offset": offsets, "n_tokens": n,
                          "doc_key": pa.array(keys, pa.uint64())}).replace_schema_metadata(
            {BLOCK_SHA256_KEY: b"".join(self._blocks)})
        index_scratch = storage.scratch_for(self.out_dir / self._idx)
        pq.write_table(index, index_scratch, compression="zstd")
        index_sha256 = sha256_file(index_scratch)  # hashed before the upload: no read back from object storage
        storage.publish(index_scratch, self.out_dir / self._idx)
        self.entries.append({
            "path": self._bin, "index_path": self._idx, "tokens": self._tokens, "documents": len(self._ids),
            "sha256": self._sha.hexdigest(), "index_sha256": index_sha256,
            "bytes": self._tokens * self.dt.itemsize, "block_bytes": BLOCK_BYTES,
        })
        self._file = None

    def add(self, doc_ids: list[str], token_arrays: list[np.ndarray]) -> None:
        """Append documents in order (one numpy copy per batch, not per document)."""
        arrays = [np.asarray(a) for a in token_arrays]
        sizes = np.fromiter((a.size + 1 for a in arrays), np.int64, len(arrays))  # with the eos
        i = 0
        while i < len(arrays):
            if self._file is None:
                self._open()
            fit = int(np.searchsorted(np.cumsum(sizes[i:]), self.target - self._tokens, side="right"))
            if fit == 0 and self._tokens:  # the next document would take this file over the target
                self._close_file()
                continue
            j = i + max(fit, 1)  # a document longer than the target gets a file of its own
            self._write(doc_ids[i:j], arrays[i:j], sizes[i:j])
            i = j
            if i < len(arrays):
                self._close_file()

    def _write(self, doc_ids: list[str], arrays: list[np.ndarray], sizes: np.ndarray) -> None:
        flat = np.empty(int(sizes.sum()), dtype=self.dt)
        is_eos = np.zeros(flat.size, dtype=bool)
        is_eos[np.cumsum(sizes) - 1] = True
        tokens = np.concatenate(arrays) if arrays else np.zeros(0, dtype=self.dt)
        if tokens.size and (tokens.ndim != 1 or tokens.dtype.kind not in "iu"):
            raise ValueError(f"documents {doc_ids[0]!r}..: tokens must be 1-D integer arrays, got {tokens.dtype}")
        if tokens.size and tokens.dtype != self.dt and (int(tokens.min()) < 0 or int(tokens.max()) > np.iinfo(self.dt).max):
            bad = next(d for d, a in zip(doc_ids, arrays) if a.size and (a.min() < 0 or a.max() > np.iinfo(self.dt).max))
            raise ValueError(f"document {bad!r}: token id out of range for {self.dt.name}")
        flat[~is_eos] = tokens
        flat[is_eos] = self.eos[0]
        data = flat.tobytes()
        self._file.write(data)
        self._sha.update(data)
        view = memoryview(data)
        while view:  # the per-block digests, across write boundaries
            take = min(len(view), BLOCK_BYTES - self._block_fill)
            self._block.update(view[:take])
            self._block_fill += take
            view = view[take:]
            if self._block_fill == BLOCK_BYTES:
                self._blocks.append(self._block.digest())
                self._block, self._block_fill = hashlib.sha256(), 0
        self._ids.extend(doc_ids)
        self._n.extend((sizes - 1).tolist())
        self._tokens += int(flat.size)

    def close(self) -> list[dict]:
        if self._file is not None:
            self._close_file()
        return self.entries
