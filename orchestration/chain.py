"""`tokenmill run`: the pipeline of a config, then the training job it names, on the shards it produced."""

from __future__ import annotations

from pathlib import Path

from orchestration.config.schema import load_yaml_config

from pipelines.typed_config import ConfigError
from orchestration.config.pipeline import PipelineConfig, load_pipeline_config
from orchestration.config.train import TrainConfig, train_config_from_dict
from pipelines import storage


def load_chain(path: str | Path, overrides: list[str] = ()) -> tuple[PipelineConfig, TrainConfig]:
    """Both configs, validated before anything runs. `train.`-prefixed overrides go to the training job."""
    train_over = [o[len("train."):] for o in overrides if o.startswith("train.")]
    pipe_over = [o for o in overrides if not o.startswith("train.")]
    pipeline = load_pipeline_config(path, pipe_over)
    if not pipeline.train:
        raise ConfigError(f"{path}: `train:` (a training job YAML) is required by `tokenmill run`")
    if not pipeline.tokenize.enabled:
        raise ConfigError("tokenize.enabled: `tokenmill run` trains on the pipeline's token shards")
    train_path = Path(pipeline.train)  # made absolute on load, against the pipeline config's folder
    raw = load_yaml_config(train_path, train_over, TrainConfig)
    raw.setdefault("data", {})
    # placeholders until the pipeline has written them; validated again with the real paths
    raw["data"].setdefault("manifest", None)
    raw["data"].setdefault("tokenizer", None)
    return pipeline, train_config_from_dict(raw, train_path.parent)


def run_chain(pipeline: PipelineConfig, train: TrainConfig, workdir: Path, echo=print) -> dict:
    from orchestration.corpus.pipeline import run_pipeline
    from orchestration.train.job import run_train

    workdir = storage.path(workdir)
    summary = run_pipeline(pipeline, workdir)
    train.data.manifest = summary["tokens"]["manifest_path"]
    train.data.tokenizer = summary["tokenizer"]["model_path"]
    echo(f"tokenmill: pipeline done; training {train.name!r} on {summary['tokens']['tokens']:,} tokens")
    return run_train(train, workdir / "train", echo=echo)
