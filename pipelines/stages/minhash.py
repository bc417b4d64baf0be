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

import numpy as np
import pyarrow as pa
import xxhash

from pipelines.exact_dedup import normalize
from pipelines.minhash import MinHashConfig, band_keys, signatures
from pipelines.stages.base import ShardContext, Stage
from pipelines.stages.dedup_common import KEY_FORMAT, PART_COL, ROW_COL, DropListStage, partition_of, shard_rows

REASON_NEAR = "near_duplicate"


class MinHashStage(DropListStage, Stage):
    name = "minhash"
    needs_global = True
    collect_with = ("exact_dedup",)
    reason = REASON_NEAR

    def __init__(self, cfg, partitions: int = 8, exact_normalize: str | None = None):
        Stage.__init__(self, cfg)
        self.partitions = partitions
        self.exact_normalize = exact_normalize
        self.mh = MinHashConfig(ngram=cfg.ngram, bands=cfg.bands, rows=cfg.rows, seed=cfg.seed)

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
