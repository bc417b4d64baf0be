"""Connected components over candidate near-duplicate edges, distributed: the per-partition steps of large-star /
small-star rounds over int64 keys, run on Ray by `orchestration.corpus.components`. (The same answer in one process
over string ids, the tests' oracle, is tests/support/reference.py.)
"""

from __future__ import annotations

import numpy as np

from pipelines.hashing import splitmix64


# ------------------------------------------------------------------ distributed: integer keys, per partition
#
# The cluster-wide version works on int64 document keys (`pipelines.stages.dedup_common`) in rounds of alternating
# large-star and small-star (Kiveris et al., "Connected Components in MapReduce and Beyond", SoCC 2014).
# Each function below is one partition's share of one round: rows (u, v) arrive grouped by u (every row
# whose u falls in the partition), and the output rows are re-partitioned for the next round by the
# caller. Both steps only ever replace an edge by one to a smaller node of the same component, so:
# - components never change, and the labels only decrease;
# - at the fixed point (neither step changes anything) every component is a star around its smallest
#   key, which is the survivor: the result depends on the keys only, never on partitions, workers,
#   arrival order or the number of rounds.
# Rounds are O(log n) in practice (a path of n nodes: each large-star halves it), O(log^2 n) proven.

EDGE = np.int64  # (u, v) rows: an (n, 2) array of this dtype


def _grouped(e: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Distinct rows sorted by (u, v); the start of each u's group; each row's group index."""
    if len(e) == 0:
        return e.reshape(0, 2), np.zeros(0, np.int64), np.zeros(0, np.int64)
    e = e[np.lexsort((e[:, 1], e[:, 0]))]
    new = np.r_[True, (e[1:, 0] != e[:-1, 0]) | (e[1:, 1] != e[:-1, 1])]
    e = e[new]
    first = np.r_[True, e[1:, 0] != e[:-1, 0]]
    return e, np.flatnonzero(first), np.cumsum(first) - 1


def large_star(e: np.ndarray) -> tuple[np.ndarray, int]:
    """Rows (u, v) hold both directions of every edge at u (or a slice of them, see `route_rows`). For
    each u with m = min(u, neighbours): every neighbour v > u is re-attached to m. Returns rows (v, m),
    v > m, and how many nodes changed (had a larger neighbour and a smaller one)."""
    e, starts, group = _grouped(e)
    if len(e) == 0:
        return e, 0
    u, v = e[:, 0], e[:, 1]
    m = np.minimum(u[starts], v[starts])[group]  # v is sorted within u: v[start] is the smallest
    up = v > u
    changed = np.unique(group[up & (m < u)]).size
    return np.stack([v[up], m[up]], axis=1), int(changed)


def small_star(e: np.ndarray) -> tuple[np.ndarray, int]:
    """Rows (u, v), v < u, at u. With m the smallest such v: u and every v != m are attached to m.
    Returns rows (x, m), x > m, and how many nodes changed (had more than one smaller neighbour)."""
    e, starts, group = _grouped(e)
    if len(e) == 0:
        return e, 0
    u, v = e[:, 0], e[:, 1]
    m = v[starts]
    rest = v != m[group]
    out = np.concatenate([np.stack([u[starts], m], axis=1), np.stack([v[rest], m[group][rest]], axis=1)])
    return out, int((np.diff(np.r_[starts, len(e)]) > 1).sum())


def partition_of_keys(keys: np.ndarray, partitions: int) -> np.ndarray:
    """Partition of int64 document keys: mixed first (keys are structured: run, shard, row)."""
    return (splitmix64(keys.astype(np.uint64)) % np.uint64(partitions)).astype(np.int64)


# A node with more rows than this (over all the tasks of a round) is split: its rows go, in slices, to
# several partitions. A star's centre (a boilerplate page with a million near copies) would
# otherwise bring its whole neighbourhood into one task, whatever the partition count (measured on the
# 10^7-edge hard graph: the star's task held 1.38M rows at 64 partitions). Each slice runs the step on
# part of the neighbourhood: edges still only ever move to smaller nodes of the same component. What a
# slice cannot see is the rest (a large-star slice of only larger neighbours does not know that u also
# has a smaller one elsewhere), so each sliced key's smallest and largest row also go to the key's own
# partition: that task sees u's smallest and largest neighbour overall and reports a change whenever
# the whole neighbourhood would. The fixed point (no change in a large-star and a small-star) is
# therefore still "every component a star".
MAX_KEY_ROWS = 1 << 16


def route_rows(e: np.ndarray, partitions: int, senders: int = 1, max_key_rows: int = MAX_KEY_ROWS) -> list[np.ndarray]:
    """The rows of e for each partition of their first column. `senders` tasks route into the same
    partitions, so a key with more than max_key_rows / senders rows here is sliced (see above): no
    partition then gets more than ~max_key_rows rows of one key from all of them together."""
    part = partition_of_keys(e[:, 0], partitions)
    limit = max(2, max_key_rows // max(1, senders))
    if len(e) > limit:
        _, inverse, counts = np.unique(e[:, 0], return_inverse=True, return_counts=True)
        heavy = counts[inverse] > limit
        if heavy.any():
            h, starts, group = _grouped(e[heavy])  # distinct rows sorted by (key, other)
            ends = np.r_[starts[1:], len(h)]
            size = (ends - starts)[group]
            rank = np.arange(len(h)) - starts[group]
            slices = -(-size // limit)  # ceil: balanced slices
            salt = (rank * slices // size).astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)
            hpart = partition_of_keys((h[:, 0].astype(np.uint64) ^ salt).view(np.int64), partitions)
            extremes = np.concatenate([h[starts], h[ends - 1]])  # to the key's own partition too
            part = np.concatenate([part[~heavy], hpart, partition_of_keys(extremes[:, 0], partitions)])
            e = np.concatenate([e[~heavy], h, extremes])
    order = np.argsort(part, kind="stable")
    bounds = np.searchsorted(part[order], np.arange(partitions + 1))
    e = e[order]
    return [np.ascontiguousarray(e[bounds[p]:bounds[p + 1]]) for p in range(partitions)]


def both_directions(e: np.ndarray) -> np.ndarray:
    return np.concatenate([e, e[:, ::-1]])


def bucket_edges(band: np.ndarray, doc: np.ndarray, fingerprint: np.ndarray | None = None) -> np.ndarray:
    """Star edges (doc, smallest doc of its bucket) for every band bucket of 2+ documents.

    With `fingerprint` (the exact-dedup hash of each row's document), rows of one bucket with equal
    fingerprints collapse to their smallest doc first: exact duplicates share every bucket with the
    document that survives exact dedup, so dropping their rows here removes them exactly as if they
    had never been there (and no cluster-wide set of exact duplicates is needed)."""
    if len(band) == 0:
        return np.zeros((0, 2), EDGE)
    fp = np.zeros(len(band), np.uint64) if fingerprint is None else fingerprint
    order = np.lexsort((doc, fp, band)) if fingerprint is not None else np.lexsort((doc, band))
    band, fp, doc = band[order], fp[order], doc[order]
    keep = np.r_[True, (band[1:] != band[:-1]) | (fp[1:] != fp[:-1])] if fingerprint is not None else \
        np.r_[True, (band[1:] != band[:-1]) | (doc[1:] != doc[:-1])]
    band, doc = band[keep], doc[keep]
    first = np.r_[True, band[1:] != band[:-1]]
    starts = np.flatnonzero(first)
    smallest = np.minimum.reduceat(doc, starts)[np.cumsum(first) - 1]
    other = doc != smallest
    return np.stack([doc[other], smallest[other]], axis=1).astype(EDGE)
