"""Training throughput per worker on CPU: tokenmill's Ray Train job (FSDP2 over gloo, N workers) against
plain PyTorch loops (no Ray, no FSDP: the same model, micro-batch, optimizer and thread count), run as N
independent processes at once so that both sides share the cores alike, on token shards of tinyshakespeare; and
between them, the same loop as N ranks of torch's DistributedDataParallel over gloo (no Ray, no FSDP): the
ceiling of any data-parallel job on these cores, whose ranks wait for each other at every step. job / plain
is then (DDP / plain: the cost of ranks in lockstep) x (job / DDP: Ray Train, FSDP and the job's bookkeeping).

    .venv/bin/python benchmarks/bench_train.py [--shapes tiny:128:16 tiny:128:64 gpt2-124m:256:4] [--steps 12]
                                               [--workers 2] [--json benchmarks/results/train.json]

A shape is preset:seq_len:sequences per worker per step. Rates are medians over steps 2..N (step 1 includes
warm-up). The job's rate counts everything a step costs a worker: the step itself (its data, forward and backward
with FSDP's all-gathers and reduce-scatters, the optimizer, the loss's all-reduce) and what runs between steps
(metrics, MLflow logging, evaluation, checkpoints), from the phase times the workers log (time.*_s metrics);
the plain loop times the same phases. The job's fixed cost (Ray Train's start, the process group, the model's
build, the export and samples at the end) is its wall time less its steps, given apart. MFU uses the FLOPs count
of model.flops against the measured float32 matmul peak of one thread.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests" / "support"))  # the shakespeare shards and job of the training tests

import torch  # noqa: E402

from model.config import ModelConfig  # noqa: E402
from model.data import TrainingData  # noqa: E402
from model.flops import flops_per_token, param_counts  # noqa: E402
from model.optim import build_optimizer  # noqa: E402
from model.transformer import Decoder  # noqa: E402
from model.flops import cpu_peak_flops  # noqa: E402
from pipelines.shard_reader import ShardSet  # noqa: E402

CORPORA = REPO.parent / "shared" / "corpora"
SHAPES = {"tiny": {"seq_len": 128, "per_worker": 16}, "gpt2-124m": {"seq_len": 256, "per_worker": 4}}


def plain_loop(mcfg: ModelConfig, shards: dict, seq_len: int, batch: int, steps: int) -> list[dict]:
    """Per step: seconds of data, forward_backward, optimizer."""
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = Decoder(mcfg)
    opt = build_optimizer(model, 1e-3, 0.1, (0.9, 0.95), 1e-8)
    data = TrainingData(ShardSet(shards["manifest"], verify=False), seq_len, 0, 0.05)
    out = []
    for _ in range(steps):
        t0 = time.perf_counter()
        x, y = data.rank_batch(batch, 0, 1)
        t1 = time.perf_counter()
        model(x, y).backward()
        t2 = time.perf_counter()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        data.advance(batch)
        t3 = time.perf_counter()
        out.append({"data": t1 - t0, "forward_backward": t2 - t1, "optimizer": t3 - t2})
    return out


def ddp_loop(rank: int, world: int, port: int, mcfg: ModelConfig, shards: dict, seq_len: int, batch: int, steps: int,
             out) -> None:
    """The plain loop as `world` ranks of torch's DistributedDataParallel over gloo (no Ray, no FSDP): what any
    data-parallel job can reach on these cores, its ranks waiting for each other at every gradient all-reduce."""
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = DistributedDataParallel(Decoder(mcfg))
    opt = build_optimizer(model, 1e-3, 0.1, (0.9, 0.95), 1e-8)
    data = TrainingData(ShardSet(shards["manifest"], verify=False), seq_len, 0, 0.05)
    times = []
    for _ in range(steps):
        x, y = data.rank_batch(batch * world, rank, world)
        t0 = time.perf_counter()
        model(x, y).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        data.advance(batch * world)
        times.append(time.perf_counter() - t0)
    out.put((rank, times))
    dist.destroy_process_group()


def ddp_rate(mcfg: ModelConfig, shards: dict, seq_len: int, batch: int, steps: int, world: int) -> float:
    """Tokens per second per rank (the median step of each rank after the first, averaged over ranks)."""
    import torch.multiprocessing as tmp
    from mesh_run import free_port

    q = tmp.get_context("spawn").Queue()
    tmp.start_processes(ddp_loop, args=(world, free_port(), mcfg, shards, seq_len, batch, steps, q), nprocs=world,
                        start_method="spawn")
    per_rank = [q.get(timeout=600)[1][1:] for _ in range(world)]
    return batch * seq_len / statistics.mean(statistics.median(t) for t in per_rank)


PHASES = ("data", "forward_backward", "optimizer", "sync", "between_steps")


def ray_job(preset: str, shards: dict, seq_len: int, per_worker: int, workers: int, steps: int, tmp: Path) -> dict:
    import mlflow

    from orchestration.config.train import train_config_from_dict
    from orchestration.train.job import run_train
    from train_fixture import train_job

    name = f"bench-{preset}-{seq_len}-{per_worker}"
    job = train_job(name, shards, steps, model={"preset": f"../model/{preset}.yaml"},
                    data={"seq_len": seq_len}, checkpoint={"every": 10_000},
                    train={"global_batch_tokens": seq_len * per_worker * workers, "eval_every": 10_000},
                    ray={"num_workers": workers}, sample={"max_new_tokens": 4})
    t0 = time.perf_counter()
    summary = run_train(train_config_from_dict(job, REPO / "configs" / "train"), tmp / name, echo=lambda *_: None)
    wall = time.perf_counter() - t0
    client = mlflow.MlflowClient()

    def series(key: str) -> dict[int, float]:
        return {m.step: m.value for m in client.get_metric_history(summary["run_id"], key)}

    step_s = series("step_time_s")
    between = series("time.between_steps_s")  # logged with the next step: the time after step k - 1
    phases = {p: series(f"time.{p}_s") for p in PHASES}
    # each step's whole cost: the step, and what ran after it (read at the next step; the last one's: none logged)
    whole = [step_s[k] + between.get(k + 1, 0.0) for k in sorted(step_s)[1:-1]]
    return {"rate": per_worker * seq_len / statistics.median(whole),
            "phases": {p: statistics.median([v[k] for k in sorted(v)[1:]]) for p, v in phases.items() if v},
            "wall": wall, "steps_s": sum(step_s.values()) + sum(between.values()),
            "mfu": statistics.median(list(series("mfu").values())[1:])}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shapes", nargs="+", default=["tiny:128:16", "tiny:128:64", "gpt2-124m:256:4"])
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    if not CORPORA.is_dir():
        sys.exit(f"benchmark data not found: {CORPORA}")
    from train_fixture import build_shakespeare_shards

    import yaml

    tmp = Path(tempfile.mkdtemp(prefix="bench-train-"))
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp / 'mlflow.db'}"
    shards = build_shakespeare_shards(CORPORA, tmp / "data")
    vocab = ShardSet(shards["manifest"], verify=False).vocab_size
    peak = cpu_peak_flops(1)
    rows = []
    for shape in args.shapes:
        preset, seq_len, per_worker = shape.split(":")
        seq_len, per_worker = int(seq_len), int(per_worker)
        raw = yaml.safe_load((REPO / "configs" / "model" / f"{preset}.yaml").read_text())
        mcfg = ModelConfig.from_dict({**raw, "vocab_size": vocab})
        fpt = flops_per_token(mcfg, seq_len)
        with ProcessPoolExecutor(args.workers, mp_context=get_context("spawn")) as pool:
            futures = [pool.submit(plain_loop, mcfg, shards, seq_len, per_worker, args.steps)
                       for _ in range(args.workers)]
            plain_steps = [f.result()[1:] for f in futures]
        plain_phases = {p: statistics.mean(statistics.median(s[p] for s in steps) for steps in plain_steps)
                        for p in ("data", "forward_backward", "optimizer")}
        plain = per_worker * seq_len / statistics.mean(
            statistics.median(sum(s.values()) for s in steps) for steps in plain_steps)
        ddp = ddp_rate(mcfg, shards, seq_len, per_worker, args.steps, args.workers)
        job = ray_job(preset, shards, seq_len, per_worker, args.workers, args.steps, tmp)
        rows.append({"preset": preset, "params_m": param_counts(mcfg)["total"] / 1e6, "seq_len": seq_len,
                     "per_worker": per_worker, "plain_tokens_per_s": plain, "ddp_tokens_per_s": ddp,
                     "job_tokens_per_s": job["rate"], "ratio": job["rate"] / plain, "ddp_ratio": ddp / plain,
                     "plain_mfu": plain * fpt / peak, "job_mfu": job["mfu"],
                     "plain_phases_s": plain_phases, "job_phases_s": job["phases"],
                     "job_fixed_s": job["wall"] - job["steps_s"], "job_wall_s": job["wall"]})
        print(f"{shape}: plain {plain:,.0f} tok/s, job {job['rate']:,.0f} tok/s per worker", flush=True)
    print(f"\nvocab {vocab}; 1-thread float32 matmul peak {peak / 1e9:.1f} GFLOP/s; {args.workers} Ray Train workers "
          f"x 1 thread vs {args.workers} plain processes x 1 thread; {args.steps} steps\n")
    print("| preset | seq x seqs/worker | plain tok/s | DDP tok/s | job tok/s | DDP / plain | job / plain | job / DDP "
          "| plain MFU | job MFU |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['preset']} | {r['seq_len']} x {r['per_worker']} | {r['plain_tokens_per_s']:,.0f} | "
              f"{r['ddp_tokens_per_s']:,.0f} | {r['job_tokens_per_s']:,.0f} | {r['ddp_ratio']:.2f} | {r['ratio']:.2f} | "
              f"{r['ratio'] / r['ddp_ratio']:.2f} | {r['plain_mfu']:.1%} | {r['job_mfu']:.1%} |")
    print("\nWhere a step's time goes, ms per step (median), plain loop / job:\n")
    print("| preset | seq x seqs/worker | data | forward + backward (FSDP collectives) | optimizer (+ grad-norm all-reduce) "
          "| loss all-reduce, stop check | between steps (metrics, MLflow) | job's fixed cost s |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        pp, jp = r["plain_phases_s"], r["job_phases_s"]
        cell = lambda k: f"{pp.get(k, 0) * 1e3:,.1f} / {jp.get(k, 0) * 1e3:,.1f}"  # noqa: E731
        print(f"| {r['preset']} | {r['seq_len']} x {r['per_worker']} | {cell('data')} | {cell('forward_backward')} | "
              f"{cell('optimizer')} | - / {jp.get('sync', 0) * 1e3:,.1f} | - / {jp.get('between_steps', 0) * 1e3:,.1f} | "
              f"{r['job_fixed_s']:.1f} of {r['job_wall_s']:.1f} |")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"workers": args.workers, "steps": args.steps, "peak_flops_1_thread": peak,
                                         "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
