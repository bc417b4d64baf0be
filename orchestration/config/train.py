"""The training job recipe (YAML): data, model preset + overrides, optimizer, schedule, checkpoints, Ray."""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Literal


from model.config import ModelConfig
from model.parallel_config import ActivationCheckpointing, FsdpUnit, MeshConfig
from model.spikes import SpikeRule
from orchestration.config.schema import load_yaml_config, read_yaml
from pipelines.typed_config import ConfigError, Fraction, NonNegativeFloat, NonNegativeInt, PathStr, PositiveFloat, PositiveInt, Range, from_dict

JOB_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
MIXTURE_TAG = "tokenmill.mixture"  # on a training run: its sources and schedule as the job last ran them (JSON)


@dataclass
class SourceConfig:
    """One source of a mixture: a token manifest and its weight (model/mixture.py composes the batches)."""
    name: str
    manifest: PathStr
    share: NonNegativeFloat = 1.0  # a weight: the shares are normalized over the sources (and printed as used)
    max_epochs: PositiveFloat | None = None  # at most this many passes over the source's training windows


@dataclass
class PhaseConfig:
    from_step: Annotated[int, Range(lo=2)]  # these shares from this step on (an anneal late in training)
    shares: dict[str, NonNegativeFloat]  # by source name; a source not named gets 0


@dataclass
class DataConfig:
    manifest: PathStr | None = None  # token shard manifest.json (set by `tokenmill run` from the pipeline)
    tokenizer: PathStr | None = None  # the SentencePiece model the shards were made with (verified against the manifest)
    seq_len: Annotated[int, Range(lo=2)] = 256
    # documents (by hash of seed and id) held out for validation (of every source, in a mixture)
    val_fraction: Annotated[float, Range(lo=0, hi=1, hi_open=True)] = 0.05
    seed: int = 0  # the training order (and, unless split_seed is given, the validation split)
    # the validation split's seed: fixed while `seed` varies, every run holds out the same documents (an ablation's seeds)
    split_seed: int | None = None
    sources: list[SourceConfig] = field(default_factory=list)  # a mixture, instead of `manifest`
    schedule: list[PhaseConfig] = field(default_factory=list)  # the mixture's shares changed from a step on
    # shards on object storage are read by byte ranges (verified 64 KiB blocks) through this much local disk
    # per worker, the blocks of the next `prefetch_steps` batches fetched ahead; 0: download every shard whole
    remote_cache_mb: Annotated[int, Range(lo=0)] = 4096
    prefetch_steps: Annotated[int, Range(lo=0)] = 2

    def validate(self, key: str) -> None:
        at = f"{key}." if key else ""
        if not self.sources:
            if self.schedule:
                raise ConfigError(f"{at}schedule: a schedule needs {at}sources (a mixture)")
            return
        if self.manifest:
            raise ConfigError(f"{at}manifest, {at}sources: give one (a single manifest, or a mixture of sources)")
        names = [s.name for s in self.sources]
        for i, name in enumerate(names):
            if not JOB_NAME.fullmatch(name) or names.index(name) != i:
                raise ConfigError(f"{at}sources.{i}.name: {name!r} must be unique, letters, digits, '.', '_' or '-'")
        last = 1
        for i, phase in enumerate(self.schedule):
            if phase.from_step <= last:
                raise ConfigError(f"{at}schedule.{i}.from_step: {phase.from_step} must come after {last}")
            last = phase.from_step
            unknown = sorted(set(phase.shares) - set(names))
            if unknown:
                raise ConfigError(f"{at}schedule.{i}.shares: no source named {unknown[0]!r} (sources: {', '.join(names)})")
        self.phases()  # shares that sum to 0 are refused here

    def phases(self) -> list:
        """The mixture's shares, normalized, as model.mixture.Phase from step 1 and from each schedule step."""
        from model.mixture import Phase, normalize

        names = [s.name for s in self.sources]
        out = []
        for i, (step, weights) in enumerate([(1, {s.name: s.share for s in self.sources}),
                                             *((p.from_step, p.shares) for p in self.schedule)]):
            where = "data.sources.*.share" if i == 0 else f"data.schedule.{i - 1}.shares"
            try:
                out.append(Phase(step, normalize([weights.get(n, 0.0) for n in names], where)))
            except ValueError as exc:
                raise ConfigError(str(exc)) from None
        return out


