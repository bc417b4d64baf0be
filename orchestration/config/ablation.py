"""An ablation (YAML): a base pipeline and a proxy training job, named variants of either, seeds, a token budget and
an evaluation suite. `tokenmill ablate CONFIG` (orchestration/ablation/run.py) runs it; this module only reads and
checks it, before any work: every variant's pipeline and training config is built here, so an override naming an
unknown key fails naming the variant."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Literal

from orchestration.config.schema import load_yaml_config
from pipelines.typed_config import ConfigError, PathStr, PositiveFloat, PositiveInt, Range, from_dict


@dataclass
class VariantConfig:
    name: str
    pipeline: list[str] = field(default_factory=list)  # dotted.key=value overrides of the base pipeline config
    # ... and of the proxy training config: a mixture's shares (`data.sources`, one source `manifest: variant://tokens`)
    train: list[str] = field(default_factory=list)


@dataclass
class AblationConfig:
    name: str
    pipeline: PathStr  # the base pipeline config
    train: PathStr  # the proxy training job (its model, optimizer and batch: the same for every run)
    suite: PathStr  # the evaluation suite every run is scored on (configs/eval/*.yaml)
    budget_tokens: PositiveInt  # training tokens per run: steps = budget / global_batch_tokens, rounded up
    variants: list[VariantConfig] = field(default_factory=list)
    baseline: str = "baseline"
    seeds: PositiveInt = 3  # each seed changes the model's initialisation and the data order
    # shared: one tokenizer for every variant (the baseline's, trained once; or tokenizer.model_path of the base
    # pipeline), so token budgets are equal; per_variant: each trains its own (compare bits per byte then)
    tokenizer: Literal["shared", "per_variant"] = "shared"
    evals: Annotated[int, Range(lo=2)] = 4  # suite evaluations per run (the last `last_evals` give checkpoint noise)
    last_evals: Annotated[int, Range(lo=2)] = 3
    # training runs side by side on the Ray cluster: 0 = as many as its CPUs (GPUs) hold at once (1 on a laptop
    # whose cores one run takes), each its own `tokenmill train` process; 1 = one after another, in this process
    parallel: Annotated[int, Range(lo=0)] = 0
    snr_threshold: PositiveFloat = 2.0  # |difference / pooled seed std| for a verdict of better or worse
    mlflow_experiment: str = "tokenmill-ablate"

    def validate(self, key: str) -> None:
        names = [v.name for v in self.variants]
        if not names:
            raise ConfigError("variants: an ablation needs at least the baseline variant")
        for i, n in enumerate(names):
            if names.index(n) != i:
                raise ConfigError(f"variants.{i}.name: {n!r} is used twice")
        if self.baseline not in names:
            raise ConfigError(f"baseline: no variant named {self.baseline!r} (variants: {', '.join(names)})")
        if self.last_evals > self.evals:
            raise ConfigError(f"last_evals: {self.last_evals} is more than the {self.evals} evaluations per run")


VARIANT_TOKENS = "variant://tokens"  # a mixture source's manifest in an ablation: the variant's own token shards


def data_overrides(train, manifest: str, tokenizer: str) -> list[str]:
    """The overrides that point a variant's training job at its pipeline's token shards: `data.manifest`, or in a
    mixture (a variant's `data.sources` with its shares) every source whose manifest is VARIANT_TOKENS."""
    if not train.data.sources:
        return [f"data.manifest={manifest}", f"data.tokenizer={tokenizer}"]
    sources = [{**dataclasses.asdict(s), "manifest": manifest if s.manifest == VARIANT_TOKENS else s.manifest}
               for s in train.data.sources]
    return [f"data.sources={json.dumps(sources)}", f"data.tokenizer={tokenizer}"]


@dataclass
class Variant:
    """One variant, resolved: its typed pipeline and training configs (data paths filled in at run time)."""
    name: str
    pipeline: object  # PipelineConfig
    train: object  # TrainConfig
    pipeline_overrides: list[str]
    train_overrides: list[str]


def load_ablation(path: str | Path, overrides: list[str] = ()) -> tuple[AblationConfig, list[Variant]]:
    """The typed ablation and every variant's configs, or ConfigError naming the variant and key."""
    from orchestration.config.pipeline import load_pipeline_config
    from orchestration.config.train import load_train_config

    path = Path(path).resolve()
    cfg = from_dict(AblationConfig, load_yaml_config(path, overrides, AblationConfig))
    if not Path(cfg.suite).is_file():
        raise ConfigError(f"suite: no such file {cfg.suite}")
    from orchestration.evaluation.run import load_suite

    try:
        load_suite(cfg.suite)
    except ConfigError as exc:
        raise ConfigError(f"suite: {exc}") from None
    variants = []
    with contextlib.chdir(path.parent):  # a variant's override paths are relative to the ablation's file
        for i, v in enumerate(cfg.variants):
            try:
                pipe = load_pipeline_config(cfg.pipeline, v.pipeline)
                train = load_train_config(cfg.train, v.train)
                if train.data.sources and not any(s.manifest == VARIANT_TOKENS for s in train.data.sources):
                    raise ConfigError(f"data.sources: no source is the variant's own token shards (give one "
                                      f"`manifest: {VARIANT_TOKENS}`)")
                # the data comes from the variant's pipeline at run time: placeholders so the job checks now
                train = load_train_config(cfg.train, [*v.train, *data_overrides(train, "unused.json", "unused.model")])
            except ConfigError as exc:
                raise ConfigError(f"variants.{i} ({v.name}): {exc}") from None
            if not pipe.tokenize.enabled:
                raise ConfigError(f"variants.{i} ({v.name}): its pipeline makes no token shards to train on (set "
                                  "tokenizer.enabled and tokenize.enabled in the pipeline config)")
            variants.append(Variant(v.name, pipe, train, list(v.pipeline), list(v.train)))
    batch = variants[0].train.train.global_batch_tokens
    if cfg.budget_tokens < batch:
        raise ConfigError(f"budget_tokens: {cfg.budget_tokens:,} is less than one batch of the training job "
                          f"({batch:,} tokens, train.global_batch_tokens of {cfg.train})")
    return cfg, variants


def steps_for(cfg: AblationConfig, train) -> int:
    """Training steps of one run: the budget in whole batches (rounded up)."""
    return math.ceil(cfg.budget_tokens / train.train.global_batch_tokens)
