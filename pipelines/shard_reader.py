"""Reading token shards written by pipelines.token_shards (for training and inspection).

`ShardSet(manifest_path, tokenizer_path)` checks, before anything is read: the manifest's format and
digest, every shard's and index's sha256 (with `verify=True`, which reads every byte once), each
shard's size against its token count, and, when a tokenizer is given, that it is the tokenizer the
shards were made with. Each failure raises ShardIntegrityError (a ValueError) naming the file.
Shards are then read through read-only np.memmap. Shards on object storage (a manifest URI) are downloaded
into the local cache (`storage.local_copy`; afresh when verified) and verified and mapped there.
"""

from __future__ import annotations


import numpy as np
import pyarrow.parquet as pq

from pipelines import storage
from pipelines.hashing import sha256_file
from pipelines.manifest import ShardIntegrityError, load_manifest
from pipelines.token_shards import storage_dtype


class ShardSet:
    def __init__(self, manifest_path, tokenizer_path: str | None = None, verify: bool = True):
        self.manifest_path = storage.path(manifest_path)
        self.root = self.manifest_path.parent
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
            if verify:
                for key, name in (("sha256", "path"), ("index_sha256", "index_path")):
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
        self._memmaps: dict[int, np.memmap] = {}
        self._indexes: dict[int, dict] = {}
        self._lookup: dict[str, tuple[int, int, int]] | None = None

    def _local(self, rel: str, refresh: bool = False):
        """A local file with the content of `rel` (itself, or its download when the shards are remote)."""
        return storage.local_copy(self.root / rel, refresh=refresh)

    @property
    def num_shards(self) -> int:
        return len(self.shards_meta)

    def __len__(self) -> int:
        return self.total_tokens

    def shard(self, i: int) -> np.memmap:
        """All tokens of shard i (documents and their eos), read-only."""
        if i not in self._memmaps:
            meta = self.shards_meta[i]
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
                                "doc_key": table.column("doc_key").to_numpy()}
        return self._indexes[i]

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