@dataclass
class OptimConfig:
    lr: PositiveFloat = 3e-4
    min_lr_ratio: Fraction = 0.1  # cosine decays to lr * min_lr_ratio at the last step
    warmup_steps: NonNegativeInt = 100
    weight_decay: NonNegativeFloat = 0.1
    betas: list[Annotated[float, Range(lo=0, hi=1, hi_open=True)]] = field(default_factory=lambda: [0.9, 0.95])
    eps: PositiveFloat = 1e-8
    grad_clip: NonNegativeFloat = 1.0  # 0 = no clipping

    def validate(self, key: str) -> None:
        if len(self.betas) != 2:
            raise ConfigError(f"{key}.betas: two numbers, got {self.betas}")


@dataclass
class LoopConfig:
    steps: PositiveInt = 1000
    stop_after: PositiveInt | None = None  # end this invocation (with a checkpoint) after this step; re-run to go on
    global_batch_tokens: PositiveInt = 65536  # tokens per optimizer step over all workers (a multiple of seq_len x workers)
    micro_batch_size: PositiveInt | None = None  # sequences per forward pass per worker; null = all of the worker's share,
    #                                      halved on out-of-memory (accumulation doubles, the global batch stays)
    seed: int = 0  # model initialisation
    precision: Literal["auto", "fp32", "bf16"] = "auto"  # auto: bf16 on GPU, fp32 on CPU
    compile: bool = False  # torch.compile each block (GPU)
    # recompute blocks' activations in the backward instead of keeping them (model/parallelize.py): none, full (every
    # block), selective (every `ac_every`-th block); the plan (tokenmill train --plan) shows what each saves
    activation_checkpointing: ActivationCheckpointing = "none"
    ac_every: Annotated[int, Range(lo=2)] = 2
    # what one FSDP all-gather brings in: each block (GPU: overlapped with compute, one block gathered at a time) or
    # the whole model (CPU: one all-gather and one reduce-scatter a step, 0.72x -> 0.90x a plain loop's speed);
    # auto: block on GPU, model on CPU
    fsdp_unit: FsdpUnit = "auto"
    # one device's memory ("80GB"): the plan checks the job fits before any worker starts; null: a CPU job checks
    # against this machine's memory shared by its local workers, a GPU job is not checked
    device_memory: str | None = None
    expected_mfu: Annotated[float, Range(lo=0, hi=1, lo_open=True)] = 0.4  # the plan's expected time assumes it
    log_every: PositiveInt = 10
    eval_every: PositiveInt = 100
    eval_windows: PositiveInt = 64  # validation windows per evaluation (split over the workers)
    threads_per_worker: PositiveInt = 1  # torch CPU threads per worker (more than the cores per worker collapses)
    peak_flops: PositiveFloat | None = None  # per device, for MFU; null: a table for known GPUs, a matmul probe on CPU


@dataclass
class CheckpointConfig:
    every: PositiveInt = 100  # steps
    keep: PositiveInt = 2  # the last N checkpoints
    # Ray Train storage: default WORKDIR/ray; a relative path is inside the workdir (no ".."); an absolute
    # one (a shared filesystem on a cluster) is the explicit way out of it
    storage_path: str | None = None


@dataclass
class TrainRayConfig:
    num_workers: PositiveInt = 2
    use_gpu: bool = False
    cpus_per_worker: PositiveFloat = 1.0
    max_failures: Annotated[int, Range(lo=-1)] = 2  # worker deaths survived (restart from the last checkpoint); -1: any
    num_cpus: PositiveInt | None = None  # local Ray only
    # replicate x shard workers (HSDP): sharded within a row of `shard` ranks (a node's, as Ray Train numbers the
    # ranks of a node consecutively), replicated across rows; default: sharded over every worker (FSDP)
    mesh: MeshConfig = field(default_factory=MeshConfig)


@dataclass
class SampleConfig:
    prompts: list[str] = field(default_factory=lambda: ["The"])
    max_new_tokens: PositiveInt = 48
    temperature: NonNegativeFloat = 0.8  # 0 = greedy
    top_k: NonNegativeInt = 40
    seed: int = 0


@dataclass
class FaultConfig:
    """Fault injection for tests and drills, on rank kill_rank: its process kills itself once, after
    kill_at_step; one of its weight shards is set to NaN before nan_at_step (the job must stop there);
    its token-embedding shard gets noise of 3x its own spread before spike_at_step (a loss spike that the
    job must tag)."""
    kill_at_step: PositiveInt | None = None
    kill_rank: NonNegativeInt = 0
    nan_at_step: PositiveInt | None = None
    spike_at_step: PositiveInt | None = None


@dataclass
class EvalConfig:
    """An evaluation suite (configs/eval/*.yaml, pipelines/evalsets.py) scored inside training: bits per byte of
    held-out text and tasks, accuracies; logged as eval.<set>.<metric> and eval.mean_bpb at the step."""
    suite: PathStr | None = None
    every: PositiveInt | None = None  # steps; null: with the validation loss (train.eval_every), and at the end


