"""Reading token shards written by pipelines.token_shards (for training and inspection).

`ShardSet(manifest_path, tokenizer_path)` checks, before anything is read: the manifest's format and
digest, every shard's and index's sha256 (with `verify=True`, which reads every byte once), each
shard's size against its token count, and, when a tokenizer is given, that it is the tokenizer the
shards were made with. Each failure raises ShardIntegrityError (a ValueError) naming the file.
Shards are then read through read-only np.memmap. Shards on object storage (a manifest URI) are read by
byte ranges through a `pipelines.block_cache.BlockCache` when one is given (and the shards carry block
checksums: `block_bytes` in their manifest entries); otherwise they are downloaded whole into the local cache
(`storage.local_copy`; afresh when verified) and verified and mapped there.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from pipelines import storage
from pipelines.hashing import sha256_file
from pipelines.manifest import ShardIntegrityError, load_manifest
from pipelines.block_cache import BlockCache, fetch_block
from pipelines.token_shards import BLOCK_SHA256_KEY, storage_dtype


class ShardSet:
    def __init__(self, manifest_path, tokenizer_path: str | None = None, verify: bool = True,
                 cache: BlockCache | None = None):
        self.manifest_path = storage.path(manifest_path)
        self.root = self.manifest_path.parent
        self.cache = None if isinstance(self.root, Path) else cache  # local shards are mapped, never cached
        self.manifest = load_manifest(self.manifest_path, kind="tokens")
        m = self.manifest
        if tokenizer_path is not None:
            actual = sha256_file(tokenizer_path)
            if actual != m["tokenizer_sha256"]:
                raise ShardIntegrityError(
                    f"tokenizer {tokenizer_path} (sha256 {actual[:12]}...) is not the tokenizer these shards were "
                    f"made with (manifest {self.manifest_path}: tokenizer sha256 {m['tokenizer_sha256'][:12]}...)"
                )
        self.dtype = storage_dtype(m["dtype"])
        self.vocab_size = int(m["vocab_size"])
        self.eos_id = int(m["eos_id"])
        self.tokenizer_sha256 = m["tokenizer_sha256"]
        self.shards_meta = m["shards"]
        self.total_tokens = int(m["totals"]["tokens"])
        self.num_documents = int(m["totals"]["documents"])
        for s in self.shards_meta:
            path = self.root / s["path"]
            if not path.is_file():
                raise ShardIntegrityError(f"token shard {s['path']}: missing (expected at {path})")
            size = path.stat().st_size
            if size != s["tokens"] * self.dtype.itemsize:
                raise ShardIntegrityError(
                    f"token shard {s['path']}: {size} bytes, the manifest says {s['tokens']} {self.dtype.name} tokens"
                )
            ranged = self.cache is not None and "block_bytes" in s
            if verify:
                # read by ranges: every block is verified as it is fetched, so only the index is hashed now
                for key, name in ((("sha256", "path"),) if not ranged else ()) + (("index_sha256", "index_path"),):
                    # remote shards: downloaded afresh to be verified (a cached copy is keyed by size and
                    # mtime, and S3 mtimes have one-second resolution), then read from that copy
                    actual = sha256_file(self._local(s[name], refresh=True))
                    if actual != s[key]:
                        what = "token shard" if name == "path" else "token shard index"
                        raise ShardIntegrityError(
                            f"{what} {s[name]}: sha256 {actual[:12]}... does not match the manifest ({s[key][:12]}...)"
                        )
        # first global token position of each shard, and the end
        self._starts = np.concatenate([[0], np.cumsum([s["tokens"] for s in self.shards_meta])]).astype(np.int64)
        if int(self._starts[-1]) != self.total_tokens:
            raise ShardIntegrityError(f"{self.manifest_path}: shard token counts do not add up to totals.tokens")
        self._memmaps: dict[int, np.memmap | RangeShard] = {}
        self._indexes: dict[int, dict] = {}
        self._lookup: dict[str, tuple[int, int, int]] | None = None
        if verify and self.cache is not None:
            for i in range(self.num_shards):
                if self.ranged(i):
                    self._block_table(i)  # its length against the shard's size, before any block is read

    def _local(self, rel: str, refresh: bool = False):
        """A local file with the content of `rel` (itself, or its download when the shards are remote)."""
        return storage.local_copy(self.root / rel, refresh=refresh)

    @property
    def num_shards(self) -> int:
        return len(self.shards_meta)

    def __len__(self) -> int:
        return self.total_tokens

    def ranged(self, i: int) -> bool:
        """Whether shard i is read by byte ranges through the block cache."""
        return self.cache is not None and "block_bytes" in self.shards_meta[i]

    def _block_table(self, i: int) -> bytes:
        meta = self.shards_meta[i]
        table = self.index(i)["block_sha256"]
        blocks = -(-meta["bytes"] // meta["block_bytes"])
        if table is None or len(table) != 32 * blocks:
            raise ShardIntegrityError(f"token shard index {meta['index_path']}: {len(table or b'') // 32} block "
                                      f"checksums, the shard's {meta['bytes']} bytes make {blocks} blocks")
        return table

    def shard(self, i: int) -> np.memmap | RangeShard:
        """All tokens of shard i (documents and their eos), read-only: sliced, they give numpy arrays."""
        if i not in self._memmaps:
            meta = self.shards_meta[i]
            if self.ranged(i):
                self._memmaps[i] = RangeShard(self, i)
                return self._memmaps[i]
            self._memmaps[i] = np.memmap(self._local(meta["path"]), dtype=self.dtype, mode="r", shape=(meta["tokens"],))
        return self._memmaps[i]

    def index(self, i: int) -> dict:
        """Shard i's document index: {"doc_id": list[str], "offset": int64, "n_tokens": int64, "doc_key": uint64}."""
        if i not in self._indexes:
            meta = self.shards_meta[i]
            table = pq.read_table(self._local(meta["index_path"]))
            doc_ids = table.column("doc_id").to_pylist()
            offsets = table.column("offset").to_numpy()
            n_tokens = table.column("n_tokens").to_numpy()
            expected = np.zeros(len(n_tokens), dtype=np.int64)
            np.cumsum(n_tokens[:-1] + 1, out=expected[1:])
            if (len(doc_ids) != meta["documents"] or not np.array_equal(offsets, expected)
                    or int(n_tokens.sum()) + len(n_tokens) != meta["tokens"]):
                raise ShardIntegrityError(f"token shard index {meta['index_path']}: offsets do not match the shard layout")
            if "doc_key" not in table.column_names:
                raise ShardIntegrityError(f"token shard index {meta['index_path']}: no doc_key column (the index "
                                          "layout of pipelines/token_shards.py; re-run the tokenize stage)")
            self._indexes[i] = {"doc_id": doc_ids, "offset": offsets, "n_tokens": n_tokens,
                                "doc_key": table.column("doc_key").to_numpy(),
                                "block_sha256": (table.schema.metadata or {}).get(BLOCK_SHA256_KEY)}
        return self._indexes[i]

    def prefetch(self, spans) -> None:
        """Start fetching the blocks that hold these (shard, first token, end token) spans; nothing for
        shards that are mapped."""
        for i, start, stop in spans:
            if self.ranged(i):
                self.shard(i).prefetch(start, stop)

    def document_ids(self) -> list[str]:
        """Every document id, in shard order (each file's documents in the order they were written)."""
        return [d for i in range(self.num_shards) for d in self.index(i)["doc_id"]]

    def locate(self, doc_id: str) -> tuple[int, int, int]:
        """(shard, offset in shard, n_tokens without eos) of a document; KeyError if absent."""
        if self._lookup is None:
            lookup = {}
            for i in range(self.num_shards):
                idx = self.index(i)
                for d, off, n in zip(idx["doc_id"], idx["offset"].tolist(), idx["n_tokens"].tolist()):
                    lookup[d] = (i, off, n)
            self._lookup = lookup
        try:
            return self._lookup[doc_id]
        except KeyError:
            raise KeyError(f"document {doc_id!r} is not in {self.manifest_path}") from None

    def document(self, doc_id: str) -> np.ndarray:
        """The document's tokens, without its trailing eos (a copy)."""
        i, off, n = self.locate(doc_id)
        return np.array(self.shard(i)[off : off + n])

    def tokens(self, start: int, stop: int) -> np.ndarray:
        """Tokens [start, stop) of the concatenation of all shards in order (a copy)."""
        if not 0 <= start <= stop <= self.total_tokens:
            raise IndexError(f"token range [{start}, {stop}) outside [0, {self.total_tokens})")
        parts = []
        i = int(np.searchsorted(self._starts, start, side="right")) - 1
        pos = start
        while pos < stop:
            base = int(self._starts[i])
            end = min(stop, int(self._starts[i + 1]))
            parts.append(self.shard(i)[pos - base : end - base])
            pos = end
            i += 1
        if not parts:
            return np.empty(0, dtype=self.dtype)
        return np.concatenate(parts)


