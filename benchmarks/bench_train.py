"""Training throughput per worker on CPU: tokenmill's Ray Train job (FSDP2 over gloo, N workers) against
plain PyTorch loops (no Ray, no FSDP: the same model, micro-batch, optimizer and thread count), run as N
independent processes at once so that both sides share the cores alike, on token shards of tinyshakespeare.

    .venv/bin/python benchmarks/bench_train.py [--presets tiny gpt2-124m] [--steps 6] [--workers 2]

Tokens/s per worker is the median over steps 2..N (step 1 includes warm-up); for the Ray job it is read
from the run's MLflow metrics. The ratio (tokenmill per worker / plain loop) is what FSDP's all-gathers,
reduce-scatters and the loader cost per worker; the plain loop runs first, then the job, on the same machine.
MFU uses the FLOPs count of model.flops against the measured float32 matmul peak of one thread.
"""

from __future__ import annotations

import argparse
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
from orchestration.train.metrics import cpu_peak_flops  # noqa: E402
from pipelines.shard_reader import ShardSet  # noqa: E402

CORPORA = REPO.parent / "shared" / "corpora"
SHAPES = {"tiny": {"seq_len": 128, "per_worker": 16}, "gpt2-124m": {"seq_len": 256, "per_worker": 4}}


def plain_loop(mcfg: ModelConfig, shards: dict, seq_len: int, batch: int, steps: int) -> list[float]:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = Decoder(mcfg)
    opt = build_optimizer(model, 1e-3, 0.1, (0.9, 0.95), 1e-8)
    data = TrainingData(ShardSet(shards["manifest"], verify=False), seq_len, 0, 0.05)
    rates = []
    for _ in range(steps):
        t0 = time.perf_counter()
        x, y = data.rank_batch(batch, 0, 1)
        model(x, y).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        data.advance(batch)
        rates.append(batch * seq_len / (time.perf_counter() - t0))
    return rates


def ray_job(preset: str, shards: dict, seq_len: int, per_worker: int, workers: int, steps: int, tmp: Path):
    import mlflow

    from orchestration.config.train import train_config_from_dict
    from orchestration.train.job import run_train
    from train_fixture import train_job

    job = train_job(f"bench-{preset}", shards, steps, model={"preset": f"../model/{preset}.yaml"},
                    data={"seq_len": seq_len}, checkpoint={"every": 10_000},
                    train={"global_batch_tokens": seq_len * per_worker * workers, "eval_every": 10_000},
                    ray={"num_workers": workers}, sample={"max_new_tokens": 4})
    summary = run_train(train_config_from_dict(job, REPO / "configs" / "train"), tmp / preset, echo=lambda *_: None)
    hist = mlflow.MlflowClient().get_metric_history(summary["run_id"], "tokens_per_s_per_worker")
    mfu = mlflow.MlflowClient().get_metric_history(summary["run_id"], "mfu")
    return [m.value for m in sorted(hist, key=lambda m: m.step)], [m.value for m in sorted(mfu, key=lambda m: m.step)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--presets", nargs="+", default=["tiny", "gpt2-124m"], choices=sorted(SHAPES))
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--workers", type=int, default=2)
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
    for preset in args.presets:
        shape = SHAPES[preset]
        raw = yaml.safe_load((REPO / "configs" / "model" / f"{preset}.yaml").read_text())
        mcfg = ModelConfig.from_dict({**raw, "vocab_size": vocab})
        fpt = flops_per_token(mcfg, shape["seq_len"])
        with ProcessPoolExecutor(args.workers, mp_context=get_context("spawn")) as pool:
            futures = [pool.submit(plain_loop, mcfg, shards, shape["seq_len"], shape["per_worker"], args.steps)
                       for _ in range(args.workers)]
            plain = statistics.mean(statistics.median(f.result()[1:]) for f in futures)
        ray_rates, mfus = ray_job(preset, shards, shape["seq_len"], shape["per_worker"], args.workers, args.steps, tmp)
        ray_rate = statistics.median(ray_rates[1:])
        rows.append((preset, param_counts(mcfg)["total"] / 1e6, shape["seq_len"], shape["per_worker"], plain,
                     ray_rate, ray_rate / plain, plain * fpt / peak, statistics.median(mfus[1:])))
    print(f"\nvocab {vocab}; 1-thread float32 matmul peak {peak / 1e9:.1f} GFLOP/s; {args.workers} Ray Train workers "
          f"x 1 thread vs {args.workers} plain processes x 1 thread; {args.steps} steps")
    head = ["preset", "params M", "seq", "seqs/worker", "plain tok/s/process", "tokenmill tok/s/worker", "ratio",
            "plain MFU", "tokenmill MFU"]
    print(" | ".join(head))
    for r in rows:
        print(f"{r[0]} | {r[1]:.1f} | {r[2]} | {r[3]} | {r[4]:,.0f} | {r[5]:,.0f} | {r[6]:.2f} | {r[7]:.1%} | {r[8]:.1%}")


if __name__ == "__main__":
    main()
