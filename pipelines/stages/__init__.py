"""The corpus stages, in chain order: one class per file, one registry. Each has the shape of `base.Stage` and
owns its config section (`Config`), how it is built (`from_config`) and what its run reports (`report`).
Adding a stage: its own file, and its class in REGISTRY below (a stage whose global step needs the cluster
also has a step of the same name in orchestration/corpus/steps/). Users add stages of their own without
touching either: the pipeline config's `user_stages:` (user.py)."""

from __future__ import annotations

from pipelines.stages.base import Plot, Report, ShardContext, Stage
from pipelines.stages.decontaminate import DecontaminateStage
from pipelines.stages.exact_dedup import ExactDedupStage
from pipelines.stages.extract import ExtractStage
from pipelines.stages.filter import FilterStage
from pipelines.stages.ingest import IngestStage
from pipelines.stages.minhash import MinHashStage
from pipelines.stages.quality import QualityStage
from pipelines.stages.tokenize import TokenizeStage
from pipelines.stages.user import UserStageConfig, make

REGISTRY: dict[str, type[Stage]] = {c.name: c for c in (
    IngestStage, ExtractStage, FilterStage, ExactDedupStage, MinHashStage, QualityStage, DecontaminateStage,
    TokenizeStage)}

__all__ = ["REGISTRY", "Plot", "Report", "ShardContext", "Stage", "build", "place_user_stages"]


def build(cfg) -> list[Stage]:
    """The enabled stages of a pipeline config (orchestration.config.pipeline.PipelineConfig), in order, with the
    user's stages each placed after the stage it names."""
    stages = [s for s in (cls.from_config(cfg) for cls in REGISTRY.values()) if s is not None]
    return place_user_stages(stages, getattr(cfg, "user_stages", []))


def place_user_stages(stages: list[Stage], entries: list[UserStageConfig]) -> list[Stage]:
    from pipelines.typed_config import ConfigError

    out = list(stages)
    for i, entry in enumerate(entries):
        key = f"user_stages.{i}"
        names = [s.name for s in out]
        if entry.name in names or entry.name in REGISTRY:
            raise ConfigError(f"{key}.name: {entry.name!r} is already a stage's name")
        if entry.after not in names:
            off = " (it is turned off in this config)" if entry.after in REGISTRY else ""
            raise ConfigError(f"{key}.after: no stage {entry.after!r} in this pipeline{off}; the stages are: "
                              f"{', '.join(names)}")
        at = names.index(entry.after)
        if out[at].sink:
            raise ConfigError(f"{key}.after: {entry.after} writes token shards; nothing can follow it")
        out.insert(at + 1, make(entry, key))
    return out