class RangeShard:
    """One remote shard's tokens, read by slices through the block cache (the part of np.memmap the readers use)."""

    def __init__(self, shards: ShardSet, i: int):
        meta = shards.shards_meta[i]
        self.name, self.path, self.cache = meta["path"], shards.root / meta["path"], shards.cache
        self.dtype, self.size, self.nbytes = shards.dtype, int(meta["tokens"]), int(meta["bytes"])
        self.block = int(meta["block_bytes"])
        self.digests = shards._block_table(i)
        self.key = meta["sha256"][:40]  # blocks are named by content: a kept block can never be stale
        self._handle, self._lock = None, threading.Lock()

    def __len__(self) -> int:
        return self.size

    @property
    def shape(self) -> tuple[int]:
        return (self.size,)

    def _blocks(self, start: int, stop: int) -> range:
        it = self.dtype.itemsize
        return range(start * it // self.block, (stop * it - 1) // self.block + 1) if stop > start else range(0)

    def _fetcher(self, b: int):
        def fetch() -> bytes:
            with self._lock:
                if self._handle is None:
                    self._handle = self.path.fs.open_input_file(self.path.fs_path)
            offset = b * self.block
            return fetch_block(self._handle, self.name, b, offset, min(self.block, self.nbytes - offset),
                               self.digests[32 * b: 32 * b + 32])
        return fetch

    def __getitem__(self, key) -> np.ndarray:
        if not isinstance(key, slice):
            return self[key: key + 1 or None][0]
        start, stop, step = key.indices(self.size)
        if step != 1:
            raise IndexError(f"token shard {self.name}: strided reads are not supported")
        blocks = self._blocks(start, stop)
        if not blocks:
            return np.empty(0, dtype=self.dtype)
        parts = [self.cache.read(f"{self.key}.{b:08d}", self._fetcher(b)) for b in blocks]
        data = parts[0] if len(parts) == 1 else b"".join(parts)
        return np.frombuffer(data, self.dtype, count=stop - start, offset=start * self.dtype.itemsize - blocks[0] * self.block)

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        out = self[:]
        return out if dtype is None else out.astype(dtype)

    def prefetch(self, start: int, stop: int) -> None:
        for b in self._blocks(start, stop):
            if not self.cache.prefetch(f"{self.key}.{b:08d}", self.block, self._fetcher(b)):
                return  # in flight: half the cache


def to_hf_dataset(shard_set: ShardSet):
    """A datasets.Dataset with one row per document, in id order: {"id": str, "input_ids": list[int32]}
    (tokens without the eos). Built in memory: the whole corpus as int32."""
    import datasets
    import pyarrow as pa

    # 32-bit list offsets are per chunk (one chunk per shard): large lists only for shards of 2**31+ tokens
    large = any(s["tokens"] >= 2**31 for s in shard_set.shards_meta)
    list_type = pa.large_list(pa.int32()) if large else pa.list_(pa.int32())
    offset_type = pa.int64() if large else pa.int32()
    array_type = pa.LargeListArray if large else pa.ListArray
    schema = pa.schema([("id", pa.string()), ("input_ids", list_type)])
    tables = []
    for i in range(shard_set.num_shards):
        idx = shard_set.index(i)
        flat = np.asarray(shard_set.shard(i))
        keep = np.ones(flat.size, dtype=bool)
        keep[idx["offset"] + idx["n_tokens"]] = False  # drop each document's eos
        values = flat[keep].astype(np.int32)
        offsets = np.zeros(len(idx["n_tokens"]) + 1, dtype=np.int64)
        np.cumsum(idx["n_tokens"], out=offsets[1:])
        input_ids = array_type.from_arrays(pa.array(offsets, offset_type), pa.array(values))
        tables.append(pa.table({"id": pa.array(idx["doc_id"], pa.string()), "input_ids": input_ids}, schema=schema))
    table = pa.concat_tables(tables) if tables else schema.empty_table()
    return datasets.Dataset(table)
