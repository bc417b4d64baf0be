"""Decontamination: drop documents that share a word n-gram with an evaluation suite (pipelines/decontam.py).

One-to-one, fused into the last pass before tokenization. Before the passes the run builds the suite's n-gram
index once per suite digest (orchestration/corpus/steps/decontaminate.py: WORKDIR/decontam/<digest>-n<n>.npz) and
names it here; every worker loads it once. A dropped document's metadata names the evaluation item it matched
(`decontam_match`, `set#index`) and the words they share (`decontam_words`): `tokenmill lineage --doc` shows them.
The stage's run counts the drops per evaluation set (`matched.<set>`).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import pyarrow as pa

from pipelines import storage
from pipelines.decontam import NgramIndex
from pipelines.records import REASON, dump_metadata, load_metadata
from pipelines.reasons import REASON_DECONTAM
from pipelines.stages.base import Report, ShardContext, Stage, set_column
from pipelines.typed_config import ConfigError, PathStr, PositiveInt


SUITE_TAG = "tokenmill.decontaminated.suite_digest"  # on the stage's and the pipeline's run
NGRAM_TAG = "tokenmill.decontaminated.ngram"
DROPPED_TAG = "tokenmill.decontaminated.dropped"


@dataclass(frozen=True)
class DecontaminateConfig:
    enabled: bool = False
    suite: PathStr | None = None  # an evaluation suite (configs/eval/*.yaml): its tasks' items and held-out texts
    ngram: PositiveInt = 13  # words per n-gram (GPT-3, DCLM, dolma: 13)
    index_path: PathStr | None = None  # set by the run before the passes: the suite's n-gram index

    def validate(self, key: str) -> None:
        if self.enabled and not self.suite:
            raise ConfigError(f"{key}.suite: required when decontaminate is enabled (an evaluation suite YAML)")


@lru_cache(maxsize=2)
def _index(path: str) -> NgramIndex:
    return NgramIndex.load(storage.local_copy(path))


class DecontaminateStage(Stage):
    name = "decontaminate"
    Config = DecontaminateConfig

    def params(self) -> dict:
        # the index file is named by the suite's digest and n: what it holds, not where it lies
        index = Path(str(self.cfg.index_path)).name if self.cfg.index_path else None
        return {"ngram": self.cfg.ngram, "index": index}

    def open_shard(self, ctx: ShardContext) -> None:
        if not self.cfg.index_path:
            raise ValueError("decontaminate: no n-gram index (the run builds it before the passes)")
        self._matched: Counter = Counter()

    def apply(self, batch: pa.Table, ctx: ShardContext) -> pa.Table:
        index = _index(str(self.cfg.index_path))
        reasons, metas = [], []
        for text, meta_s, reason in zip(batch.column("text").to_pylist(), batch.column("metadata").to_pylist(),
                                        batch.column(REASON).to_pylist()):
            found = index.match(text) if not reason else None
            if found is None:
                reasons.append(reason)
                metas.append(meta_s)
                continue
            item, shared = found
            meta = load_metadata(meta_s)
            meta["decontam_match"], meta["decontam_words"] = item, shared
            self._matched[item.split("#", 1)[0]] += 1
            reasons.append(REASON_DECONTAM)
            metas.append(dump_metadata(meta))
        return set_column(set_column(batch, "metadata", metas), REASON, reasons)

    def close_shard(self, ctx: ShardContext) -> dict:
        return {"matched": dict(self._matched)} if self._matched else {}

    def report(self, extras: list[dict], state: dict) -> Report:
        total: Counter = Counter()
        for e in extras:
            total.update(e.get("matched", {}))
        if not self.cfg.index_path:
            return Report()
        digest = Path(str(self.cfg.index_path)).name.rsplit("-n", 1)[0]  # the suite's digest names its index
        return Report({f"matched.{s}": float(total.get(s, 0)) for s in _index(str(self.cfg.index_path)).sets},
                      models=[("eval_ngrams", str(self.cfg.index_path), digest)],
                      tags={SUITE_TAG: digest, NGRAM_TAG: str(self.cfg.ngram),
                            DROPPED_TAG: str(sum(total.values()))})
