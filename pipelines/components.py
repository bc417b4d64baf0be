"""Connected components over candidate near-duplicate edges between string document ids.

Ids are mapped to their rank in sorted order (Arrow dictionary encoding + a sort of the distinct ids),
so "smallest index" is "lexicographically smallest id" and the result does not depend on edge order.
Components come from vectorized min-label hooking with pointer jumping (numpy only): every round, the
larger root of each edge that still joins two trees is hooked under the smaller one, then every node is
pointed at its root. Parents only ever decrease, so each tree's root is its smallest member.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc


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
