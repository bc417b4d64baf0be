"""Every hash tokenmill relies on, in one place: what each is for and why it is stable.

- `splitmix64` / `mix64`: integer bijections on uint64 arrays (wrapping arithmetic), for seeds, partitions and
  the Feistel permutation. Pure numpy, the same on every platform and numpy version (no RNG).
- `fmix64`: MurmurHash3's 64-bit finaliser, for MinHash's shingle hashes.
- `document_key`: the xxh64 of a document id, the `doc_key` column of the token-shard index.
- `canonical_sha256`: the sha256 of an object's canonical JSON (sorted keys, no spaces): completion-record keys,
  manifest digests.
- `sha256_file`: a file's sha256, local or on object storage.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import numpy as np
import xxhash

from pipelines import storage

U64 = np.uint64
GOLDEN = U64(0x9E3779B97F4A7C15)
_M1, _M2 = U64(0xBF58476D1CE4E5B9), U64(0x94D049BB133111EB)


def mix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser (without the golden-ratio increment) on a uint64 array."""
    x = (x ^ (x >> U64(30))) * _M1
    x = (x ^ (x >> U64(27))) * _M2
    return x ^ (x >> U64(31))


def splitmix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64's output function on a uint64 array (wrapping arithmetic): a fast, well-mixed bijection."""
    return mix64(x + GOLDEN)


def fmix64(x: np.ndarray) -> np.ndarray:
    """MurmurHash3's 64-bit finalizer (a bijection with good avalanche), in place on a uint64 array."""
    x ^= x >> U64(33)
    x *= U64(0xFF51AFD7ED558CCD)
    x ^= x >> U64(33)
    x *= U64(0xC4CEB9FE1A85EC53)
    x ^= x >> U64(33)
    return x


def document_key(doc_id: str) -> int:
    """The 64-bit key of a document id (xxh64 of its UTF-8), recorded in the token shard index as `doc_key`."""
    return xxhash.xxh64_intdigest(doc_id.encode("utf-8"))


def document_keys(doc_ids) -> np.ndarray:
    """`document_key` of each id, as a uint64 array."""
    return np.fromiter((xxhash.xxh64_intdigest(i.encode("utf-8")) for i in doc_ids), np.uint64, len(doc_ids))


def canonical_sha256(obj: Any) -> str:
    """sha256 of the canonical JSON of `obj` (sorted keys, no spaces; anything JSON cannot hold as its str())."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str, separators=(",", ":")).encode()).hexdigest()


def sha256_file(path) -> str:
    """A file's sha256, local or on object storage (streamed, 1 MiB at a time)."""
    h = hashlib.sha256()
    with storage.path(path).open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
