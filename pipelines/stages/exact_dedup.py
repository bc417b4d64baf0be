"""Exact dedup: collect (hash of normalized text, id, shard, row) rows partitioned by hash; the global
step groups each partition by hash and drops all but the first document (smallest key, see
dedup_common) of each group; apply marks them."""

from __future__ import annotations

import pyarrow as pa

from pipelines.exact_dedup import REASON_EXACT, text_hashes
from pipelines.stages.base import ShardContext, Stage
from pipelines.stages.dedup_common import KEY_FORMAT, PART_COL, ROW_COL, DropListStage, partition_of, shard_rows


class ExactDedupStage(DropListStage, Stage):
    name = "exact_dedup"
    needs_global = True
    reason = REASON_EXACT

    def __init__(self, cfg, partitions: int = 8):
        Stage.__init__(self, cfg)
        self.partitions = partitions

    def params(self) -> dict:
        return {**super().params(), "key_format": KEY_FORMAT}

    def collect(self, batch: pa.Table, ctx: ShardContext) -> dict[str, pa.Table]:
        hashes = text_hashes(batch.column("text").to_pylist(), self.cfg.normalize).tolist()
        return {"keys": pa.table({
            "hash": pa.array(hashes, pa.string()), "id": batch.column("id"),
            "shard": pa.array([ctx.shard] * batch.num_rows, pa.string()), ROW_COL: shard_rows(batch, ctx),
            PART_COL: pa.array(partition_of(hashes, self.partitions)),
        })}
