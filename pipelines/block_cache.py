"""Remote token shards read by byte ranges: verified blocks on a bounded local disk, fetched ahead.

With a seeded permutation every rank touches every shard, so downloading whole shards would put the whole
token set on every node's disk (~2 TB at 1T tokens). Instead a window's tokens are read as the
`BLOCK_BYTES` blocks of its shard that hold them (`pipelines.token_shards`: each block's sha256 is in the
shard's index, whose own sha256 is in the manifest):

- A block is fetched with one ranged GET, its sha256 compared with the index's before it is used or kept;
  a mismatch (or a short read) raises ShardIntegrityError naming the shard, the block and its bytes.
  What is verified and when: the manifest's digest, every index's sha256 and the block table's length
  against the shard's size when the ShardSet opens (with verify=True); each block's bytes when it is
  fetched. A shard's whole-file sha256 is not recomputed: the blocks' digests cover the same bytes.
- Kept blocks live in one folder (one file per block, written whole then renamed), at most `max_bytes`,
  the least recently used evicted first. The folder belongs to one process (a training worker names it by
  rank): blocks found there at start were verified before they were renamed into place, and a block's
  file name is the shard's sha256 and the block number, so a kept block can never be stale.
- `prefetch` fetches blocks on a small thread pool (network-bound: the GIL is released while waiting), so
  the next steps' windows are local by the time they are read; a read of a block in flight waits for it.
  Prefetching stops at half the cache, so fetched-ahead blocks are not evicted before they are used.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from pipelines import storage
from pipelines.manifest import ShardIntegrityError


class BlockCache:
    def __init__(self, folder, max_bytes: int, threads: int = 8):
        if max_bytes <= 0:
            raise ValueError(f"a block cache needs room: max_bytes={max_bytes}")
        self.folder, self.max_bytes = Path(folder), int(max_bytes)
        self.folder.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._kept: OrderedDict[str, int] = OrderedDict()  # block name -> bytes, least recently used first
        self._inflight: dict[str, Future] = {}
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="tokenmill-blocks")
        self.bytes = self.peak_bytes = 0
        # hits: read from the folder; missed: fetched by the reader itself (the step waited for the network);
        # waited: the reader found the block in flight; fetched (bytes): every block fetched, ahead or not
        self.stats = {"hits": 0, "missed": 0, "waited": 0, "prefetched": 0, "fetched": 0, "fetched_bytes": 0,
                      "evicted": 0}
        found = sorted((p for p in self.folder.iterdir() if p.is_file() and not p.name.endswith(".tmp")),
                       key=lambda p: p.stat().st_mtime_ns)
        for p in found:  # a restarted worker keeps what it fetched (verified before the rename)
            self._keep(p.name, p.stat().st_size)
        for p in self.folder.glob("*.tmp"):
            p.unlink(missing_ok=True)

    def read(self, name: str, fetch) -> bytes:
        """Block `name`'s bytes: from the folder, from a fetch in flight, or `fetch()` (which returns verified
        bytes) now."""
        with self._lock:
            future = self._inflight.get(name)
            kept = name in self._kept
            if kept:
                self._kept.move_to_end(name)
        if future is not None:
            self.stats["waited"] += 1
            return future.result()
        if kept:
            try:
                data = (self.folder / name).read_bytes()
                self.stats["hits"] += 1
                return data
            except FileNotFoundError:  # evicted between the look-up and the read
                pass
        self.stats["missed"] += 1
        return self._store(name, fetch())

    def prefetch(self, name: str, size: int, fetch) -> bool:
        """Start fetching block `name` (of `size` bytes) unless it is kept or in flight. False, and nothing
        started, when the blocks in flight would pass half the cache."""
        with self._lock:
            if name in self._kept or name in self._inflight:
                return True
            if (len(self._inflight) + 1) * size > self.max_bytes // 2:
                return False
            future: Future = Future()
            self._inflight[name] = future
        self.stats["prefetched"] += 1
        self._pool.submit(self._run, name, fetch, future)
        return True

    def drain(self) -> None:
        """Wait for the fetches in flight (their errors are for the readers of those blocks)."""
        with self._lock:
            pending = list(self._inflight.values())
        for future in pending:
            future.exception()

    def _run(self, name: str, fetch, future: Future) -> None:
        try:
            future.set_result(self._store(name, fetch()))
        except BaseException as exc:  # handed to whoever reads the block
            future.set_exception(exc)
        finally:
            with self._lock:
                self._inflight.pop(name, None)

    def _store(self, name: str, data: bytes) -> bytes:
        self.stats["fetched"] += 1
        self.stats["fetched_bytes"] += len(data)
        tmp = self.folder / f"{name}.{threading.get_ident()}.tmp"
        tmp.write_bytes(data)
        os.replace(tmp, self.folder / name)
        with self._lock:
            self._keep(name, len(data))
        return data

    def _keep(self, name: str, size: int) -> None:
        """(lock held) Record a kept block, then evict the least recently used over the bound."""
        self.bytes += size - self._kept.pop(name, 0)
        self._kept[name] = size
        while self.bytes > self.max_bytes and len(self._kept) > 1:
            old, n = self._kept.popitem(last=False)
            (self.folder / old).unlink(missing_ok=True)
            self.bytes -= n
            self.stats["evicted"] += 1
        self.peak_bytes = max(self.peak_bytes, self.bytes)  # kept blocks; the disk briefly holds one block more

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


def fetch_block(handle, shard: str, block: int, offset: int, length: int, digest: bytes) -> bytes:
    """One block of a remote file by a ranged read (`handle`: a pyarrow RandomAccessFile), verified."""
    data = bytes(handle.read_at(length, offset))
    if len(data) != length:
        raise ShardIntegrityError(f"token shard {shard}: block {block} (bytes {offset}-{offset + length}) read "
                                  f"{len(data)} bytes: the object is shorter than its manifest says")
    actual = hashlib.sha256(data).digest()
    if actual != digest:
        raise ShardIntegrityError(f"token shard {shard}: block {block} (bytes {offset}-{offset + length}) has "
                                  f"sha256 {actual.hex()[:12]}..., its index says {digest.hex()[:12]}...")
    return data


def cache_for(manifest, max_mb: int, name: str) -> BlockCache | None:
    """The block cache `name` (one per process: a worker's rank, the driver) for reading `manifest`'s shards;
    None when they are local or `max_mb` is 0 (whole downloads)."""
    if not max_mb or isinstance(storage.path(manifest), Path):
        return None
    return BlockCache(storage.cache_dir().parent / "blocks" / name, max_mb << 20)
