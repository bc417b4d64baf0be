"""Connected components on the real Ray rounds over a hard synthetic graph, against scipy's."""

from __future__ import annotations

import time

import numpy as np
import pytest
from reference import hard_graph, reference_survivors

from pipelines.components import both_directions, route_rows

pytestmark = pytest.mark.slow


def test_components_on_ray_a_million_edges(ray_local):
    """A chain, a giant star and many small components on the real Ray rounds (10^7 edges: make bench)."""
    import ray

    from orchestration.corpus.components import star_components

    e = hard_graph(seed=7, chain=60_000, star=200_000, small_edges=750_000)
    assert len(e) >= 1_000_000
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
    # no task holds the giant star: its centre's 200k rows are sliced over the partitions (unsliced, its task
    # would hold ~200k rows more than the average of the first, largest round: 2 * edges / P = 250k)
    assert max(r["max_task_rows"] for r in rounds) < 1.3 * 2 * len(e) / partitions
    print(f"\ncomponents: {len(e):,} edges, {len(nodes):,} nodes, {len(rounds)} rounds, {wall:.1f} s, "
          f"largest task {max(r['max_task_rows'] for r in rounds):,} rows, "
          f"task heap {max(r['peak_heap_mb'] for r in rounds):.0f} MB, RSS {max(r['peak_rss_mb'] for r in rounds):.0f} MB")

