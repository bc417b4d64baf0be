"""Test oracles: simple, in-process reference implementations that the distributed production code must agree with.
They live here, not in the production modules (the review of 3134a46: oracles inside production modules)."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipelines.minhash import MinHashConfig, band_keys, signatures
from pipelines.tokenizer import sample_key


def edges_from_bucket(ids: list[str]) -> list[tuple[str, str]]:
    """Star edges (smallest id, other id) for the documents of one band bucket; [] under 2 distinct ids."""
    distinct = sorted(set(ids))
    return [(distinct[0], other) for other in distinct[1:]]


def _as_strings(values: Sequence[str] | pa.Array | pa.ChunkedArray) -> pa.Array:
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    if not isinstance(values, pa.Array):
        values = pa.array(values if isinstance(values, list) else list(values), type=pa.large_string())
    if values.null_count:
        raise ValueError("edge ids must not be null")
    return values.cast(pa.large_string())


def _min_labels(u: np.ndarray, v: np.ndarray, n: int) -> np.ndarray:
    """For each node 0..n-1, the smallest node of its component over the edges (u[i], v[i])."""
    parent = np.arange(n, dtype=np.int64)
    while True:
        # Invariant here: parent[x] is x's root. Edges inside one tree stay inside it forever: drop them.
        ru, rv = parent[u], parent[v]
        cross = ru != rv
        if not cross.any():
            return parent
        u, v, ru, rv = u[cross], v[cross], ru[cross], rv[cross]
        np.minimum.at(parent, np.maximum(ru, rv), np.minimum(ru, rv))
        while True:  # pointer jumping: depth halves each pass
            grand = parent[parent]
            if np.array_equal(grand, parent):
                break
            parent = grand


def connected_components(a: Sequence[str], b: Sequence[str]) -> dict[str, str]:
    """id -> survivor (lexicographically smallest id of its component) for every id in an edge a[i]-b[i].

    Accepts lists or Arrow string arrays. The survivor maps to itself."""
    if len(a) != len(b):
        raise ValueError(f"{len(a)} edge sources but {len(b)} edge targets")
    if len(a) == 0:
        return {}
    both = pa.concat_arrays([_as_strings(a), _as_strings(b)])
    encoded = both.dictionary_encode()
    distinct = encoded.dictionary
    order = pc.sort_indices(distinct).to_numpy()  # byte order of UTF-8 == code point order == str order
    rank = np.empty(len(order), dtype=np.int64)
    rank[order] = np.arange(len(order))
    codes = rank[encoded.indices.to_numpy()]
    labels = _min_labels(codes[: len(a)], codes[len(a):], len(order))
    ids = distinct.take(pa.array(order))
    return dict(zip(ids.to_pylist(), ids.take(pa.array(labels)).to_pylist()))


def cluster_sizes(mapping: dict[str, str]) -> list[int]:
    """Sizes of the clusters of an id -> survivor mapping, largest first."""
    return sorted(Counter(mapping.values()).values(), reverse=True)


def near_duplicate_survivors(ids: list[str], texts: list[str], cfg: MinHashConfig) -> dict[str, str]:
    """In-process reference of the distributed flow: band keys -> buckets -> star edges -> connected
    components. Returns every id's survivor (the smallest id of its cluster; itself when not grouped)."""
    if len(ids) != len(texts):
        raise ValueError(f"{len(ids)} ids but {len(texts)} texts")
    if len(set(ids)) != len(ids):
        raise ValueError("ids must be unique")
    keys = band_keys(signatures(texts, cfg), cfg).reshape(-1)
    owner = np.repeat(np.arange(len(ids)), cfg.bands)
    order = np.argsort(keys, kind="stable")
    keys, owner = keys[order], owner[order]
    bounds = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1], True])
    edge_a: list[str] = []
    edge_b: list[str] = []
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        if hi - lo > 1:
            for x, y in edges_from_bucket([ids[i] for i in owner[lo:hi]]):
                edge_a.append(x)
                edge_b.append(y)
    survivor = {i: i for i in ids}
    survivor.update(connected_components(edge_a, edge_b))
    return survivor


