"""Connected components: the per-partition star steps (numpy, no Ray) against an independent single-process
reference (scipy's); the distributed rounds on Ray are in tests/integration/test_components.py."""

from __future__ import annotations


import numpy as np

from reference import hard_graph, reference_survivors

from pipelines.components import (EDGE, both_directions, bucket_edges, large_star, partition_of_keys, route_rows,
                                  small_star)


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
