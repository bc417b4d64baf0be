"""Exact dedup on Ray Data: hash-partition by text hash (groupby on the cluster), keep the first id."""

from __future__ import annotations

import pyarrow as pa
from ray.data.aggregate import Count

from orchestration import plots
from orchestration.stage_output import read_stage
from orchestration.stage_runner import StagePlan, StageResult
from pipelines.exact_dedup import mark_group, text_hashes

HASH_COL = "_text_hash"


def _add_hash(batch: pa.Table, mode: str) -> pa.Table:
    hashes = text_hashes(batch.column("text").to_pylist(), mode)
    return batch.append_column(HASH_COL, pa.array(hashes, pa.string())).append_column(
        "_reason", pa.array([""] * batch.num_rows, pa.string())
    )


def _mark(group: pa.Table) -> pa.Table:
    return mark_group(group).drop_columns([HASH_COL])


def plan(prev: StageResult, normalize: str, batch_docs: int) -> StagePlan:
    hashed = read_stage(prev.kept_files, batch_docs).map_batches(
        _add_hash, batch_format="pyarrow", fn_kwargs={"mode": normalize}
    ).materialize()  # hashed once, used twice: the dedup and the group-size statistics

    def extras(out_files) -> dict:
        # sizes of equal-text groups, counted on the cluster: only the small histogram reaches the driver
        per_hash = hashed.select_columns([HASH_COL]).groupby(HASH_COL).count()
        dist = {r["count()"]: r["n"] for r in per_hash.groupby("count()").aggregate(Count(alias_name="n")).take_all()}
        return {
            "metrics": {"duplicate_groups": sum(n for s, n in dist.items() if s > 1)},
            "figures": {"plots/duplicate_group_sizes.png": plots.counts_bar(
                "exact_dedup: documents per distinct text", "group size", dict(dist))},
        }

    deduped = hashed.groupby(HASH_COL).map_groups(_mark, batch_format="pyarrow")
    return StagePlan(deduped, prev.counts["kept"], extras, prev.stage, prev.manifest_path, prev.manifest["digest"])
