"""The corpus stages, in pipeline order: one class per file, one registry (adding a stage touches this
list and its own file). Each has the shape of `base.Stage`; `build` makes the enabled ones from a
pipeline config."""

from __future__ import annotations

from pipelines.stages.base import ShardContext, Stage
from pipelines.stages.exact_dedup import ExactDedupStage
from pipelines.stages.extract import ExtractStage
from pipelines.stages.filter import FilterStage
from pipelines.stages.ingest import IngestStage
from pipelines.stages.minhash import MinHashStage
from pipelines.stages.quality import QualityStage
from pipelines.stages.tokenize import TokenizeStage

REGISTRY: dict[str, type[Stage]] = {c.name: c for c in (
    IngestStage, ExtractStage, FilterStage, ExactDedupStage, MinHashStage, QualityStage, TokenizeStage)}

__all__ = ["REGISTRY", "ShardContext", "Stage", "build"]


def build(cfg) -> list[Stage]:
    """The enabled stages of a pipeline config (orchestration.pipeline_config.PipelineConfig), in order."""
    parts = cfg.ray.shuffle_partitions
    stages: list[Stage] = [IngestStage({"inputs": [i.name for i in cfg.inputs]})]
    if cfg.extract.enabled:
        stages.append(ExtractStage(cfg.extract))
    if cfg.filter.enabled:
        stages.append(FilterStage(cfg.filter))
    if cfg.exact_dedup.enabled:
        stages.append(ExactDedupStage(cfg.exact_dedup, parts))
    if cfg.minhash.enabled:
        exact = cfg.exact_dedup.normalize if cfg.exact_dedup.enabled else None
        stages.append(MinHashStage(cfg.minhash, parts, exact))
    if cfg.quality.enabled:
        stages.append(QualityStage(cfg.quality))
    if cfg.tokenize.enabled:
        stages.append(TokenizeStage(cfg.tokenize, cfg.tokenizer))
    return stages
