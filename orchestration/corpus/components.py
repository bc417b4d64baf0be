"""Connected components on the cluster: rounds of alternating large-star / small-star
(`pipelines.components`), one Ray task per key partition per round, rows routed between rounds
through the object store.

Each round's task takes its partition's rows from every task of the round before, runs the step, and
returns its output already split by the next round's partition: P + 1 return values (the last is its
counts), so a round is an all-to-all exchange of small (int64, int64) rows and memory per task is
rows / partitions (a node with too many rows is sliced over partitions: `pipelines.components.route_rows`).
A lost worker's outputs are rebuilt by Ray from lineage (tasks are retried), so a round never starts
over.

The loop stops when one large-star and the small-star after it change nothing: the graph is then a
set of stars, each around its smallest key (see `pipelines.components`).
"""

from __future__ import annotations

import time
import tracemalloc

import numpy as np
import ray

from orchestration.corpus.passes import peak_rss_mb, reset_peak_rss
from pipelines.components import EDGE, both_directions, large_star, route_rows, small_star


@ray.remote(num_cpus=1, max_retries=3)
def _star_round(kind: str, partitions: int, *parts: np.ndarray):
    reset_peak_rss()
    # the task's own arrays (numpy reports its allocations to tracemalloc): RSS also counts the object
    # store pages a worker has mapped, shared with every other worker on the node
    tracemalloc.start()
    t0 = time.perf_counter()
    e = np.concatenate(parts) if parts else np.zeros((0, 2), EDGE)
    out, changed = (large_star if kind == "large" else small_star)(e)
    # small-star's output feeds large-star, which needs both directions at each node; large-star's
    # (v, m) rows feed small-star, which groups them at their larger end v
    nxt = both_directions(out) if kind == "small" else out
    routed = route_rows(nxt, partitions, senders=partitions)
    heap = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    return (*routed, {"rows_in": len(e), "rows_out": len(out), "changed": changed,
                      "seconds": time.perf_counter() - t0, "peak_rss_mb": peak_rss_mb(), "peak_heap_mb": heap})


def _wait_round(stats_refs: list) -> list[dict]:
    return ray.get(stats_refs)


def star_components(first: list[list], partitions: int, max_rounds: int = 400) -> tuple[list[list], list[dict]]:
    """first[t][p]: producer t's rows for partition p, in large-star layout (both directions of each
    edge, routed by the first column). Returns (refs[t][p] of the final rows, per-round counts); the
    final rows (x, m) with x > m, found in x's partition, give every non-survivor x its survivor m."""
    inputs = [[refs[p] for refs in first] for p in range(partitions)]
    kind, quiet, rounds = "large", 0, []
    while True:
        t0 = time.perf_counter()
        outs = [_star_round.options(num_returns=partitions + 1).remote(kind, partitions, *inputs[p])
                for p in range(partitions)]
        stats = _wait_round([o[partitions] for o in outs])
        changed = sum(s["changed"] for s in stats)
        rounds.append({"kind": kind, "rows": sum(s["rows_out"] for s in stats), "changed": changed,
                       "seconds": round(time.perf_counter() - t0, 3), "max_task_rows": max(s["rows_in"] for s in stats),
                       "peak_rss_mb": round(max(s["peak_rss_mb"] for s in stats), 1),
                       "peak_heap_mb": round(max(s["peak_heap_mb"] for s in stats), 1)})
        inputs = [[o[p] for o in outs] for p in range(partitions)]
        quiet = quiet + 1 if changed == 0 else 0
        if quiet >= 2:  # a large-star and a small-star in a row changed nothing: stars
            return [list(o[:partitions]) for o in outs], rounds
        if len(rounds) >= max_rounds:
            raise RuntimeError(f"connected components did not converge in {max_rounds} rounds "
                               f"(last rounds changed {[r['changed'] for r in rounds[-4:]]} nodes)")
        kind = "small" if kind == "large" else "large"
