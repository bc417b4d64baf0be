"""Quality scoring on Ray Data: an actor pool of fastText classifiers (each loads the model once) scores
every document; documents are kept above a threshold or in the global top fraction."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import ray

from orchestration import plots
from orchestration.pipeline_config import QualityConfig, RayConfig
from orchestration.stage_output import read_stage
from orchestration.stage_runner import StagePlan, StageResult
from orchestration.stages.filter import actor_cpus
from pipelines.quality import QualityScorer
from pipelines.records import REASON, dump_metadata, load_metadata

REASON_QUALITY = "quality"
SCORE_COL = "_quality_score"
FINE_BINS = 1 << 16  # global cut-off resolution for keep_fraction: 1/65536 of the score range


class QualityActor:
    def __init__(self, model_path: str, positive_label: str):
        self.scorer = QualityScorer(model_path, positive_label=positive_label)

    def __call__(self, batch: pa.Table) -> pa.Table:
        scores = self.scorer.score(batch.column("text").to_pylist())
        metas = []
        for meta_s, score in zip(batch.column("metadata").to_pylist(), scores):
            meta = load_metadata(meta_s)
            meta["quality_score"] = round(float(score), 6)
            metas.append(dump_metadata(meta))
        batch = batch.set_column(batch.schema.get_field_index("metadata"), "metadata", pa.array(metas, pa.string()))
        return batch.append_column(SCORE_COL, pa.array(scores, pa.float32()))


def _fine_hist(batch: pa.Table) -> dict:
    scores = batch.column(SCORE_COL).to_numpy()
    return {"hist": [np.bincount(_bins(scores), minlength=FINE_BINS)]}


def _bins(scores: np.ndarray) -> np.ndarray:
    return np.minimum((scores.astype(np.float64) * FINE_BINS).astype(np.int64), FINE_BINS - 1)


def cutoff_from_histogram(hist: np.ndarray, keep_fraction: float) -> float:
    """Lowest bin edge such that the bins from it upwards hold at least keep_fraction of the documents."""
    need = int(np.ceil(keep_fraction * hist.sum()))
    from_top = np.cumsum(hist[::-1])
    k = int(np.searchsorted(from_top, need))  # number of top bins, minus one, needed
    return (FINE_BINS - 1 - k) / FINE_BINS


def _mark(batch: pa.Table, cutoff: float) -> pa.Table:
    # float64 compare: a float32 score s is in a bin >= b exactly when s >= b / 2**16 (powers of two)
    keep = pc.greater_equal(batch.column(SCORE_COL).cast(pa.float64()), pa.scalar(cutoff, pa.float64()))
    reasons = pc.if_else(keep, "", REASON_QUALITY)
    return batch.append_column(REASON, reasons).drop_columns([SCORE_COL])


def plan(prev: StageResult, cfg: QualityConfig, ray_cfg: RayConfig) -> StagePlan:
    scored = read_stage(prev.kept_files, ray_cfg.read_block_docs).map_batches(
        QualityActor,
        fn_constructor_kwargs={"model_path": cfg.model_path, "positive_label": cfg.positive_label},
        batch_size=ray_cfg.batch_size,
        batch_format="pyarrow",
        compute=ray.data.ActorPoolStrategy(size=ray_cfg.actors),
        num_cpus=actor_cpus(ray_cfg),
    ).materialize()  # scored once; read by the histogram and by the marking pass
    rows = scored.map_batches(_fine_hist, batch_format="pyarrow").take_all()
    hist = np.sum([r["hist"] for r in rows], axis=0) if rows else np.zeros(FINE_BINS, dtype=np.int64)
    cutoff = cfg.threshold if cfg.threshold is not None else cutoff_from_histogram(hist, cfg.keep_fraction)
    marked = scored.map_batches(_mark, batch_format="pyarrow", fn_kwargs={"cutoff": float(cutoff)})

    def extras(out_files) -> dict:
        coarse = hist.reshape(64, -1).sum(axis=1)
        fig = plots.binned_bar(f"quality: fastText score (cut-off {cutoff:.4f})", "P(positive label)",
                               np.linspace(0, 1, 65), coarse)
        fig.axes[0].axvline(cutoff, color="red")
        return {"metrics": {"quality_cutoff": float(cutoff)}, "figures": {"plots/quality_scores.png": fig}}

    return StagePlan(marked, prev.counts["kept"], extras, prev.stage, prev.manifest_path, prev.manifest["digest"])
