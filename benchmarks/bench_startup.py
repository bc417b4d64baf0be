"""A pipeline's fixed cost: `tokenmill pipeline` on 20 small documents, where the time goes.

    .venv/bin/python benchmarks/bench_startup.py [--runs 3] [--json benchmarks/results/startup.json]

Each run is a fresh process and a fresh workdir on a warm machine (the same MLflow SQLite store, the
files in the page cache), in two settings: a local Ray the command starts (the default) and a Ray
already running (`ray start --head`, joined through RAY_ADDRESS: what a cluster user has). Phases from
the pipeline's own summary (summary.json "startup_seconds", the passes and global steps) and the wall
clock around the process:

  process_and_config   interpreter start, imports, reading the config (until the pipeline starts)
  preflight            a stage's preparation, the config's files and globs, the raw files' digests
  mlflow               MLflow's import and store set-up, closing runs a dead process left RUNNING
  ray                  starting (or joining) Ray
  work                 the passes and global steps (Ray tasks: a worker's first task imports the stages)
  record               the MLflow runs of the stages, manifests, the summary, the lineage graph
  exit                 after the summary: Ray's shutdown and the exit (orchestration.cli.run: the atexit
                       handlers, then os._exit without the interpreter's module teardown)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
PHASES = ("process_and_config", "preflight", "mlflow", "ray", "work", "record", "exit")


def _setup(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    docs = root / "tiny.jsonl"
    with open(docs, "w") as f:
        for i in range(20):
            text = f"Document {i} says a little about the weather and the sea. " * 20
            f.write(json.dumps({"id": str(i), "text": text}) + "\n")
    cfg = root / "tiny.yaml"
    cfg.write_text(yaml.safe_dump({
        "name": "startup", "inputs": [{"name": "tiny", "format": "jsonl", "paths": [str(docs)], "id_field": "id"}],
        "extract": {"enabled": False}, "quality": {"enabled": False}, "tokenizer": {"enabled": False},
        "tokenize": {"enabled": False}, "mlflow": {"experiment": "startup"}}))
    return cfg


def _run(cfg: Path, work: Path, env: dict) -> dict:
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "orchestration.cli", "pipeline", str(cfg), "--workdir", str(work)],
                          cwd=REPO, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode:
        raise SystemExit(f"tokenmill failed:\n{proc.stderr[-3000:]}")
    s = json.loads((work / "summary.json").read_text())
    st = s["startup_seconds"]
    work_s = sum(p["seconds"] for p in s["passes"]) + sum(g["seconds"] for g in s["global_steps"].values())
    record = s["seconds"] - st["preflight"] - st["mlflow"] - st["ray"] - work_s
    return {"wall": wall, "process_and_config": st["process_and_config"], "preflight": st["preflight"],
            "mlflow": st["mlflow"], "ray": st["ray"], "work": work_s, "record": record,
            "exit": wall - st["process_and_config"] - s["seconds"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    root = REPO / "work" / "bench" / "startup"
    shutil.rmtree(root, ignore_errors=True)  # every run a fresh workdir: a finished one would only be found done
    cfg = _setup(root)
    base = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    base["MLFLOW_TRACKING_URI"] = f"sqlite:///{root / 'mlflow.db'}"
    results: dict[str, list[dict]] = {"local Ray": [], "running Ray (RAY_ADDRESS)": []}
    _run(cfg, root / "warmup", base)  # the store's schema, the page cache
    for i in range(args.runs):
        results["local Ray"].append(_run(cfg, root / f"local-{i}", base))
    subprocess.run(["ray", "start", "--head", "--num-cpus", str(os.cpu_count()), "--include-dashboard=false",
                    "--disable-usage-stats"], env=base, capture_output=True, check=True,
                   executable=str(Path(sys.executable).with_name("ray")))
    try:
        joined = {**base, "RAY_ADDRESS": "auto"}
        _run(cfg, root / "warmup-joined", joined)
        for i in range(args.runs):
            results["running Ray (RAY_ADDRESS)"].append(_run(cfg, root / f"joined-{i}", joined))
    finally:
        subprocess.run([str(Path(sys.executable).with_name("ray")), "stop"], capture_output=True)
    print(f"\n`tokenmill pipeline` on 20 documents, median of {args.runs} runs, seconds\n")
    print("| setting | wall | " + " | ".join(PHASES) + " |")
    print("|---|---:|" + "---:|" * len(PHASES))
    table = {}
    for name, runs in results.items():
        med = {k: statistics.median(r[k] for r in runs) for k in ("wall", *PHASES)}
        table[name] = med
        print(f"| {name} | {med['wall']:.2f} | " + " | ".join(f"{med[k]:.2f}" for k in PHASES) + " |")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"median_seconds": table, "runs": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
