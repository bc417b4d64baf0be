"""Writing token shards: flat little-endian token files with a per-document index, and their manifest.

Layout of one shard `shard_{i:05d}.bin`: the shard's documents sorted by id, each document's tokens
followed by one eos token, as a flat array of little-endian uint16 (vocabularies up to 65,536
pieces) or uint32, nothing else (no header), so `np.memmap(path, dtype="<u2")` reads it.
`shard_{i:05d}.idx.parquet` holds one row per document: `doc_id` (string), `offset` (int64, the
position of its first token in the shard) and `n_tokens` (int64, its token count WITHOUT the eos,
which sits at `offset + n_tokens`).

Documents are sorted by id before planning and writing, so the same documents give byte-identical
shards and manifest whatever order they arrive in. The manifest lists shard paths relative to its
own folder: write it next to the shards (`out_dir / "manifest.json"`).
"""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipelines import storage
from pipelines.hashing import canonical_sha256, document_keys, sha256_file
FORMAT_VERSION = 1
KIND = "token_shards"
INDEX_SCHEMA = pa.schema([("doc_id", pa.string()), ("offset", pa.int64()), ("n_tokens", pa.int64())])


def shard_file_names(shard_index: int) -> tuple[str, str]:
    return f"shard_{shard_index:05d}.bin", f"shard_{shard_index:05d}.idx.parquet"


def storage_dtype(dtype) -> np.dtype:
    """uint16 or uint32, little-endian, whatever the machine's byte order."""
    dt = np.dtype(dtype)
    if dt not in (np.dtype(np.uint16), np.dtype(np.uint32)):
        raise ValueError(f"token dtype must be uint16 or uint32, got {dt}")
    return dt.newbyteorder("<")


def plan_shards(doc_token_counts: list[tuple[str, int]], target_tokens: int) -> list[list[str]]:
    """Cut documents, sorted by id, into consecutive shards of at most `target_tokens` tokens.

    `doc_token_counts` holds (doc_id, n_tokens including the eos). A document is never split: a
    shard is closed before the document that would take it over the target, and a document longer
    than the target gets a shard of its own. The input is sorted by id here (ids must be unique),
    so the plan does not depend on its order.
    """
    if target_tokens <= 0:
        raise ValueError(f"target_tokens must be positive, got {target_tokens}")
    items = sorted(doc_token_counts, key=lambda t: t[0])
    for (a, _), (b, _) in zip(items, items[1:]):
        if a == b:
            raise ValueError(f"duplicate document id {a!r}")
    shards: list[list[str]] = []
    current: list[str] = []
    size = 0
    for doc_id, n in items:
        if n <= 0:
            raise ValueError(f"document {doc_id!r}: token count {n} (must include its eos, so >= 1)")
        if current and size + n > target_tokens:
            shards.append(current)
            current, size = [], 0
        current.append(doc_id)
        size += n
    if current:
        shards.append(current)
    return shards


def _atomic_write(path, write) -> None:
    tmp = storage.scratch_for(path)
    write(tmp)
    storage.publish(tmp, path)  # a crashed writer never leaves a half file under the final name


