"""A training step's memory on CPU: the plan (model/plan.py) against what is measured, and what activation
checkpointing saves.

    .venv/bin/python benchmarks/bench_memory.py [--json benchmarks/results/memory.json] [--quick]

For the tiny preset (micro-batch 8 x 256, a 2,000-piece vocabulary, as the quickstart's tokenizer) and the 124M
preset (2 x 1024, GPT-2's 50,257), in fp32 and bf16 (FSDP's mixed precision, which runs on CPU too), with
activation checkpointing none, selective (every 2nd block) and full, each in a fresh process:

- tensor peak: every tensor storage alive at the step's peak (torch's FSDPMemTracker, model/memory_probe.py): what
  `torch.cuda.max_memory_allocated` would read on a GPU, and what the plan predicts;
- RSS growth: the process's peak resident memory over the measurement (the model's build, an untracked step, the
  tracked step) less its memory before it (the allocator's caching, the tracker's own bookkeeping and the
  interpreter's growth included): the saving of checkpointing read from the OS, coarser than the tensor count.

Then the plan on two gloo ranks (shard 2) by FSDP unit (each block, the whole model), fp32 and bf16: the tiny
preset (4 x 256) and the 124M on one short sequence (1 x 64, where the peak is not the activations) and on
4 x 256, the tensor peak against the plan and the moment the plan puts the peak at.

Ratios and differences, not absolute times: nothing here is timed.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CASES = {"tiny": (256, 8, 2000), "gpt2-124m": (1024, 2, 50257)}
MiB = 2**20


def _one(preset: str, bf16: bool, ac: str) -> dict:
    """In this (fresh) process: the tensor peak of a tracked step, then the RSS peak of an untracked one."""
    import resource

    import psutil

    sys.path.insert(0, str(ROOT))
    from model.config import ModelConfig
    from model.memory_probe import measure_step
    from model.plan import memory
    from orchestration.config.schema import read_yaml

    seq, micro, vocab = CASES[preset]
    cfg = ModelConfig.from_dict({**read_yaml(ROOT / "configs" / "model" / f"{preset}.yaml"), "vocab_size": vocab})
    before = psutil.Process().memory_info().rss
    tensors = measure_step(cfg, seq, micro, bf16, ac)
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    plan = memory(cfg, seq, micro, 1, bf16, ac)
    return {"preset": preset, "precision": "bf16" if bf16 else "fp32", "ac": ac, "seq_len": seq, "micro": micro,
            "vocab": vocab, "tensor_peak": tensors["Total"], "by_kind": tensors, "rss_growth": peak_rss - before,
            "plan": {k: v for k, v in plan.items()}}


TWO_RANKS = [("tiny", 256, 4, 2000), ("gpt2-124m", 64, 1, 50257), ("gpt2-124m", 256, 4, 50257)]


def two_ranks() -> list[dict]:
    sys.path.insert(0, str(ROOT))
    from model.config import ModelConfig
    from model.memory_probe import measure_on_ranks
    from model.plan import memory
    from orchestration.config.schema import read_yaml

    cases = []
    for preset, seq, micro, vocab in TWO_RANKS:
        cfg = ModelConfig.from_dict({**read_yaml(ROOT / "configs" / "model" / f"{preset}.yaml"), "vocab_size": vocab})
        cases += [dict(cfg=cfg, seq_len=seq, micro=micro, bf16=bf16, ac="none", unit=unit)
                  for bf16 in (False, True) for unit in ("block", "model")]
    measured = measure_on_ranks(2, cases)[0]
    rows = []
    for (preset, *_), case, got in zip([t for t in TWO_RANKS for _ in range(4)], cases, measured):
        plan = memory(case["cfg"], case["seq_len"], case["micro"], 2, case["bf16"], "none", unit=case["unit"])
        rows.append({"preset": preset, "seq_len": case["seq_len"], "micro": case["micro"], "shard": 2,
                     "precision": "bf16" if case["bf16"] else "fp32", "unit": case["unit"], "tensor_peak": got["Total"],
                     "by_kind": got, "plan": plan})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", type=Path)
    ap.add_argument("--quick", action="store_true", help="the tiny preset only")
    ap.add_argument("--one", nargs=3, metavar=("PRESET", "PRECISION", "AC"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        preset, precision, ac = args.one
        print(json.dumps(_one(preset, precision == "bf16", ac)))
        return
    rows = []
    for preset in (["tiny"] if args.quick else list(CASES)):
        for precision in ("fp32", "bf16"):
            for ac in ("none", "selective", "full"):
                proc = subprocess.run([sys.executable, __file__, "--one", preset, precision, ac], cwd=ROOT,
                                      capture_output=True, text=True, timeout=1200)
                if proc.returncode:
                    raise SystemExit(proc.stderr[-3000:])
                rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
                r = rows[-1]
                print(f"{preset} {precision} {ac}: tensors {r['tensor_peak'] / MiB:.1f} MiB, plan "
                      f"{r['plan']['total'] / MiB:.1f} MiB, RSS growth {r['rss_growth'] / MiB:.1f} MiB", flush=True)
    print("\n| preset | precision | checkpointing | plan MiB | measured (tensors) MiB | plan / measured | "
          "RSS growth MiB | saved vs none, tensors | saved vs none, RSS |")
    print("|---|---|---|---:|---:|---:|---:|---:|---:|")
    base = {(r["preset"], r["precision"]): r for r in rows if r["ac"] == "none"}
    for r in rows:
        b = base[(r["preset"], r["precision"])]
        print(f"| {r['preset']} | {r['precision']} | {r['ac']} | {r['plan']['total'] / MiB:,.1f} | "
              f"{r['tensor_peak'] / MiB:,.1f} | {r['plan']['total'] / r['tensor_peak']:.3f} | {r['rss_growth'] / MiB:,.1f} | "
              f"{(b['tensor_peak'] - r['tensor_peak']) / MiB:,.1f} MiB ({1 - r['tensor_peak'] / b['tensor_peak']:.0%}) | "
              f"{(b['rss_growth'] - r['rss_growth']) / MiB:,.1f} MiB |")
    two = [] if args.quick else two_ranks()
    if two:
        print("\nTwo ranks (shard 2), no checkpointing, by FSDP unit:\n")
        print("| preset | micro x seq | precision | FSDP unit | plan MiB | measured (tensors) MiB | plan / measured "
              "| peak at (plan) |")
        print("|---|---|---|---|---:|---:|---:|---|")
        for r in two:
            print(f"| {r['preset']} | {r['micro']} x {r['seq_len']} | {r['precision']} | {r['unit']} | "
                  f"{r['plan']['total'] / MiB:,.1f} | {r['tensor_peak'] / MiB:,.1f} | "
                  f"{r['plan']['total'] / r['tensor_peak']:.3f} | {r['plan']['peak_at']} |")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"rows": rows, "two_ranks": two}, indent=1) + "\n")


if __name__ == "__main__":
    main()
