"""The training job recipe (YAML): data, model preset + overrides, optimizer, schedule, checkpoints, Ray."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from model.config import ModelConfig
from orchestration.config_schema import ConfigError, from_dict
from orchestration.pipeline_config import load_raw

JOB_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


@dataclass
class DataConfig:
    manifest: str | None = None  # token shard manifest.json (set by `tokenmill run` from the pipeline)
    tokenizer: str | None = None  # the SentencePiece model the shards were made with (verified against the manifest)
    seq_len: int = 256
    val_fraction: float = 0.05  # documents (by hash of seed and id) held out for validation
    seed: int = 0

    def validate(self, key: str) -> None:
        if self.seq_len < 2:
            raise ConfigError(f"{key}.seq_len: must be >= 2")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ConfigError(f"{key}.val_fraction: must be in [0, 1)")


@dataclass
class OptimConfig:
    lr: float = 3e-4
    min_lr_ratio: float = 0.1  # cosine decays to lr * min_lr_ratio at the last step
    warmup_steps: int = 100
    weight_decay: float = 0.1
    betas: list[float] = field(default_factory=lambda: [0.9, 0.95])
    eps: float = 1e-8
    grad_clip: float = 1.0  # 0 = no clipping

    def validate(self, key: str) -> None:
        if len(self.betas) != 2:
            raise ConfigError(f"{key}.betas: two numbers, got {self.betas}")
        if self.lr <= 0 or self.warmup_steps < 0:
            raise ConfigError(f"{key}: lr must be > 0 and warmup_steps >= 0")


@dataclass
class LoopConfig:
    steps: int = 1000
    stop_after: int | None = None  # end this invocation (with a checkpoint) after this step; re-run to go on
    global_batch_tokens: int = 65536  # tokens per optimizer step over all workers (a multiple of seq_len x workers)
    micro_batch_size: int | None = None  # sequences per forward pass per worker; null = all of the worker's share,
    #                                      halved on out-of-memory (accumulation doubles, the global batch stays)
    seed: int = 0  # model initialisation
    precision: str = "auto"  # auto: bf16 on GPU, fp32 on CPU
    compile: bool = False  # torch.compile each block (GPU)
    log_every: int = 10
    eval_every: int = 100
    eval_windows: int = 64  # validation windows per evaluation (split over the workers)
    threads_per_worker: int = 1  # torch CPU threads per worker (more than the cores per worker collapses)
    peak_flops: float | None = None  # per device, for MFU; null: a table for known GPUs, a matmul probe on CPU

    def validate(self, key: str) -> None:
        if self.precision not in ("auto", "fp32", "bf16"):
            raise ConfigError(f"{key}.precision: must be auto, fp32 or bf16, got {self.precision!r}")
        if min(self.steps, self.log_every, self.eval_every, self.threads_per_worker) < 1:
            raise ConfigError(f"{key}: steps, log_every, eval_every and threads_per_worker must be >= 1")


@dataclass
class CheckpointConfig:
    every: int = 100  # steps
    keep: int = 2  # the last N checkpoints
    storage_path: str | None = None  # Ray Train storage (a shared path or bucket on a cluster); default WORKDIR/ray


@dataclass
class TrainRayConfig:
    num_workers: int = 2
    use_gpu: bool = False
    cpus_per_worker: float = 1.0
    max_failures: int = 2  # worker deaths survived by restarting from the last checkpoint
    num_cpus: int | None = None  # local Ray only


@dataclass
class SampleConfig:
    prompts: list[str] = field(default_factory=lambda: ["The"])
    max_new_tokens: int = 48
    temperature: float = 0.8
    top_k: int = 40
    seed: int = 0


@dataclass
class FaultConfig:
    """Fault injection for tests and drills: the rank's process kills itself once, after this step."""
    kill_at_step: int | None = None
    kill_rank: int = 0


@dataclass
class TrainConfig:
    name: str
    data: DataConfig = field(default_factory=DataConfig)
    model: dict[str, Any] = field(default_factory=dict)  # `preset: <path relative to this file>` + ModelConfig keys
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: LoopConfig = field(default_factory=LoopConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    ray: TrainRayConfig = field(default_factory=TrainRayConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)
    fault: FaultConfig = field(default_factory=FaultConfig)
    mlflow_experiment: str = "tokenmill-train"
    base_dir: str = "."  # where relative preset paths start (the config file's folder; set on load)

    def model_config(self, vocab_size: int) -> ModelConfig:
        """The preset (if any) with this config's model keys over it, and the tokenizer's vocabulary size."""
        values = dict(self.model)
        preset = values.pop("preset", None)
        merged: dict[str, Any] = {}
        if preset:
            path = Path(preset) if Path(preset).is_absolute() else Path(self.base_dir) / preset
            if not path.is_file():
                raise ConfigError(f"model.preset: no such file {path}")
            merged.update(yaml.safe_load(path.read_text()) or {})
        merged.update(values)
        if merged.get("vocab_size") and merged["vocab_size"] != vocab_size:
            raise ConfigError(f"model.vocab_size: {merged['vocab_size']} but the tokenizer has {vocab_size}")
        merged["vocab_size"] = vocab_size
        try:
            return ModelConfig.from_dict(merged)
        except (TypeError, ValueError) as exc:
            raise ConfigError(str(exc)) from None

    def validate(self, key: str) -> None:
        # the name is joined into paths (the job's checkpoint folder under the storage path)
        if not JOB_NAME.fullmatch(self.name or ""):
            raise ConfigError(f"name: {self.name!r} names the job's checkpoint folder: use letters, digits, '.', '_' "
                              "and '-', starting with a letter or digit (no '/', no '..'), at most 128 characters")
        world = self.ray.num_workers
        if world < 1:
            raise ConfigError("ray.num_workers: must be >= 1")
        seqs, rest = divmod(self.train.global_batch_tokens, self.data.seq_len)
        if rest or seqs % world:
            raise ConfigError(
                f"train.global_batch_tokens: {self.train.global_batch_tokens} must be a multiple of "
                f"data.seq_len x ray.num_workers = {self.data.seq_len * world}")
        mb = self.train.micro_batch_size
        if mb is not None and (mb < 1 or (seqs // world) % mb):
            raise ConfigError(f"train.micro_batch_size: {mb} must divide the {seqs // world} sequences per worker")
        if self.checkpoint.every < 1 or self.checkpoint.keep < 1:
            raise ConfigError("checkpoint: every and keep must be >= 1")

    @property
    def global_batch_seqs(self) -> int:
        return self.train.global_batch_tokens // self.data.seq_len


def load_train_config(path: str | Path, overrides: list[str] = ()) -> TrainConfig:
    raw = load_raw(path, overrides)
    raw.setdefault("base_dir", str(Path(path).resolve().parent))
    return from_dict(TrainConfig, raw)


def train_config_from_dict(raw: dict, base_dir: str | Path) -> TrainConfig:
    return from_dict(TrainConfig, {**raw, "base_dir": str(Path(base_dir).resolve())})
