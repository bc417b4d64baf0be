"""The training data loader: fixed-length windows over the verified token shards, in a seeded global order.

- The corpus is the shards' token stream (each document followed by eos, so windows cross document
  boundaries at an eos, as in GPT pretraining). Documents are assigned to train or validation by a hash of
  (seed, document key): the validation set is held apart by document, independent of sharding.
- Each split's stream is cut into windows of seq_len + 1 tokens (input = window[:-1], target = window[1:]),
  stride seq_len. Training windows are visited in a seeded order, a fresh permutation per epoch.
- The state is one number, the global sample position: the number of windows the whole job has consumed.
  A global batch of B windows at position p is windows p..p+B-1 of the order; rank r of W takes the
  contiguous slice r*B/W..(r+1)*B/W, which it may cut into micro-batches of any size. Restoring the position
  makes a resumed job see exactly the batches an uninterrupted one would, whatever the micro-batch size.
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import torch

from model.permutation import Permutation
from pipelines.hashing import splitmix64
def split_keys(doc_keys: np.ndarray, seed: int) -> np.ndarray:
    """The split key of each document: its doc_key mixed with the seed (vectorized, no string hashing)."""
    salt = splitmix64(np.array([seed], dtype=np.uint64))[0]
    return splitmix64(np.asarray(doc_keys, dtype=np.uint64) ^ salt)


class TokenStream:
    """One split's tokens as a list of contiguous ranges of the shards (runs of consecutive documents)."""

    def __init__(self, shards, runs: list[tuple[int, int, int]]):
        self.shards = shards
        self.seg_shard = np.array([r[0] for r in runs], dtype=np.int64)
        self.seg_start = np.array([r[1] for r in runs], dtype=np.int64)
        lengths = np.array([r[2] for r in runs], dtype=np.int64)
        self.seg_begin = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        self.num_tokens = int(self.seg_begin[-1])

    def spans(self, pos: int, n: int) -> list[tuple[int, int, int]]:
        """Stream tokens [pos, pos + n) as (shard, first token, end token) ranges of the shards."""
        if not 0 <= pos <= pos + n <= self.num_tokens:
            raise IndexError(f"tokens [{pos}, {pos + n}) outside the stream of {self.num_tokens}")
        out = []
        seg = int(np.searchsorted(self.seg_begin, pos, side="right")) - 1
        done = 0
        while done < n:
            offset = pos + done - int(self.seg_begin[seg])
            take = min(n - done, int(self.seg_begin[seg + 1]) - (pos + done))
            start = int(self.seg_start[seg]) + offset
            out.append((int(self.seg_shard[seg]), start, start + take))
            done += take
            seg += 1
        return out

    def read(self, pos: int, n: int) -> np.ndarray:
        out = np.empty(n, dtype=np.int64)
        done = 0
        for shard, start, stop in self.spans(pos, n):
            out[done : done + stop - start] = self.shards.shard(shard)[start:stop]
            done += stop - start
        return out


def split_streams(shards, seed: int, val_fraction: float) -> tuple[TokenStream, TokenStream, dict]:
    """Train and validation streams. The validation documents are the ceil(val_fraction * documents) with
    the smallest hash(seed, id)."""
    keys, where = [], []
    for i in range(shards.num_shards):
        idx = shards.index(i)
        keys.append(split_keys(idx["doc_key"], seed))
        where += [(i, off, n + 1) for off, n in zip(idx["offset"].tolist(), idx["n_tokens"].tolist())]  # with eos
    keys = np.concatenate(keys) if keys else np.zeros(0, dtype=np.uint64)
    # exact decimal arithmetic: 0.07 * 100 is 7.000000000000001 in floating point, whose ceil is 8
    n_val = math.ceil(Fraction(str(val_fraction)) * len(keys))
    if n_val >= len(keys):
        raise ValueError(f"val_fraction {val_fraction} leaves no training documents (of {len(keys)})")
    is_val = np.zeros(len(keys), dtype=bool)
    if n_val:
        is_val[np.argsort(keys, kind="stable")[:n_val]] = True
    runs: dict[bool, list[list[int]]] = {False: [], True: []}
    for (shard, off, n), v in zip(where, is_val.tolist()):
        r = runs[v]
        if r and r[-1][0] == shard and r[-1][1] + r[-1][2] == off:
            r[-1][2] += n  # extend the run of consecutive documents
        else:
            r.append([shard, off, n])
    info = {"train_documents": int((~is_val).sum()), "val_documents": int(n_val)}
    train, val = TokenStream(shards, runs[False]), TokenStream(shards, runs[True])
    # the training documents in stream order: (shard, row in its index, first token in the stream, tokens)
    rows = [(shard, row) for shard in range(shards.num_shards) for row in range(len(shards.index(shard)["offset"]))]
    sizes = np.array([n for _, _, n in where], dtype=np.int64)[~is_val]
    train.docs = (np.array([r for r, v in zip(rows, is_val.tolist()) if not v], dtype=np.int64).reshape(-1, 2),
                  np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64), sizes)
    info.update(train_tokens=train.num_tokens, val_tokens=val.num_tokens)
    return train, val, info


