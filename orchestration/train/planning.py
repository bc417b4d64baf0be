"""A training job's plan (model/plan.py) from its config: `tokenmill train CONFIG --plan`, the first lines of every
training run, and the refusal of a job that cannot fit, before any worker starts."""

from __future__ import annotations

import os

from model.config import ModelConfig
from model.flops import GPU_PEAK_BF16, cpu_peak_flops
from model.parallel_config import resolve_unit
from model.plan import GiB, Plan, parse_bytes, plan
from orchestration.config.train import TrainConfig
from pipelines import storage
from pipelines.errors import UsageError
from pipelines.typed_config import ConfigError

# one device's memory by the name torch.cuda.get_device_name() contains (the largest variant sold)
GPU_MEMORY = {"H200": 141 * GiB, "H100": 80 * GiB, "A100": 80 * GiB, "L40S": 48 * GiB, "A10G": 24 * GiB, "L4": 24 * GiB}


def vocab_size(cfg: TrainConfig) -> int:
    """The vocabulary the plan needs: model.vocab_size, else the tokenizer's (data.tokenizer), else the first
    manifest's."""
    if cfg.model.vocab_size:
        return cfg.model.vocab_size
    if cfg.data.tokenizer and storage.path(cfg.data.tokenizer).is_file():
        from pipelines.tokenizer import Tokenizer

        return Tokenizer(cfg.data.tokenizer).vocab_size
    manifest = cfg.data.manifest or (cfg.data.sources[0].manifest if cfg.data.sources else None)
    if manifest and storage.path(manifest).is_file():
        import json

        vocab = json.loads(storage.path(manifest).read_text()).get("vocab_size")
        if vocab:
            return int(vocab)
    raise ConfigError("model.vocab_size: the plan needs the vocabulary size; set model.vocab_size, or data.tokenizer "
                      "(or data.manifest) to files that exist")


def job_plan(cfg: TrainConfig, mcfg: ModelConfig, gpu: str | None = None, device_memory: int | None = None,
             mfu: float | None = None, measure_cpu: bool = True) -> Plan:
    """The plan of the job on its devices: GPUs (ray.use_gpu, or `gpu`: a name such as H100) in bf16 unless
    train.precision says fp32, else CPU workers in fp32. Device memory: `device_memory`, else
    train.device_memory, else a named GPU's, else (CPU) this machine's memory shared by its local workers."""
    on_gpu = bool(gpu) or cfg.ray.use_gpu
    precision = cfg.train.precision
    bf16 = precision == "bf16" or (precision == "auto" and on_gpu)
    if device_memory is None and cfg.train.device_memory:
        device_memory = parse_bytes(cfg.train.device_memory)
    notes = []
    name = next((k for k in GPU_MEMORY if gpu and k.lower() in gpu.lower()), None)
    if gpu and name is None:
        raise UsageError(f"--gpu {gpu}: not a GPU the plan knows ({', '.join(GPU_MEMORY)}); give --device-memory "
                         "and train.peak_flops instead")
    if device_memory is None and name:
        device_memory = GPU_MEMORY[name]
    binding = device_memory is not None
    local = not os.environ.get("RAY_ADDRESS")
    if device_memory is None and not on_gpu and local:
        import psutil

        device_memory = psutil.virtual_memory().total // cfg.ray.num_workers
        notes.append(f"CPU workers: this machine's memory shared by the {cfg.ray.num_workers} local workers (a "
                     "guide, not a limit: set train.device_memory to make it one)")
    peak = cfg.train.peak_flops or (GPU_PEAK_BF16[name] if name in GPU_PEAK_BF16 else None)
    if peak is None and not on_gpu and measure_cpu and local:  # on a cluster the driver's CPU is not the workers'

        import torch

        threads = torch.get_num_threads()
        try:
            peak = cpu_peak_flops(cfg.train.threads_per_worker)
        finally:
            torch.set_num_threads(threads)  # the probe sets a worker's thread count: this process keeps its own
        notes.append(f"peak: a float32 matmul probe on this CPU ({peak / 1e9:,.1f} GFLOP/s per worker of "
                     f"{cfg.train.threads_per_worker} thread{'s' * (cfg.train.threads_per_worker > 1)})")
    out = plan(mcfg, cfg.data.seq_len, cfg.train.global_batch_tokens, cfg.train.steps, cfg.ray.num_workers,
               cfg.ray.mesh.shape(cfg.ray.num_workers), bf16, cfg.train.activation_checkpointing, cfg.train.ac_every,
               cfg.train.micro_batch_size, device_memory, peak_flops=peak, mfu=mfu or cfg.train.expected_mfu,
               unit=resolve_unit(cfg.train.fsdp_unit, "cuda" if on_gpu else "cpu"))
    out.notes.extend(f"note: {n}" for n in notes)
    out.binding = binding
    return out


def refuse_unless_fits(p: Plan) -> None:
    """A UsageError naming what to change when the configured micro-batch (or, when none is configured, a
    micro-batch of one) does not fit the device memory given (train.device_memory, a known GPU)."""
    if p.fits or not p.binding:
        return
    if p.largest_fitting_micro:
        raise UsageError(f"the plan does not fit: micro-batch {p.micro} needs {p.memory['total'] / GiB:.2f} GiB of "
                         f"{p.budget / GiB:.2f} GiB usable per device; train.micro_batch_size={p.largest_fitting_micro} "
                         "fits (tokenmill train CONFIG --plan shows the rest)")
    raise UsageError(f"the plan does not fit: even a micro-batch of 1 needs "
                     f"{p.memory['total'] / GiB:.2f} GiB of {p.budget / GiB:.2f} GiB usable per device; shard over more "
                     "workers (ray.mesh.shard), train.activation_checkpointing=full, or a shorter data.seq_len "
                     "(tokenmill train CONFIG --plan shows the rest)")