def write_token_shard(out_dir, shard_index: int, doc_ids: list[str], token_arrays: list[np.ndarray],
                      eos_id: int, dtype) -> dict:
    """Write shard `shard_index` (documents sorted by id here) and its index; return its manifest entry.

    `path` and `index_path` are relative to `out_dir` (where the manifest goes).
    """
    if len(doc_ids) != len(token_arrays):
        raise ValueError(f"{len(doc_ids)} doc ids but {len(token_arrays)} token arrays")
    if not doc_ids:
        raise ValueError(f"shard {shard_index}: no documents")
    dt = storage_dtype(dtype)
    limit = np.iinfo(dt).max
    if not 0 <= eos_id <= limit:
        raise ValueError(f"eos id {eos_id} does not fit {dt.name}")
    order = sorted(range(len(doc_ids)), key=lambda k: doc_ids[k])
    ids = [doc_ids[k] for k in order]
    for a, b in zip(ids, ids[1:]):
        if a == b:
            raise ValueError(f"shard {shard_index}: duplicate document id {a!r}")

    arrays = [np.asarray(token_arrays[k]) for k in order]
    n_tokens = np.fromiter((a.size for a in arrays), dtype=np.int64, count=len(arrays))
    offsets = np.zeros(len(arrays), dtype=np.int64)
    np.cumsum(n_tokens[:-1] + 1, out=offsets[1:])
    total = int(n_tokens.sum()) + len(arrays)
    flat = np.empty(total, dtype=dt)
    for doc_id, a, off, n in zip(ids, arrays, offsets, n_tokens):
        if n:
            if a.ndim != 1 or a.dtype.kind not in "iu":
                raise ValueError(f"document {doc_id!r}: tokens must be a 1-D integer array, got {a.dtype} {a.shape}")
            if a.dtype != dt and (int(a.min()) < 0 or int(a.max()) > limit):
                raise ValueError(f"document {doc_id!r}: token id out of range for {dt.name}")
            flat[off : off + n] = a
        flat[off + n] = eos_id

    out_dir = storage.path(out_dir)
    bin_name, idx_name = shard_file_names(shard_index)
    _atomic_write(out_dir / bin_name, lambda p: p.write_bytes(flat.tobytes()))
    index = pa.table({"doc_id": pa.array(ids, pa.string()), "offset": offsets, "n_tokens": n_tokens}, schema=INDEX_SCHEMA)
    _atomic_write(out_dir / idx_name, lambda p: pq.write_table(index, p, compression="zstd"))
    return {
        "shard": shard_index,
        "path": bin_name,
        "index_path": idx_name,
        "tokens": total,
        "documents": len(ids),
        "sha256": sha256_file(out_dir / bin_name),
        "index_sha256": sha256_file(out_dir / idx_name),
        "bytes": total * dt.itemsize,
    }


def write_token_shards(out_dir, doc_ids: list[str], token_arrays: list[np.ndarray], target_tokens: int,
                       eos_id: int, dtype) -> list[dict]:
    """plan_shards + write_token_shard for documents held in memory, in any order."""
    if len(doc_ids) != len(token_arrays):
        raise ValueError(f"{len(doc_ids)} doc ids but {len(token_arrays)} token arrays")
    by_id = dict(zip(doc_ids, token_arrays))
    if len(by_id) != len(doc_ids):
        raise ValueError("duplicate document ids")
    plan = plan_shards([(i, len(a) + 1) for i, a in by_id.items()], target_tokens)
    return [write_token_shard(out_dir, k, ids, [by_id[i] for i in ids], eos_id, dtype) for k, ids in enumerate(plan)]


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
    """Token shards written while documents stream in, in their arrival order (no sort, so memory is a
    batch and one file's index, never a whole shard): files `{prefix}.{j:04d}.bin` / `.idx.parquet`, cut
    at `target_tokens` exactly as `plan_shards` cuts (never inside a document). The index adds `doc_key`
    (uint64, xxh64 of the id), so a training job splits train/validation without hashing any string.
    `close()` returns the manifest entries, without the global `shard` number the manifest assigns.
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
        index = pa.table({"doc_id": pa.array(self._ids, pa.string()), "offset": offsets, "n_tokens": n,
                          "doc_key": pa.array(keys, pa.uint64())})
        index_scratch = storage.scratch_for(self.out_dir / self._idx)
        pq.write_table(index, index_scratch, compression="zstd")
        index_sha256 = sha256_file(index_scratch)  # hashed before the upload: no read back from object storage
        storage.publish(index_scratch, self.out_dir / self._idx)
        self.entries.append({
            "path": self._bin, "index_path": self._idx, "tokens": self._tokens, "documents": len(self._ids),
            "sha256": self._sha.hexdigest(), "index_sha256": index_sha256,
            "bytes": self._tokens * self.dt.itemsize,
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
        self._ids.extend(doc_ids)
        self._n.extend((sizes - 1).tolist())
        self._tokens += int(flat.size)

    def close(self) -> list[dict]:
        if self._file is not None:
            self._close_file()
        return self.entries
