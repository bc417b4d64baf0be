"""Heuristic filters, language ID and PII masking on Ray Data, in an actor pool (models load once)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pyarrow as pa
import ray

from orchestration import plots
from orchestration.pipeline_config import FilterConfig, RayConfig
from orchestration.stage_output import read_stage
from orchestration.stage_runner import StagePlan, StageResult
from pipelines.filters import FilterChain
from pipelines.langid import LanguageIdentifier
from pipelines.pii import mask_pii
from pipelines.records import dump_metadata, load_metadata

SCORE_BINS = np.linspace(0.0, 1.0, 41)


class FilterActor:
    def __init__(self, cfg: dict):
        self.cfg = cfg
        lang = cfg["language"]
        self.langid = (
            LanguageIdentifier(lang["model_path"], lang["languages"], lang["min_score"]) if lang["model_path"] else None
        )
        chain_cfg = {k: cfg[k] for k in ("word_splitter", "gopher_quality", "gopher_repetition", "c4", "fineweb")}
        self.chain = FilterChain(chain_cfg)

    def __call__(self, batch: pa.Table) -> pa.Table:
        texts, metas = batch.column("text").to_pylist(), [load_metadata(m) for m in batch.column("metadata").to_pylist()]
        reasons = [""] * len(texts)
        if self.langid is not None:
            langs, scores, lang_reasons = self.langid.classify(texts)
            for i, (lang, score, reason) in enumerate(zip(langs, scores, lang_reasons)):
                metas[i]["language"], metas[i]["language_score"] = lang, round(float(score), 4)
                reasons[i] = reason
        pii = self.cfg["pii"]
        for i, text in enumerate(texts):
            if reasons[i]:
                continue
            text, reasons[i] = self.chain.apply(text, metas[i])
            if not reasons[i] and (pii["emails"] or pii["ips"]):
                text, counts = mask_pii(text, emails=pii["emails"], ips=pii["ips"])
                if any(counts.values()):
                    metas[i]["pii_masked"] = counts
            texts[i] = text
        return pa.table({
            "id": batch.column("id"), "text": pa.array(texts, pa.string()), "source": batch.column("source"),
            "url": batch.column("url"), "metadata": pa.array([dump_metadata(m) for m in metas], pa.string()),
            "_reason": pa.array(reasons, pa.string()),
        })


def _score_hist(batch: pa.Table) -> dict:
    scores = [load_metadata(m).get("language_score") for m in batch.column("metadata").to_pylist()]
    scores = np.array([s for s in scores if s is not None], dtype=float)
    return {"hist": [np.histogram(scores, bins=SCORE_BINS)[0].tolist()]}


def actor_cpus(ray_cfg: RayConfig) -> float:
    """CPUs per actor, leaving a whole CPU for the read tasks that feed the pool: a pool that holds the
    CPUs a read task needs waits forever, silently ("backpressured"), e.g. on a 1-CPU Ray."""
    spare = ray.cluster_resources().get("CPU", 1.0) - 1.0
    return max(0.0, min(ray_cfg.actor_num_cpus, spare / ray_cfg.actors))


def plan(prev: StageResult, cfg: FilterConfig, ray_cfg: RayConfig) -> StagePlan:
    ds = read_stage(prev.kept_files, ray_cfg.read_block_docs).map_batches(
        FilterActor,
        fn_constructor_kwargs={"cfg": dataclasses.asdict(cfg)},
        batch_size=ray_cfg.batch_size,
        batch_format="pyarrow",
        compute=ray.data.ActorPoolStrategy(size=ray_cfg.actors),
        num_cpus=actor_cpus(ray_cfg),
    )
    def extras(out_files) -> dict:
        if not cfg.language.model_path:
            return {}
        rows = read_stage(out_files, ray_cfg.read_block_docs).map_batches(_score_hist, batch_format="pyarrow").take_all()
        hist = np.sum([r["hist"] for r in rows], axis=0) if rows else np.zeros(len(SCORE_BINS) - 1)
        fig = plots.binned_bar("filter: language ID score of the top label", "fastText score", SCORE_BINS, hist)
        return {"figures": {"plots/language_scores.png": fig}}

    return StagePlan(ds, prev.counts["kept"], extras, prev.stage, prev.manifest_path, prev.manifest["digest"])
