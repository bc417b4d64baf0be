"""Exact dedup: collect (hash of normalized text, id, shard, row) rows partitioned by hash; the global
step groups each partition by hash and drops all but the first document (smallest key, see
dedup_common) of each group; apply marks them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import pyarrow as pa

from pipelines.exact_dedup import text_hashes
from pipelines.reasons import REASON_EXACT
from pipelines.stages.base import Plot, Report, ShardContext, Stage
from pipelines.stages.dedup_common import KEY_FORMAT, PART_COL, ROW_COL, DropListStage, partition_of, shard_rows


@dataclass(frozen=True)
class ExactDedupConfig:
    enabled: bool = True
    # whitespace: collapse runs, strip ends; lower: also NFKC and lowercase
    normalize: Literal["none", "whitespace", "lower"] = "whitespace"


class ExactDedupStage(DropListStage, Stage):
    name = "exact_dedup"
    Config = ExactDedupConfig
    needs_global = True
    dedup_index = True
    index_columns = ("hash", "id")  # what this run's dedup index keeps of its key rows
    index_rows_per_document = 1
    reason = REASON_EXACT

    def __init__(self, cfg, partitions: int = 8):
        Stage.__init__(self, cfg)
        self.partitions = partitions

    @classmethod
    def from_config(cls, pipeline) -> "ExactDedupStage | None":
        return cls(pipeline.exact_dedup, pipeline.ray.shuffle_partitions) if pipeline.exact_dedup.enabled else None

    def index_params(self) -> dict:
        """What an earlier run's dedup index must share with this stage to be deduplicated against."""
        return {"normalize": self.cfg.normalize}

    def report(self, extras: list[dict], state: dict) -> Report:
        sizes = {int(k): v for k, v in state.get("group_sizes", {}).items()}
        return Report({"duplicate_groups": sum(n for s, n in sizes.items() if s > 1)},
                      [Plot("plots/duplicate_group_sizes.png", "exact_dedup: documents per distinct text", "group size",
                            sizes or {1: 0})])

    def params(self) -> dict:
        return {**super().params(), "key_format": KEY_FORMAT}

    def collect(self, batch: pa.Table, ctx: ShardContext) -> dict[str, pa.Table]:
        hashes = text_hashes(batch.column("text").to_pylist(), self.cfg.normalize).tolist()
        return {"keys": pa.table({
            "hash": pa.array(hashes, pa.string()), "id": batch.column("id"),
            "shard": pa.array([ctx.shard] * batch.num_rows, pa.string()), ROW_COL: shard_rows(batch, ctx),
            PART_COL: pa.array(partition_of(hashes, self.partitions)),
        })}
