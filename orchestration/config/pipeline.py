"""The pipeline recipe (YAML): inputs, stage settings, outputs, Ray and MLflow options."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from orchestration.config.schema import load_yaml_config
from pipelines.readers import InputFormat
from pipelines.stages import REGISTRY, build
from pipelines.stages.user import UserStageConfig
from pipelines.typed_config import ConfigError, PathStr, PositiveFloat, PositiveInt, from_dict

@dataclass
class InputConfig:
    name: str
    format: InputFormat
    paths: list[PathStr] = field(default_factory=list)  # globs; `**` recurses
    text_field: str = "text"
    id_field: str | None = None  # use the source's own id instead of file + record index
    url_field: str | None = "url"  # id_field and url_field may be dotted: metadata.url (dolma's layout)
    hf_dataset: str | None = None  # hub name or local path (datasets.load_from_disk / load_dataset)
    hf_split: str = "train"
    # a record (JSON line, text or HTML file) over this size is quarantined "too_large" without being read
    # whole (pipelines/readers/rows.py MAX_DOC_BYTES says why 32)
    max_doc_mb: PositiveFloat = 32.0

    def validate(self, key: str) -> None:
        if not self.name or "/" in self.name:
            raise ConfigError(f"{key}.name: a non-empty name without '/' (it starts every shard name), got {self.name!r}")
        if self.format == "hf" and not self.hf_dataset:
            raise ConfigError(f"{key}.hf_dataset: required when format is 'hf'")
        if self.format != "hf" and not self.paths:
            raise ConfigError(f"{key}.paths: at least one path or glob is required")


@dataclass
class OutputConfig:
    format: Literal["parquet", "jsonl.zst"] = "parquet"
    # ingest cuts each raw file into shards of about this much text; every later stage keeps the shards
    # (one task per shard: the unit of parallelism, of resume and of memory is a batch within it)
    shard_mb: PositiveFloat = 64.0
    write_intermediate: bool = False  # also write every fused stage's kept documents (debugging)


@dataclass
class RayConfig:
    num_cpus: PositiveInt | None = None  # local Ray only; default (null): this machine's CPUs
    batch_size: PositiveInt = 256  # documents per batch through a shard task's stages (its memory: a batch, not a shard)
    shuffle_partitions: PositiveInt = 8  # key partitions of the dedup steps: memory per task ~ keys / partitions


@dataclass
class DedupIndexConfig:
    # write this run's dedup index (dedup/index/: the kept documents' exact hashes and MinHash band keys),
    # so that a later run can dedup a new crawl against this one without reprocessing it
    write: bool = True
    # earlier runs' workdirs (or index directories): documents duplicating one they kept are dropped, with
    # the earlier document's id and MLflow run in the drop record
    previous: list[PathStr] = field(default_factory=list)


@dataclass
class MlflowConfig:
    experiment: str = "tokenmill"


@dataclass
class _PipelineBase:
    name: str
    inputs: list[InputConfig]
    output: OutputConfig = field(default_factory=OutputConfig)
    ray: RayConfig = field(default_factory=RayConfig)
    dedup_index: DedupIndexConfig = field(default_factory=DedupIndexConfig)
    # stages of the user's own, each after a named stage (pipelines/stages/user.py)
    user_stages: list[UserStageConfig] = field(default_factory=list)
    mlflow: MlflowConfig = field(default_factory=MlflowConfig)
    train: PathStr | None = None  # training job YAML (relative to this file) that `tokenmill run` runs afterwards

    def validate(self, key: str) -> None:
        if not self.inputs:
            raise ConfigError("inputs: at least one input is required")
        names = [i.name for i in self.inputs]
        if len(set(names)) != len(names):
            raise ConfigError(f"inputs: names must be unique, got {names}")
        for cls in REGISTRY.values():
            cls.check_config(self)
        stages = build(self)  # the user's stages in place: `after` names a stage of this pipeline
        if self.dedup_index.previous and not any(s.dedup_index for s in stages):
            raise ConfigError("dedup_index.previous: needs a dedup stage (exact_dedup or minhash) enabled")


# One section per stage config, named and typed by the stage that owns it (pipelines/stages/<stage>.py:
# `Config`, `sections()`), in chain order: extract, filter, exact_dedup, minhash, quality, decontaminate, tokenizer,
# tokenize.
PipelineConfig = dataclasses.make_dataclass(
    "PipelineConfig",
    [(name, section, field(default_factory=section)) for cls in REGISTRY.values()
     for name, section in cls.sections().items()],
    bases=(_PipelineBase,))
PipelineConfig.__doc__ = "The pipeline recipe: inputs, each stage's section, outputs, Ray and MLflow options."
PipelineConfig.__module__ = __name__


def load_pipeline_config(path: str | Path, overrides: list[str] = ()) -> PipelineConfig:
    """The typed config; a user stage's module is also looked for in the config file's folder and the current one."""
    import sys

    for folder in (str(Path(path).resolve().parent), str(Path.cwd())):
        if folder not in sys.path:
            sys.path.append(folder)
    return from_dict(PipelineConfig, load_yaml_config(path, overrides, PipelineConfig))
