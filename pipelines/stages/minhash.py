"""MinHash near-duplicate removal: collect (band key, id, shard, row, fp) rows partitioned by band key;
the global step turns each bucket into star edges and the edges into connected components (the
smallest document key survives, see dedup_common); apply marks the rest.

The signatures are computed on the text as exact dedup normalizes it, so exact duplicates get identical
band keys by construction. That is what lets these keys be collected in the same pass as exact dedup's
(before exact duplicates are removed): a document D whose exact duplicate S < D survives shares every
bucket with S, so removing D's rows in the global step leaves every other component, and its smallest
key, exactly as if D had never been there. `fp` (a 64-bit hash of the normalized text) is what tells
the global step which rows of a bucket are exact duplicates of each other (two different texts with
equal fp in one bucket would lose one edge: probability 2**-64 per pair).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import xxhash

from pipelines.exact_dedup import normalize
from pipelines.reasons import REASON_NEAR
from pipelines.minhash import MinHashConfig, band_keys, signatures
from pipelines.stages.base import Plot, Report, ShardContext, Stage
from pipelines.stages.dedup_common import KEY_FORMAT, PART_COL, ROW_COL, DropListStage, partition_of, shard_rows



@dataclass(frozen=True)
class MinHashStageConfig(MinHashConfig):
    enabled: bool = True


class MinHashStage(DropListStage, Stage):
    name = "minhash"
    Config = MinHashStageConfig
    needs_global = True
    collect_with = ("exact_dedup",)
    dedup_index = True
    index_columns = ("key", "id", "fp")  # what this run's dedup index keeps of its key rows
    index_rows_per_document = None  # one per band
    reason = REASON_NEAR

    def __init__(self, cfg, partitions: int = 8, exact_normalize: str | None = None):
        Stage.__init__(self, cfg)
        self.partitions = partitions
        self.exact_normalize = exact_normalize
        self.mh = MinHashConfig(ngram=cfg.ngram, bands=cfg.bands, rows=cfg.rows, seed=cfg.seed)

    @classmethod
    def from_config(cls, pipeline) -> "MinHashStage | None":
        if not pipeline.minhash.enabled:
            return None
        exact = pipeline.exact_dedup.normalize if pipeline.exact_dedup.enabled else None
        return cls(pipeline.minhash, pipeline.ray.shuffle_partitions, exact)

    def index_params(self) -> dict:
        """What an earlier run's dedup index must share with this stage to be deduplicated against."""
        return {"ngram": self.cfg.ngram, "bands": self.cfg.bands, "rows": self.cfg.rows, "seed": self.cfg.seed,
                "exact_normalize": self.exact_normalize}

    def report(self, extras: list[dict], state: dict) -> Report:
        sizes = {int(k): v for k, v in state.get("cluster_sizes", {}).items()}
        return Report({"candidate_edges": state.get("candidate_edges", 0), "duplicate_clusters": state.get("clusters", 0),
                       "components_rounds": state.get("rounds", 0)},
                      [Plot("plots/cluster_sizes.png", "minhash: documents per near-duplicate cluster", "cluster size",
                            sizes or {1: 0})])

    def params(self) -> dict:
        return {**super().params(), "exact_normalize": self.exact_normalize, "key_format": KEY_FORMAT}

    def collect(self, batch: pa.Table, ctx: ShardContext) -> dict[str, pa.Table]:
        texts = batch.column("text").to_pylist()
        cols = {}
        if self.exact_normalize:
            texts = [normalize(t, self.exact_normalize) for t in texts]
            fps = np.fromiter((xxhash.xxh3_64_intdigest(t.encode("utf-8")) for t in texts), np.uint64, len(texts))
            cols["fp"] = pa.array(np.repeat(fps, self.mh.bands))
        keys = band_keys(signatures(texts, self.mh), self.mh).reshape(-1)  # (n * bands,)
        ids = np.repeat(np.asarray(batch.column("id").to_pylist(), dtype=object), self.mh.bands)
        return {"keys": pa.table({
            "key": pa.array(keys, pa.uint64()), "id": pa.array(ids, pa.string()),
            "shard": pa.array([ctx.shard] * len(ids), pa.string()),
            ROW_COL: pa.array(np.repeat(shard_rows(batch, ctx).to_numpy(), self.mh.bands)), **cols,
            PART_COL: pa.array(partition_of(keys, self.partitions)),
        })}
