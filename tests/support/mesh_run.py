"""Training steps of a small decoder on N gloo processes with a given device mesh (model/parallelize.py), the real
step (model/step.py), optimizer and checkpoints (model/checkpoint.py), on real text: the Python documentation
shipped in configs/data, read as bytes (a 256-token vocabulary, no tokenizer needed).

    losses = mesh_run.train(world=4, mesh=(2, 2), steps=20)                       # a list of 20 losses
    mesh_run.train(world=4, mesh=(2, 2), steps=10, save_to=folder)                # a checkpoint after step 10
    mesh_run.train(world=4, mesh=(1, 4), steps=20, resume_from=folder)            # steps 11..20 on another mesh
    mesh_run.run(4, [dict(mesh=(1, 4), steps=20), dict(mesh=(2, 2), steps=20)])   # several in one set of processes

Every step takes the next GLOBAL_SEQS windows; rank r gets its contiguous share, as TrainingData.rank_batch.
"""

from __future__ import annotations

import json
import os
import socket
import tempfile
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from repo_paths import REPO

SEQ, GLOBAL_SEQS = 64, 8


def text_windows(n: int, seq: int = SEQ) -> torch.Tensor:
    """n windows of seq + 1 tokens of real text bytes (the Python tutorial shipped in configs/data, 916 KB):
    (n, seq + 1) int64."""
    raw = b"".join(p.read_bytes() for p in sorted((REPO / "configs" / "data" / "python3.11-doc" / "tutorial").glob("*.html")))
    ids = np.frombuffer(raw, dtype=np.uint8).astype(np.int64)
    need = n * (seq + 1)
    assert ids.size >= need, (ids.size, need)
    return torch.from_numpy(ids[:need].reshape(n, seq + 1).copy())


def model_config(**over):
    from model.config import ModelConfig

    return ModelConfig(**{"vocab_size": 256, "d_model": 64, "n_layers": 4, "n_heads": 4, "n_kv_heads": 2,
                          "max_seq_len": SEQ, **over})


class _Loader:
    """What checkpoint.load needs of a loader: its position."""

    def __init__(self):
        self.position = 0

    def load_state_dict(self, state: dict) -> None:
        self.position = state["position"]


def _worker(rank: int, world: int, port: int, runs: list[dict], out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.set_num_threads(1)
    try:
        results = [_run(rank, world, args) for args in runs]
        if rank == 0:
            Path(out).write_text(json.dumps(results))
    finally:
        dist.destroy_process_group()


def _run(rank: int, world: int, args: dict) -> dict[int, float]:
    from model import checkpoint
    from model.optim import build_optimizer
    from model.parallelize import build_sharded_model
    from model.step import run_accumulated

    model = build_sharded_model(model_config(), torch.device("cpu"), tuple(args["mesh"]), bf16=False,
                                compile_blocks=False, seed=0, activation_checkpointing=args["ac"], unit=args["unit"])
    opt = build_optimizer(model, 3e-3, 0.1, (0.9, 0.95), 1e-8)
    loader, losses = _Loader(), {}
    step = int(checkpoint.load(Path(args["resume_from"]), model, opt, loader, rank)["step"]) if args["resume_from"] else 0
    windows = text_windows(args["steps"] * GLOBAL_SEQS)
    share = GLOBAL_SEQS // world
    while step < args["steps"]:
        batch = windows[step * GLOBAL_SEQS:(step + 1) * GLOBAL_SEQS][rank * share:(rank + 1) * share]
        loss_sum, n_tok = run_accumulated(model, batch[:, :-1], batch[:, 1:], args["micro"] or share)
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        stats = torch.tensor([loss_sum, n_tok], dtype=torch.float64)
        dist.all_reduce(stats)
        step += 1
        losses[step] = float(stats[0] / stats[1])
    if args["save_to"]:
        checkpoint.save(Path(args["save_to"]), model, opt, rank,
                        {"step": step, "data": {"position": step * GLOBAL_SEQS}} if rank == 0 else None)
    dist.barrier()
    return losses


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(world: int, runs: list[dict]) -> list[dict[int, float]]:
    """Several runs, one after the other, in one set of `world` processes (a process start costs more than a run):
    each a dict of train()'s arguments; {step: loss} of each."""
    defaults = {"save_to": None, "resume_from": None, "ac": "none", "micro": None, "unit": "block"}
    runs = [{**defaults, **r, "mesh": list(r["mesh"]),
             **{k: str(r[k]) for k in ("save_to", "resume_from") if r.get(k)}} for r in runs]
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "losses.json"
        mp.start_processes(_worker, args=(world, free_port(), runs, str(out)), nprocs=world, join=True,
                           start_method="spawn")
        return [{int(k): v for k, v in r.items()} for r in json.loads(out.read_text())]


def train(world: int, mesh: tuple[int, int], steps: int, save_to: Path | None = None, resume_from: Path | None = None,
          ac: str = "none", micro: int | None = None) -> dict[int, float]:
    """{step: loss} of the steps this run made: after resume_from's step, up to `steps`; a checkpoint into
    save_to after the last."""
    return run(world, [dict(mesh=mesh, steps=steps, save_to=save_to, resume_from=resume_from, ac=ac, micro=micro)])[0]
