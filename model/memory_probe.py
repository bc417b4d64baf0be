"""Measure a training step's peak memory on this process's device, by kind, to check the plan (model/plan.py)
against: torch's FSDPMemTracker counts every tensor storage alive (parameters, gradients, optimizer state,
activations, the all-gathered and reduce-scattered buffers), without an allocator's cache, so it measures on a
CPU what the plan predicts for any device.

The model is sharded as in training (model/parallelize.py) over this process's group (a group of one when none
is initialized: one shard). One step runs untracked first, so AdamW's moments exist, as in every later step;
the tracked step is the model's forward and backward over one micro-batch and the optimizer step.
"""

from __future__ import annotations

import tempfile
from contextlib import contextmanager

import torch
import torch.distributed as dist

from model.config import ModelConfig
from model.optim import build_optimizer
from model.parallelize import build_sharded_model


@contextmanager
def group_of_one(backend: str = "gloo"):
    """This process's process group; a group of one (a file store in a temporary folder) when none is initialized,
    destroyed after."""
    if dist.is_initialized():
        yield
        return
    with tempfile.TemporaryDirectory(prefix="tokenmill-probe-") as tmp:
        dist.init_process_group(backend, init_method=f"file://{tmp}/store", rank=0, world_size=1)
        try:
            yield
        finally:
            dist.destroy_process_group()


def measure_step(cfg: ModelConfig, seq_len: int, micro: int, bf16: bool = False, ac: str = "none",
                 ac_every: int = 2, device: str = "cpu", seed: int = 0, unit: str = "block") -> dict[str, int]:
    """Peak bytes of one training step on this rank: {"Total": ..., and by FSDPMemTracker's kinds}."""
    with group_of_one("nccl" if device.startswith("cuda") else "gloo"):
        return _measure(cfg, seq_len, micro, bf16, ac, ac_every, torch.device(device), seed, unit)


def _measure(cfg: ModelConfig, seq_len: int, micro: int, bf16: bool, ac: str, ac_every: int, dev: torch.device,
             seed: int, unit: str) -> dict[str, int]:
    from torch.distributed._tools.fsdp2_mem_tracker import FSDPMemTracker

    world = dist.get_world_size()
    model = build_sharded_model(cfg, dev, (1, world), bf16, False, seed, ac, ac_every, unit)
    opt = build_optimizer(model, 1e-4, 0.1, (0.9, 0.95), 1e-8, fused=dev.type == "cuda")
    g = torch.Generator().manual_seed(seed + dist.get_rank())
    x = torch.randint(0, cfg.vocab_size, (micro, seq_len + 1), generator=g).to(dev)

    def step() -> None:
        model(x[:, :-1], x[:, 1:]).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    step()  # AdamW's moments are created by the first step
    tracker = FSDPMemTracker(model, opt)
    tracker.track_inputs((x,))
    with tracker:
        step()
    snap = tracker.get_tracker_snapshot("peak")[dev]
    return {str(k): int(v) for k, v in snap.items()}


def measure_on_ranks(world: int, cases: list[dict]) -> list[list[dict[str, int]]]:
    """measure_step(**case) for every case on `world` gloo ranks (spawned processes on this machine, one thread
    each): per rank, the list of results."""
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    q = mp.get_context("spawn").Queue()
    mp.start_processes(_rank, args=(world, port, cases, q), nprocs=world, start_method="spawn")
    got = dict(q.get(timeout=600) for _ in range(world))
    return [got[r] for r in range(world)]


def _rank(rank: int, world: int, port: int, cases: list[dict], q) -> None:
    import os

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.set_num_threads(1)
    try:
        q.put((rank, [measure_step(**case) for case in cases]))
    finally:
        dist.destroy_process_group()
