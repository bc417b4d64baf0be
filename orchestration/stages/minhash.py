"""MinHash near-duplicate removal on Ray Data.

signatures + band keys per batch -> (band key, id) rows -> groupby band key on the cluster -> star edges
per bucket -> connected components in one Ray task over the candidate edges (only duplicates produce
edges, so this is small next to the corpus) -> (id, survivor) rows hash-joined to the documents inside
the output write's shuffle; the smallest id per component survives. Nothing here depends on block or worker counts: buckets, edges and components are sets.
"""

from __future__ import annotations

from collections import Counter
from functools import partial

import numpy as np
import pyarrow as pa
import ray

from orchestration import plots
from orchestration.pipeline_config import MinHashStageConfig, RayConfig
from orchestration.stage_output import read_stage
from orchestration.stage_runner import StagePlan, StageResult
from pipelines.components import connected_components, edges_from_bucket
from pipelines.minhash import MinHashConfig, band_keys, estimated_threshold, signatures
from pipelines.duplicates import mark_duplicates, with_empty_reason

REASON_NEAR = "near_duplicate"


def _band_rows(batch: pa.Table, cfg: MinHashConfig) -> pa.Table:
    ids = batch.column("id").to_numpy(zero_copy_only=False)
    keys = band_keys(signatures(batch.column("text").to_pylist(), cfg), cfg)  # (n, bands)
    return pa.table({"key": pa.array(keys.reshape(-1), pa.uint64()), "id": pa.array(np.repeat(ids, cfg.bands))})


def _bucket_edges(group: pa.Table) -> pa.Table:
    edges = edges_from_bucket(group.column("id").to_pylist())
    return pa.table({"a": pa.array([a for a, _ in edges], pa.string()), "b": pa.array([b for _, b in edges], pa.string())})


@ray.remote(num_returns=2)
def _components(edge_refs: list) -> tuple[pa.Table, dict]:
    tables = [t for t in ray.get(edge_refs) if t.num_rows]
    edges = pa.concat_tables(tables) if tables else pa.table({"a": pa.array([], pa.string()), "b": pa.array([], pa.string())})
    survivor = connected_components(edges.column("a").to_pylist(), edges.column("b").to_pylist())
    dup_ids = sorted(i for i, s in survivor.items() if i != s)
    sizes = Counter(Counter(survivor.values()).values())
    table = pa.table({"id": pa.array(dup_ids, pa.string()), "value": pa.array([survivor[i] for i in dup_ids], pa.string())})
    return table, {"edges": edges.num_rows, "clusters": sum(sizes.values()), "sizes": dict(sizes)}


def plan(prev: StageResult, cfg: MinHashStageConfig, ray_cfg: RayConfig) -> StagePlan:
    mh = MinHashConfig(ngram=cfg.ngram, bands=cfg.bands, rows=cfg.rows, seed=cfg.seed)
    docs = read_stage(prev.kept_files, ray_cfg.read_block_docs)
    keys = docs.map_batches(_band_rows, batch_size=ray_cfg.batch_size, batch_format="pyarrow", fn_kwargs={"cfg": mh})
    buckets = keys.groupby("key", num_partitions=ray_cfg.shuffle_partitions)
    edges = buckets.map_groups(_bucket_edges, batch_format="pyarrow")
    dup_ref, stats_ref = _components.remote(edges.to_arrow_refs())
    stats = ray.get(stats_ref)
    dups = ray.data.from_arrow_refs([dup_ref])

    def extras(out_files) -> dict:
        sizes = {int(k): v for k, v in stats["sizes"].items()}
        metrics = {"candidate_edges": stats["edges"], "duplicate_clusters": stats["clusters"],
                   "estimated_threshold": estimated_threshold(mh)}
        fig = plots.counts_bar("minhash: documents per near-duplicate cluster", "cluster size", sizes or {1: 0})
        return {"metrics": metrics, "figures": {"plots/cluster_sizes.png": fig}}

    return StagePlan(docs.map_batches(with_empty_reason, batch_format="pyarrow"), prev.counts["kept"], extras,
                     prev.stage, prev.manifest_path, prev.manifest["digest"],
                     side=dups, merge=partial(mark_duplicates, reason=REASON_NEAR))