def top_fraction_threshold(scores: np.ndarray, keep_fraction: float) -> float:
    """Global cut-off for keeping the top keep_fraction of documents: keep a document when
    score >= the returned value.

    The value is the k-th highest score, k = ceil(keep_fraction * n) (at least the asked fraction is
    kept). Tie rule: every document tied with the k-th score is kept too, so exactly k are kept when
    scores are distinct and possibly more when ties straddle the cut. keep_fraction = 0 gives +inf
    (nothing kept); keep_fraction = 1 gives the minimum score (everything kept).
    """
    scores = np.asarray(scores).ravel()
    if not 0.0 <= keep_fraction <= 1.0:
        raise ValueError(f"keep_fraction must be in [0, 1], got {keep_fraction}")
    if scores.size == 0:
        raise ValueError("no scores")
    if np.isnan(scores).any():
        raise ValueError("scores contain NaN")
    # a hair of tolerance: 0.3 * 10 is 3.0000000000000004, which must not round up to 4
    k = min(scores.size, math.ceil(keep_fraction * scores.size - 1e-9))
    if k == 0:
        return math.inf
    return float(np.sort(scores)[::-1][k - 1])


def sample_for_training(ids: list[str], texts: list[str], n: int, seed: int) -> list[str]:
    """The texts of the n documents with the smallest `sample_key(id, seed)`, in key order (the tokenize
    stage's distributed sample, in one process).

    Depends only on the set of (id, text) pairs: not on their order nor on how they were
    partitioned (the n smallest keys of a union are among the n smallest of each part, so a
    distributed caller can take `n` per partition and apply this again to the union).
    """
    if len(ids) != len(texts):
        raise ValueError(f"{len(ids)} ids but {len(texts)} texts")
    keyed = sorted(((sample_key(i, seed), i, k) for k, i in enumerate(ids)), key=lambda t: (t[0], t[1]))
    return [texts[k] for _, _, k in keyed[: max(n, 0)]]


def plan_shards(doc_token_counts: list[tuple[str, int]], target_tokens: int) -> list[list[str]]:
    """Where `TokenShardWriter` cuts a stream of documents: consecutive files of at most `target_tokens` tokens.

    `doc_token_counts` holds (doc_id, n_tokens including the eos), in arrival order. A document is never
    split: a file is closed before the document that would take it over the target, and a document longer
    than the target gets a file of its own.
    """
    if target_tokens <= 0:
        raise ValueError(f"target_tokens must be positive, got {target_tokens}")
    shards: list[list[str]] = []
    current: list[str] = []
    size = 0
    for doc_id, n in doc_token_counts:
        if current and size + n > target_tokens:
            shards.append(current)
            current, size = [], 0
        current.append(doc_id)
        size += n
    if current:
        shards.append(current)
    return shards


def reference_survivors(e: np.ndarray) -> dict[int, int]:
    """node -> smallest node of its component, by scipy's connected components (not our algorithm)."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    nodes, inv = np.unique(e.reshape(-1), return_inverse=True)
    inv = inv.reshape(-1, 2)
    n = len(nodes)
    graph = coo_matrix((np.ones(len(e), np.int8), (inv[:, 0], inv[:, 1])), shape=(n, n))
    _, label = connected_components(graph, directed=False)
    smallest = np.full(label.max() + 1, np.iinfo(np.int64).max)
    np.minimum.at(smallest, label, nodes)
    return nodes, smallest[label]


def hard_graph(seed: int, chain: int, star: int, small_edges: int) -> np.ndarray:
    """Edges over random 62-bit keys: one long path whose keys increase along it (min-label propagation
    needs `chain` rounds on it), one star whose centre is not its smallest key, and many small random
    components; plus every tenth edge again, reversed."""
    rng = np.random.default_rng(seed)
    n = chain + star + 1 + small_edges + small_edges // 4
    keys = np.unique(rng.integers(0, 1 << 62, size=int(n * 1.01), dtype=np.int64))[:n]
    keys = keys[rng.permutation(len(keys))]
    path = np.sort(keys[:chain])
    edges = [np.stack([path[:-1], path[1:]], axis=1)]
    centre, leaves = keys[chain], keys[chain + 1: chain + 1 + star]
    leaves = np.r_[leaves, path[len(path) // 2]]  # the star's centre joins the path: one giant component
    edges.append(np.stack([np.full(len(leaves), centre), leaves], axis=1))
    rest = keys[chain + 1 + star:]
    comp = rng.integers(0, len(rest) // 8, size=len(rest))  # ~8 nodes per small component
    order = np.argsort(comp, kind="stable")
    rest, comp = rest[order], comp[order]
    a = rng.integers(0, len(rest), size=small_edges)
    lo = np.searchsorted(comp, comp[a], side="left")
    hi = np.searchsorted(comp, comp[a], side="right")
    b = lo + (rng.random(small_edges) * (hi - lo)).astype(np.int64)
    small = np.stack([rest[a], rest[b]], axis=1)
    edges.append(small[small[:, 0] != small[:, 1]])
    e = np.concatenate(edges).astype(np.int64)
    e = e[rng.permutation(len(e))]
    return np.concatenate([e, e[::10, ::-1]])
