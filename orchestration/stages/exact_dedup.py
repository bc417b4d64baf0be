"""Exact dedup on Ray Data: (id, text hash) rows grouped by hash on the cluster; each group's smallest
id survives; the (duplicate id, survivor) rows are joined to the documents during the output write."""

from __future__ import annotations

from functools import partial

import pyarrow as pa
from ray.data.aggregate import Count

from orchestration import plots
from orchestration.pipeline_config import RayConfig
from orchestration.stage_output import read_stage
from orchestration.stage_runner import StagePlan, StageResult
from pipelines.duplicates import mark_duplicates, survivors_of_group, with_empty_reason
from pipelines.exact_dedup import REASON_EXACT, text_hashes

HASH_COL = "hash"


def _hash(batch: pa.Table, mode: str) -> pa.Table:
    hashes = text_hashes(batch.column("text").to_pylist(), mode)
    return pa.table({"id": batch.column("id"), HASH_COL: pa.array(hashes, pa.string())})


def _group_survivors(group: pa.Table) -> pa.Table:
    pairs = survivors_of_group(group.column("id").to_pylist())
    return pa.table({"id": pa.array([d for d, _ in pairs], pa.string()),
                     "value": pa.array([s for _, s in pairs], pa.string())})


def plan(prev: StageResult, normalize: str, ray_cfg: RayConfig) -> StagePlan:
    docs = read_stage(prev.kept_files, ray_cfg.read_block_docs)
    hashes = docs.map_batches(_hash, batch_format="pyarrow", fn_kwargs={"mode": normalize})
    # only duplicates leave the groupby: small next to the corpus, so keep it for the statistics
    by_hash = hashes.groupby(HASH_COL, num_partitions=ray_cfg.shuffle_partitions)
    dups = by_hash.map_groups(_group_survivors, batch_format="pyarrow").materialize()

    def extras(out_files) -> dict:
        # sizes of groups of equal texts (survivor + its duplicates), counted on the cluster
        dist = {}
        if dups.count():
            per_survivor = dups.groupby("value", num_partitions=ray_cfg.shuffle_partitions).count()
            sizes = per_survivor.groupby("count()", num_partitions=1).aggregate(Count(alias_name="n")).take_all()
            dist = {r["count()"] + 1: r["n"] for r in sizes}
        return {
            "metrics": {"duplicate_groups": sum(n for s, n in dist.items() if s > 1)},
            "figures": {"plots/duplicate_group_sizes.png": plots.counts_bar(
                "exact_dedup: documents per distinct text", "group size", dist or {1: 0})},
        }

    return StagePlan(docs.map_batches(with_empty_reason, batch_format="pyarrow"), prev.counts["kept"], extras,
                     prev.stage, prev.manifest_path, prev.manifest["digest"],
                     side=dups, merge=partial(mark_duplicates, reason=REASON_EXACT))
