"""The GPU readiness check of training: one command, under 10 minutes on one GPU.

    .venv/bin/python benchmarks/gpu_check.py [--json benchmarks/results/gpu_check.json]
    .venv/bin/python benchmarks/gpu_check.py --dry-run      # the same code paths on CPU, tiny sizes (what CI runs)

On one CUDA device, in one process group of one over NCCL:
1. the 124M preset (GPT-2's vocabulary, 1024 tokens, micro-batch 8): tokens/s and MFU against the device's
   datasheet bf16 peak (model/flops.py), eager and with per-block torch.compile, activation checkpointing off
   and full;
2. the 1B preset (Llama 3.2 1B's shape, 128k vocabulary, 2048 tokens): torch.cuda.max_memory_allocated of a
   training step against the plan (model/plan.py), checkpointing off, selective and full;
3. a 50-step loss curve of the tiny preset on real text (the Python documentation's bytes) in bf16 on the GPU
   against fp32 on the CPU from the same seed: bf16 rounds, so the curves agree to a tolerance, not exactly.

Where no GPU is present it says so and exits 0. Paste the table it prints into docs/training.md.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "support"))  # the text windows of the training tests

import torch  # noqa: E402

from model.config import ModelConfig  # noqa: E402
from model.flops import flops_per_token, gpu_peak_flops  # noqa: E402
from model.memory_probe import group_of_one  # noqa: E402
from model.optim import build_optimizer  # noqa: E402
from model.parallelize import build_sharded_model  # noqa: E402
from model.plan import memory  # noqa: E402
from orchestration.config.schema import read_yaml  # noqa: E402

GiB = 2**30
# nats, the largest difference over the 50 steps (losses 5.5 -> ~2.5): bf16 rounds every matmul input to an 8-bit
# mantissa (relative error ~0.4%) and the GPU's attention kernels sum in another order
LOSS_TOLERANCE = 0.1


def preset(name: str, vocab: int, **over) -> ModelConfig:
    return ModelConfig.from_dict({**read_yaml(ROOT / "configs" / "model" / f"{name}.yaml"), "vocab_size": vocab, **over})


def text_batches(steps: int, batch: int, seq: int) -> torch.Tensor:
    """(steps, batch, seq + 1) windows of real text bytes (the training tests' own: tests/support/mesh_run.py)."""
    from mesh_run import text_windows

    return text_windows(steps * batch, seq).reshape(steps, batch, seq + 1)


def train_steps(cfg: ModelConfig, device: torch.device, batches: torch.Tensor, bf16: bool, compile_blocks: bool,
                ac: str, warmup: int = 0, seed: int = 0) -> dict:
    """Train on `batches` (one per step); losses, tokens/s over the steps after `warmup`, peak memory."""
    model = build_sharded_model(cfg, device, (1, 1), bf16, compile_blocks, seed, ac)
    opt = build_optimizer(model, 3e-3 if cfg.d_model < 512 else 3e-4, 0.1, (0.9, 0.95), 1e-8,
                          fused=device.type == "cuda")
    cuda = device.type == "cuda"
    losses, t0 = [], None
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    for i, b in enumerate(batches):
        if i == warmup:
            if cuda:
                torch.cuda.synchronize(device)
            t0 = time.perf_counter()
        b = b.to(device)
        loss = model(b[:, :-1], b[:, 1:])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(float(loss.detach()))
    if cuda:
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - t0 if t0 is not None else float("nan")
    tokens = (len(batches) - warmup) * batches.shape[1] * (batches.shape[2] - 1)
    peak = torch.cuda.max_memory_allocated(device) if cuda else None
    del model, opt
    if cuda:
        torch.cuda.empty_cache()
    return {"losses": losses, "tokens_per_s": tokens / seconds if seconds == seconds else None, "peak_bytes": peak}


def throughput(device, dry: bool) -> list[dict]:
    seq, micro, steps, warmup = (64, 2, 4, 1) if dry else (1024, 8, 30, 10)
    cfg = preset("tiny" if dry else "gpt2-124m", 50257)
    peak = gpu_peak_flops(torch.cuda.get_device_name(device)) if device.type == "cuda" else None
    g = torch.Generator().manual_seed(0)
    batches = torch.randint(0, cfg.vocab_size, (steps, micro, seq + 1), generator=g)
    rows = []
    for compile_blocks in ((False,) if dry else (False, True)):
        for ac in ("none", "full"):
            r = train_steps(cfg, device, batches, device.type == "cuda", compile_blocks, ac, warmup)
            fpt = flops_per_token(cfg, seq)
            rows.append({"model": "gpt2-124m" if not dry else "tiny", "compile": compile_blocks, "ac": ac,
                         "tokens_per_s": r["tokens_per_s"],
                         "mfu": r["tokens_per_s"] * fpt / peak if peak else None, "peak_bytes": r["peak_bytes"]})
            print(f"throughput {rows[-1]}", flush=True)
    return rows


def memory_against_plan(device, dry: bool) -> list[dict]:
    name, vocab, seq, micro = ("tiny", 2000, 256, 4) if dry else ("llama-1b", 128256, 2048, 2)
    cfg = preset(name, vocab)
    bf16 = device.type == "cuda"
    g = torch.Generator().manual_seed(0)
    batches = torch.randint(0, vocab, (2, micro, seq + 1), generator=g)
    rows = []
    for ac in ("none", "selective", "full"):
        planned = memory(cfg, seq, micro, 1, bf16, ac)
        if device.type == "cuda":
            measured = train_steps(cfg, device, batches, bf16, False, ac)["peak_bytes"]
        else:  # no allocator statistics on CPU: the tensor-level count
            from model.memory_probe import measure_step

            measured = measure_step(cfg, seq, micro, bf16, ac)["Total"]
        rows.append({"model": name, "seq_len": seq, "micro": micro, "ac": ac, "plan_bytes": planned["total"],
                     "measured_bytes": measured, "ratio": planned["total"] / measured})
        print(f"memory {rows[-1]}", flush=True)
    return rows


def cpu_losses(steps: int) -> list[float]:
    """The reference curve: fp32 on this machine's CPU, in a process (and gloo group) of its own."""
    proc = subprocess.run([sys.executable, __file__, "--cpu-reference", str(steps)], capture_output=True, text=True,
                          timeout=600, cwd=ROOT)
    if proc.returncode:
        raise RuntimeError(f"the CPU reference run failed: {proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def loss_curve(device, dry: bool) -> dict:
    steps = 6 if dry else 50
    cfg = preset("tiny", 256)
    batches = text_batches(steps, 16, 256)
    gpu = train_steps(cfg, device, batches, device.type == "cuda", False, "none")["losses"]
    cpu = cpu_losses(steps)
    diff = max(abs(a - b) for a, b in zip(gpu, cpu))
    out = {"steps": steps, "device_losses": gpu, "cpu_fp32_losses": cpu, "max_abs_diff": diff,
           "tolerance": LOSS_TOLERANCE, "ok": diff <= LOSS_TOLERANCE}
    print(f"loss curve: first {gpu[0]:.4f} / {cpu[0]:.4f}, last {gpu[-1]:.4f} / {cpu[-1]:.4f}, largest difference "
          f"{diff:.4f} (tolerance {LOSS_TOLERANCE})", flush=True)
    return out


def table(result: dict) -> str:
    lines = [f"GPU check: {result['device']}, torch {result['torch']}, NCCL {result['nccl']}, {result['date']}", ""]
    for part in ("throughput", "memory", "loss_curve"):
        if isinstance(result[part], dict) and "error" in result[part]:
            lines.append(f"{part}: FAILED: {result[part]['error']}")
            result = {**result, part: [] if part != "loss_curve" else None}
    lines += ["| model | torch.compile | activation checkpointing | tokens/s | MFU | peak memory GiB |",
              "|---|---|---|---:|---:|---:|"]
    for r in result["throughput"]:
        mfu = f"{r['mfu']:.1%}" if r["mfu"] is not None else "-"
        mem = f"{r['peak_bytes'] / GiB:.2f}" if r["peak_bytes"] else "-"
        lines.append(f"| {r['model']} | {'per block' if r['compile'] else 'eager'} | {r['ac']} | "
                     f"{r['tokens_per_s']:,.0f} | {mfu} | {mem} |")
    lines += ["", "| model | seq x micro | activation checkpointing | plan GiB | measured GiB | plan / measured |",
              "|---|---|---|---:|---:|---:|"]
    for r in result["memory"]:
        lines.append(f"| {r['model']} | {r['seq_len']} x {r['micro']} | {r['ac']} | {r['plan_bytes'] / GiB:.2f} | "
                     f"{r['measured_bytes'] / GiB:.2f} | {r['ratio']:.3f} |")
    c = result["loss_curve"]
    if c is None:
        return "\n".join(lines)
    lines += ["", f"Loss curve, tiny preset on text bytes, {c['steps']} steps, same seed: device "
              f"{c['device_losses'][0]:.4f} -> {c['device_losses'][-1]:.4f}, CPU fp32 {c['cpu_fp32_losses'][0]:.4f} -> "
              f"{c['cpu_fp32_losses'][-1]:.4f}; largest difference {c['max_abs_diff']:.4f} nats "
              f"({'within' if c['ok'] else 'OUTSIDE'} the {c['tolerance']} tolerance)"]
    return "\n".join(lines)


def section(fn, *args):
    """A part of the check; its error recorded (and the rest still run) rather than raised."""
    try:
        return fn(*args)
    except Exception as exc:  # noqa: BLE001 -- reported in the table and the exit code
        import traceback

        traceback.print_exc()
        return {"error": f"{type(exc).__name__}: {str(exc)[:500]}"}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", type=Path)
    ap.add_argument("--dry-run", action="store_true", help="the same code paths on CPU with tiny sizes")
    ap.add_argument("--cpu-reference", type=int, metavar="STEPS", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.cpu_reference:
        with group_of_one("gloo"):
            out = train_steps(preset("tiny", 256), torch.device("cpu"), text_batches(args.cpu_reference, 16, 256),
                              False, False, "none")["losses"]
        print(json.dumps(out))
        return 0
    if not args.dry_run and not torch.cuda.is_available():
        print("gpu_check: skipped: no CUDA device here (torch.cuda.is_available() is False); run it on a GPU machine")
        return 0
    device = torch.device("cuda", 0) if not args.dry_run else torch.device("cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    with group_of_one("nccl" if device.type == "cuda" else "gloo"):
        result = {
            "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU (dry run)",
            "torch": torch.__version__,
            "nccl": ".".join(map(str, torch.cuda.nccl.version())) if device.type == "cuda" else "-",
            "date": time.strftime("%Y-%m-%d"),
            "throughput": section(throughput, device, args.dry_run),
            "memory": section(memory_against_plan, device, args.dry_run),
            "loss_curve": section(loss_curve, device, args.dry_run),
        }
    print("\n" + table(result))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    failed = [k for k in ("throughput", "memory", "loss_curve") if isinstance(result[k], dict) and "error" in result[k]]
    ok = not failed and result["loss_curve"]["ok"] and all(0.8 <= r["ratio"] <= 1.2 for r in result["memory"])
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
