"""Quality scoring with a fastText classifier: keep documents scoring at or above a cut-off.

With `threshold` the stage is one-to-one. With `keep_fraction` the cut-off is global: collect() adds each
shard's scores to a fine histogram (1/65536 of the score range), the global step picks the lowest bin
edge that keeps at least that fraction of the corpus, and apply() scores again and cuts there (scoring
twice costs less than a pass that writes every score beside the documents).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from functools import lru_cache
from typing import Annotated

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipelines.quality import QualityScorer
from pipelines.records import REASON, dump_metadata, load_metadata
from pipelines.reasons import REASON_QUALITY
from pipelines.stages.base import Plot, Report, ShardContext, Stage, set_column
from pipelines.typed_config import ConfigError, Fraction, PathStr, Range

FINE_BINS = 1 << 16


@dataclass(frozen=True)
class QualityConfig:
    enabled: bool = False
    model_path: PathStr | None = None  # a fastText classifier (trained by `tokenmill quality train`, or DCLM's)
    # ... or a `tokenmill quality train` YAML: without model_path, the pipeline trains it first, into
    # WORKDIR/quality/ (again only when that YAML changes), and uses it
    train: PathStr | None = None
    positive_label: str = "hq"
    threshold: Fraction | None = None  # keep documents scoring >= threshold ...
    # ... or keep this global top fraction (cut-off over the whole corpus)
    keep_fraction: Annotated[float, Range(lo=0, hi=1, lo_open=True)] | None = None

    def validate(self, key: str) -> None:
        if self.enabled and not (self.model_path or self.train):
            raise ConfigError(f"{key}.model_path: required when quality is enabled (or {key}.train: a quality "
                              "training YAML the pipeline trains first)")
        if self.enabled and (self.threshold is None) == (self.keep_fraction is None):
            raise ConfigError(f"{key}: give exactly one of threshold and keep_fraction")


@lru_cache(maxsize=2)
def _scorer(model_path: str, positive_label: str) -> QualityScorer:
    return QualityScorer(model_path, positive_label=positive_label)


def score_bins(scores: np.ndarray) -> np.ndarray:
    return np.minimum((scores.astype(np.float64) * FINE_BINS).astype(np.int64), FINE_BINS - 1)


def cutoff_from_histogram(hist: np.ndarray, keep_fraction: float) -> float:
    """Lowest bin edge such that the bins from it upwards hold at least keep_fraction of the documents."""
    need = int(np.ceil(keep_fraction * hist.sum()))
    from_top = np.cumsum(hist[::-1])
    k = int(np.searchsorted(from_top, need))
    return (FINE_BINS - 1 - k) / FINE_BINS


class QualityStage(Stage):
    name = "quality"
    Config = QualityConfig

    @classmethod
    def files(cls, pipeline) -> list[tuple[str, str, str]]:
        q = pipeline.quality
        if not q.enabled:
            return []
        # without model_path the run trains it first (orchestration/corpus/steps/quality.py): its config must be there
        return [("quality.model_path", q.model_path, "fasttext") if q.model_path else ("quality.train", q.train, "quality_train")]

    def params(self) -> dict:
        # `train` names the YAML the model was trained from (where it lies): the model's sha256 says what it is
        return {k: v for k, v in super().params().items() if k != "train"}

    def global_needed(self) -> bool:
        return self.cfg.keep_fraction is not None

    def open_shard(self, ctx: ShardContext) -> None:
        self._bins: Counter = Counter()

    def _scores(self, batch: pa.Table) -> np.ndarray:
        return _scorer(self.cfg.model_path, self.cfg.positive_label).score(batch.column("text").to_pylist())

    def collect(self, batch: pa.Table, ctx: ShardContext) -> dict:
        self._bins.update(score_bins(self._scores(batch)).tolist())
        return {}

    def close_shard(self, ctx: ShardContext) -> dict:
        return {"score_bins": {str(k): v for k, v in sorted(self._bins.items())}} if self._bins else {}

    def reduce(self, collected: list[dict]) -> dict:
        """The cut-off from the summed score histograms (65,536 counters)."""
        hist = np.zeros(FINE_BINS, dtype=np.int64)
        for extra in collected:
            for k, v in extra.get("score_bins", {}).items():
                hist[int(k)] += v
        return {"cutoff": cutoff_from_histogram(hist, self.cfg.keep_fraction),
                "hist": hist.reshape(64, -1).sum(axis=1).tolist()}

    def report(self, extras: list[dict], state: dict) -> Report:
        cutoff = state.get("cutoff", self.cfg.threshold)
        hist = np.zeros(FINE_BINS, dtype=np.int64)
        for e in extras:
            for k, v in e.get("score_bins", {}).items():
                hist[int(k)] += v
        coarse = state["hist"] if "hist" in state else hist.reshape(64, -1).sum(axis=1).tolist()
        shown = float(cutoff) if cutoff is not None else float("nan")
        return Report({"quality_cutoff": shown},
                      [Plot("plots/quality_scores.png", f"quality: fastText score (cut-off {shown:.4f})",
                            "P(positive label)", coarse, np.linspace(0, 1, 65).tolist(), cutoff)],
                      [("quality_model", self.cfg.model_path, self.params()["model_sha256"])])

    def cutoff(self, ctx: ShardContext) -> float:
        if self.cfg.threshold is not None:
            return float(self.cfg.threshold)
        return float(ctx.state["quality"]["cutoff"])

    def apply(self, batch: pa.Table, ctx: ShardContext) -> pa.Table:
        scores = self._scores(batch)
        cutoff = self.cutoff(ctx)
        metas = []
        for meta_s, score in zip(batch.column("metadata").to_pylist(), scores.tolist()):
            meta = load_metadata(meta_s)
            meta["quality_score"] = round(float(score), 6)
            if score < cutoff:  # a dropped document records the cut-off it missed (tokenmill lineage --doc)
                meta["quality_cutoff"] = cutoff
            metas.append(dump_metadata(meta))
        # float64 compare: a float32 score s is in a bin >= b exactly when s >= b / 2**16 (powers of two)
        keep = pc.greater_equal(pa.array(scores.astype(np.float64)), pa.scalar(cutoff, pa.float64()))
        batch = set_column(batch, "metadata", metas)
        if not self.global_needed():  # a fixed threshold: the histogram is collected while applying
            self._bins.update(score_bins(scores).tolist())
        return set_column(batch, REASON, pc.if_else(keep, "", REASON_QUALITY))
