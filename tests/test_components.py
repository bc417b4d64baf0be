"""Connected components: the per-partition star steps (numpy, no Ray) and the distributed rounds on Ray
over a hard synthetic graph, against an independent single-process reference (scipy's)."""

from __future__ import annotations

import time

import numpy as np
import pytest

from pipelines.components import (EDGE, both_directions, bucket_edges, large_star, partition_of_keys, route_rows,
                                  small_star)


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


def local_components(e: np.ndarray, partitions: int = 3, max_key_rows: int = 1 << 16,
                     producers: list[slice] = (slice(None),)) -> tuple[np.ndarray, np.ndarray, int]:
    """The distributed algorithm in one process: (nodes that are not survivors, their survivors, rounds).
    `producers`: the slices of e that the first round's tasks each route (as the bucket tasks do)."""
    routed = [route_rows(both_directions(e[s]), partitions, len(producers), max_key_rows) for s in producers]
    parts = [np.concatenate([r[p] for r in routed]) for p in range(partitions)]
    kind, quiet, rounds = "large", 0, 0
    while quiet < 2:
        outs = [(large_star if kind == "large" else small_star)(p) for p in parts]
        changed = sum(o[1] for o in outs)
        rounds += 1
        quiet = quiet + 1 if changed == 0 else 0
        rows = np.concatenate([o[0] for o in outs])
        rows = both_directions(rows) if kind == "small" else rows
        parts = route_rows(rows, partitions, partitions, max_key_rows)
        kind = "small" if kind == "large" else "large"
    final = np.concatenate(parts)
    final = np.unique(final[final[:, 0] > final[:, 1]], axis=0)
    return final[:, 0], final[:, 1], rounds


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
    e = np.concatenate(edges).astype(EDGE)
    e = e[rng.permutation(len(e))]
    return np.concatenate([e, e[::10, ::-1]])


def test_bucket_edges_star_to_the_smallest_and_collapse_exact_duplicates():
    band = np.array([7, 7, 7, 9, 9, 5], np.uint64)
    doc = np.array([30, 10, 20, 40, 40, 1], np.int64)
    assert bucket_edges(band, doc).tolist() == [[20, 10], [30, 10]]  # 9: one document twice; 5: alone
    fp = np.array([1, 2, 1, 3, 3, 4], np.uint64)  # 30 is an exact duplicate of 20 (same fingerprint)
    assert bucket_edges(band, doc, fp).tolist() == [[20, 10]]


def test_star_steps_reach_the_smallest_key_of_each_component():
    e = hard_graph(seed=1, chain=2_000, star=1_000, small_edges=5_000)
    nodes, smallest = reference_survivors(e)
    x, m, rounds = local_components(e)
    expected = {int(a): int(b) for a, b in zip(nodes, smallest) if a != b}
    assert dict(zip(x.tolist(), m.tolist())) == expected
    assert rounds <= 4 * int(np.log2(len(nodes)))
    # independent of the partitioning and of the order rows arrive in
    x2, m2, _ = local_components(e[::-1], partitions=7)
    assert x2.tolist() == x.tolist() and m2.tolist() == m.tolist()
    # with every node of more than 40 rows sliced over several partitions (the star's centre, and the
    # path's nodes once large-star has gathered them): the same stars
    x3, m3, _ = local_components(e, partitions=5, max_key_rows=40)
    assert x3.tolist() == x.tolist() and m3.tolist() == m.tolist()


def test_a_sliced_node_with_smaller_and_larger_neighbours_is_not_taken_for_converged():
    """w < u < v1..v99, the edge u-w from one task and u's 99 others from another, sliced: no slice holds
    both w and a v, yet u's own partition gets u's smallest and largest neighbour and sees the change;
    the result is one star on w (not v -> u, u -> w)."""
    w, u = 1, 2
    e = np.array([[u, w]] + [[u, v] for v in range(3, 102)], EDGE)
    for partitions in (8, 16, 32, 64):
        x, m, _ = local_components(e, partitions, max_key_rows=120, producers=[slice(0, 1), slice(1, None)])
        assert set(m.tolist()) == {w} and sorted(x.tolist()) == list(range(2, 102))
        # the mechanism: u's 99 rows of the second task go out in 2 slices, and u's smallest and largest
        # rows also go to u's own partition
        parts = route_rows(e[1:], partitions, max_key_rows=60)
        home = int(partition_of_keys(np.array([u]), partitions)[0])
        assert sum(len(p) for p in parts) == 99 + 2
        assert {3, 101} <= set(parts[home][:, 1].tolist())


@pytest.mark.slow
def test_components_on_ray_two_million_edges(ray_local):
    """A chain, a giant star and many small components on the real Ray rounds (10^7 edges: make bench)."""
    import ray

    from orchestration.corpus.components import star_components

    e = hard_graph(seed=7, chain=120_000, star=400_000, small_edges=1_500_000)
    assert len(e) >= 2_000_000
    nodes, smallest = reference_survivors(e)
    partitions = 8
    producers = [route_rows(both_directions(c), partitions, senders=4) for c in np.array_split(e, 4)]
    first = [[ray.put(p) for p in parts] for parts in producers]
    del producers
    t0 = time.perf_counter()
    final, rounds = star_components(first, partitions)
    wall = time.perf_counter() - t0
    rows = np.concatenate([r for refs in final for r in ray.get(refs)])
    rows = np.unique(rows[rows[:, 0] > rows[:, 1]], axis=0)  # a sliced node's extremes travel twice
    is_dup = nodes != smallest
    assert len(rows) == is_dup.sum() and len(np.unique(rows[:, 0])) == len(rows)
    assert np.array_equal(rows[:, 0], nodes[is_dup]) and np.array_equal(rows[:, 1], smallest[is_dup])
    assert len(rounds) <= 4 * int(np.log2(len(nodes)))
    # no task holds the giant star: its centre's 400k rows are sliced over the partitions (unsliced, its task
    # would hold ~400k rows more than the average of the first, largest round: 2 * edges / P = 500k)
    assert max(r["max_task_rows"] for r in rounds) < 1.3 * 2 * len(e) / partitions
    print(f"\ncomponents: {len(e):,} edges, {len(nodes):,} nodes, {len(rounds)} rounds, {wall:.1f} s, "
          f"largest task {max(r['max_task_rows'] for r in rounds):,} rows, "
          f"task heap {max(r['peak_heap_mb'] for r in rounds):.0f} MB, RSS {max(r['peak_rss_mb'] for r in rounds):.0f} MB")
