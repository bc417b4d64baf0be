"""A seeded permutation of range(n) computed index by index (Feistel network + cycle walking).

O(1) memory whatever n is: a trillion-token corpus has ~10^9 training windows, whose explicit shuffled
order would be 8 GB per rank. permute(i) for any batch of positions i is a pure function of (seed, n, i).
"""

from __future__ import annotations

import numpy as np

from pipelines.hashing import GOLDEN, mix64

ROUNDS = 6


class Permutation:
    def __init__(self, n: int, seed: int):
        if n < 1:
            raise ValueError(f"cannot permute {n} items")
        self.n = n
        bits = max(2, int(n - 1).bit_length())
        bits += bits % 2  # two equal halves
        self.half = bits // 2
        self.mask = np.uint64((1 << self.half) - 1)
        base = mix64(np.array([seed & 0xFFFFFFFFFFFFFFFF], dtype=np.uint64) + GOLDEN)
        # array arithmetic: uint64 wraps silently (numpy warns on scalar overflow)
        self.keys = list(mix64(base + np.arange(1, ROUNDS + 1, dtype=np.uint64) * GOLDEN))

    def _feistel(self, x: np.ndarray) -> np.ndarray:
        left, right = x >> np.uint64(self.half), x & self.mask
        for key in self.keys:
            left, right = right, left ^ (mix64(right ^ key) & self.mask)
        return (left << np.uint64(self.half)) | right

    def __call__(self, idx) -> np.ndarray:
        """The images of positions idx (each in [0, n)), as int64 (an array of idx's shape)."""
        pos = np.asarray(idx, dtype=np.int64)
        if pos.size and (int(pos.min()) < 0 or int(pos.max()) >= self.n):
            raise IndexError(f"position outside [0, {self.n})")
        out = self._feistel(pos.reshape(-1).astype(np.uint64))
        # the network permutes [0, 2^bits); values >= n walk on until they land inside (at most ~4 steps on average)
        outside = out >= np.uint64(self.n)
        while outside.any():
            out[outside] = self._feistel(out[outside])
            outside = out >= np.uint64(self.n)
        return out.astype(np.int64).reshape(pos.shape)