def window_pairs(stream: TokenStream, windows, seq_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(inputs, targets), each (len(windows), seq_len) int64: window w is stream tokens [w*seq_len, (w+1)*seq_len]."""
    rows = np.stack([stream.read(int(w) * seq_len, seq_len + 1) for w in windows])
    t = torch.from_numpy(rows)
    return t[:, :-1].contiguous(), t[:, 1:].contiguous()


class WindowLoader:
    """Windows of one split. `shuffle=True` visits them in a seeded permutation per epoch (training);
    False in stream order (validation)."""

    def __init__(self, stream: TokenStream, seq_len: int, seed: int, shuffle: bool):
        self.stream, self.seq_len, self.seed, self.shuffle = stream, seq_len, seed, shuffle
        self.num_windows = (stream.num_tokens - 1) // seq_len if stream.num_tokens > 1 else 0
        self._perms: dict[int, Permutation] = {}

    def window_index(self, sample: np.ndarray) -> np.ndarray:
        """Global sample positions -> window indices (epoch e = position // num_windows)."""
        if self.num_windows == 0:
            raise ValueError(f"the stream of {self.stream.num_tokens} tokens holds no window of {self.seq_len + 1}")
        sample = np.asarray(sample, dtype=np.int64)
        if not self.shuffle:
            return sample % self.num_windows
        epoch, within = np.divmod(sample, self.num_windows)
        out = np.empty_like(sample)
        for e in np.unique(epoch).tolist():
            if e not in self._perms:
                self._perms = {e: Permutation(self.num_windows, self.seed * 1_000_003 + e)}
            sel = epoch == e
            out[sel] = self._perms[e](within[sel])
        return out

    def windows(self, first_sample: int, count: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(inputs, targets), each (count, seq_len) int64, for global sample positions first..first+count-1."""
        return window_pairs(self.stream, self.window_index(np.arange(first_sample, first_sample + count)), self.seq_len)

    def spans(self, first_sample: int, count: int) -> list[tuple[int, int, int]]:
        """The shard ranges those windows read."""
        windows = self.window_index(np.arange(first_sample, first_sample + count)).tolist()
        return [sp for w in windows for sp in self.stream.spans(w * self.seq_len, self.seq_len + 1)]


class TrainingData:
    """The job's data: train and validation windows over verified shards, and the resumable position."""

    def __init__(self, shards, seq_len: int, seed: int, val_fraction: float, split_seed: int | None = None):
        """`seed` orders the training windows; `split_seed` (default: `seed`) chooses the validation documents."""
        self.shards, self.seq_len, self.seed, self.val_fraction = shards, seq_len, seed, val_fraction
        self.split_seed = seed if split_seed is None else split_seed
        train, val, self.info = split_streams(shards, self.split_seed, val_fraction)
        self.train = WindowLoader(train, seq_len, seed, shuffle=True)
        self.val = WindowLoader(val, seq_len, seed, shuffle=False)
        if self.train.num_windows == 0:
            raise ValueError(f"training split has {train.num_tokens} tokens: not one window of {seq_len + 1}")
        self.info.update(train_windows=self.train.num_windows, val_windows=self.val.num_windows)
        self.position = 0  # global samples consumed

    def rank_batch(self, global_batch: int, rank: int, world: int) -> tuple[torch.Tensor, torch.Tensor]:
        """This rank's share of the next global batch (does not advance the position)."""
        if global_batch % world:
            raise ValueError(f"global batch of {global_batch} sequences does not split over {world} ranks")
        per_rank = global_batch // world
        return self.train.windows(self.position + rank * per_rank, per_rank)

    def prefetch(self, global_batch: int, rank: int, world: int, steps: int) -> None:
        """Start fetching the blocks of this rank's `steps` batches after the next one, when the shards are
        read by ranges from object storage (nothing to do for mapped shards)."""
        if steps > 0 and getattr(self.shards, "cache", None) is not None:
            per_rank = global_batch // world
            for k in range(1, steps + 1):
                self.shards.prefetch(self.train.spans(self.position + k * global_batch + rank * per_rank, per_rank))

    def step_documents(self, step: int, global_batch: int, world: int) -> list[dict]:
        """The documents whose tokens are in step `step`'s global batch (steps count from 1): per rank and
        document, the shard, the row in its index and how many of its tokens (eos included) the rank's
        windows hold. Computed from the seeded order: nothing is logged per step."""
        per_rank = global_batch // world
        out = []
        for rank in range(world):
            first = (step - 1) * global_batch + rank * per_rank
            out += [{"rank": rank, **d} for d in self.window_documents(
                self.train.window_index(np.arange(first, first + per_rank)).tolist())]
        return out

    def window_documents(self, windows: list[int]) -> list[dict]:
        """The training documents these windows hold: shard, row in its index and tokens (eos included)."""
        docs, starts, sizes = self.train.stream.docs
        counts: dict[int, int] = {}
        for w in windows:
            lo, hi = w * self.seq_len, (w + 1) * self.seq_len + 1  # the window's seq_len + 1 tokens
            i = int(np.searchsorted(starts, lo, side="right")) - 1
            while i < len(starts) and starts[i] < hi:
                counts[i] = counts.get(i, 0) + min(hi, starts[i] + sizes[i]) - max(lo, starts[i])
                i += 1
        return [{"shard": int(docs[i][0]), "row": int(docs[i][1]), "tokens": int(n)} for i, n in sorted(counts.items())]

    def document_steps(self, shard: int, row: int, steps: int, global_batch: int, world: int) -> list[dict]:
        """The steps (1..steps) and ranks whose batches held tokens of document (shard, row); [] for a
        validation document. Scans the order of every sample up to `steps` (vectorized)."""
        docs, starts, sizes = self.train.stream.docs
        hit = np.flatnonzero((docs[:, 0] == shard) & (docs[:, 1] == row))
        if not len(hit):
            return []
        s, e = int(starts[hit[0]]), int(starts[hit[0]] + sizes[hit[0]])
        w_lo, w_hi = max(0, -(-(s - self.seq_len) // self.seq_len)), (e - 1) // self.seq_len  # windows touching it
        out, per_rank = [], global_batch // world
        for first in range(0, steps * global_batch, 1 << 20):
            pos = np.arange(first, min(first + (1 << 20), steps * global_batch))
            w = self.train.window_index(pos)
            for p in pos[(w >= w_lo) & (w <= w_hi)].tolist():
                out.append({"step": p // global_batch + 1, "rank": (p % global_batch) // per_rank})
        return [dict(t) for t in sorted({tuple(d.items()) for d in out})]

    def advance(self, global_batch: int) -> None:
        self.position += global_batch

    def val_batches(self, max_windows: int, batch: int, rank: int, world: int):
        """This rank's validation windows (a strided share of the first max_windows), in batches."""
        n = min(max_windows, self.val.num_windows)
        mine = list(range(rank, n, world))
        for i in range(0, len(mine), batch):
            yield window_pairs(self.val.stream, mine[i : i + batch], self.seq_len)

    def state_dict(self) -> dict:
        return {"position": self.position, "seed": self.seed, "split_seed": self.split_seed, "seq_len": self.seq_len,
                "val_fraction": self.val_fraction, "manifest_digest": self.shards.manifest["digest"]}

    def load_state_dict(self, state: dict) -> None:
        mine = self.state_dict()
        state = {"split_seed": state.get("seed"), **state}  # checkpoints before split_seed split by the order's seed
        for key in ("seed", "split_seed", "seq_len", "val_fraction", "manifest_digest"):
            if state.get(key) != mine[key]:
                raise ValueError(f"checkpoint's data {key} {state.get(key)!r} differs from this job's {mine[key]!r}: "
                                 "resuming would not continue the same sequence of batches")
        self.position = int(state["position"])