@dataclass
class TrainConfig:
    name: str
    data: DataConfig = field(default_factory=DataConfig)
    # in YAML: `preset: <a model YAML, relative to this file>` and ModelConfig keys over it; merged on load
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: LoopConfig = field(default_factory=LoopConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    ray: TrainRayConfig = field(default_factory=TrainRayConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)
    fault: FaultConfig = field(default_factory=FaultConfig)
    spikes: SpikeRule = field(default_factory=SpikeRule)  # loss-spike tagging (model/spikes.py has the rule)
    eval: EvalConfig = field(default_factory=EvalConfig)
    mlflow_experiment: str = "tokenmill-train"

    def model_config(self, vocab_size: int) -> ModelConfig:
        """The model with the tokenizer's vocabulary size (a vocab_size the config gives must be that one)."""
        if self.model.vocab_size and self.model.vocab_size != vocab_size:
            raise ConfigError(f"model.vocab_size: {self.model.vocab_size} but the tokenizer has {vocab_size}")
        return dataclasses.replace(self.model, vocab_size=vocab_size)

    def validate(self, key: str) -> None:
        sp = self.checkpoint.storage_path
        if sp is not None and not Path(sp).is_absolute() and ".." in Path(sp).parts:
            raise ConfigError(f"checkpoint.storage_path: {sp!r} would leave the workdir; give a path inside it, or an "
                              "absolute path to put checkpoints elsewhere on purpose")
        # the name is joined into paths (the job's checkpoint folder under the storage path)
        if not JOB_NAME.fullmatch(self.name or ""):
            raise ConfigError(f"name: {self.name!r} names the job's checkpoint folder: use letters, digits, '.', '_' "
                              "and '-', starting with a letter or digit (no '/', no '..'), at most 128 characters")
        mcfg = self.model
        if self.data.seq_len > mcfg.max_seq_len:  # caught by --check, not after the pipeline has run
            raise ConfigError(f"data.seq_len: {self.data.seq_len} exceeds the model's max_seq_len {mcfg.max_seq_len} "
                              "(set model.max_seq_len or a shorter data.seq_len)")
        world = self.ray.num_workers
        try:
            self.ray.mesh.shape(world)
        except ValueError as exc:
            raise ConfigError(f"ray.mesh: {exc}") from None
        if self.train.activation_checkpointing == "selective" and self.train.ac_every > mcfg.n_layers:
            raise ConfigError(f"train.ac_every: {self.train.ac_every} is more than the model's {mcfg.n_layers} blocks: "
                              "selective checkpointing would checkpoint none")
        if self.train.device_memory is not None:
            from model.plan import parse_bytes

            try:
                parse_bytes(self.train.device_memory)
            except ValueError as exc:
                raise ConfigError(f"train.device_memory: {exc}") from None
        seqs, rest = divmod(self.train.global_batch_tokens, self.data.seq_len)
        if rest or seqs % world:
            raise ConfigError(
                f"train.global_batch_tokens: {self.train.global_batch_tokens} must be a multiple of "
                f"data.seq_len x ray.num_workers = {self.data.seq_len * world}")
        mb = self.train.micro_batch_size
        if mb is not None and (seqs // world) % mb:
            raise ConfigError(f"train.micro_batch_size: {mb} must divide the {seqs // world} sequences per worker")

    @property
    def global_batch_seqs(self) -> int:
        return self.train.global_batch_tokens // self.data.seq_len


def load_train_config(path: str | Path, overrides: list[str] = ()) -> TrainConfig:
    return train_config_from_dict(load_yaml_config(path, overrides, TrainConfig), Path(path).resolve().parent)


def train_config_from_dict(raw: dict, base_dir: str | Path) -> TrainConfig:
    """The typed config from a raw mapping whose `model.preset` (a model YAML) is relative to `base_dir`: the
    preset's keys, the config's own over them, then typed (`n_layers: 2.5` is refused here, naming the key)."""
    raw = dict(raw)
    model = dict(raw.get("model") or {})
    if not isinstance(raw.get("model") or {}, dict):
        raise ConfigError(f"model: expected a mapping, got {raw['model']!r}")
    preset = model.pop("preset", None)
    if preset:
        path = Path(preset) if Path(preset).is_absolute() else Path(base_dir) / preset
        if not path.is_file():
            raise ConfigError(f"model.preset: no such file {path}")
        model = {**(read_yaml(path) or {}), **model}
    raw["model"] = model
    return from_dict(TrainConfig, raw)
