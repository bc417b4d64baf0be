"""tokenmill, datatrove, NeMo Curator (CPU) and data-juicer on the same corpus and cores, in one window.

    make bench-peers     # = .venv/bin/python benchmarks/bench_peers.py [--mb 60] [--json benchmarks/results/peers.json]

Each system runs as its own process, one after the other, on the benchmark corpus (benchmarks/corpus.py, the
same files for all four) with all of this machine's cores, doing its closest built-in equivalent of FineWeb's
chain: Gopher repetition, Gopher quality, C4 (lines without terminal punctuation kept), FineWeb, then exact and
MinHash dedup (14 x 8 on word 5-grams), then a tokenizer and tokenization. What a system cannot do on a CPU, or
has no operator for, it does not do: the table says so in its own column, and benchmarks/peers/MISMATCHES.md
gives each rule's stand-in and how its semantics differ.

- tokenmill: `tokenmill pipeline` (the same config as bench_pipeline.py: filters, exact + MinHash dedup,
  SentencePiece training, tokenization, every step an MLflow run);
- datatrove 0.10.1: benchmarks/datatrove_baseline.py (its LocalPipelineExecutor, one worker per core), from
  the project's environment (the `bench` extra);
- NeMo Curator 1.4.0 and data-juicer 1.6.1: each in its own virtual environment under work/bench/peers/,
  created here from the registries when missing (`torch==2.13.0` first: a CPU build, so that neither pulls
  a CUDA one), running benchmarks/peers/curator_chain.py and datajuicer_chain.py.

Wall time is the whole process (imports, start-up, every phase); phases where the system reports them.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

import corpus  # noqa: E402
from bench_pipeline import FILTERS, MINHASH, phases_tokenmill, run_tokenmill  # noqa: E402

PEERS = REPO / "work" / "bench" / "peers"
VENVS = {  # what each environment installs, in order (torch first: its CPU build from the local wheel)
    "curator": [["torch==2.13.0"], ["nemo-curator[text-cpu]==1.4.0", "transformers<5"]],
    # ray and msgpack: data-juicer's lazy loader pip-installs them at import time otherwise (inside the timing)
    "datajuicer": [["torch==2.13.0"], ["py-data-juicer==1.6.1", "aiohttp", "ray==2.60.0", "msgpack"]],
}
SCRIPTS = {"curator": "curator_chain.py", "datajuicer": "datajuicer_chain.py"}


def venv(name: str) -> Path:
    py = PEERS / name / "bin" / "python"
    stamp = PEERS / name / ".installed"
    if stamp.is_file() and stamp.read_text() == json.dumps(VENVS[name]):
        return py
    print(f"setting up {name}'s environment in {PEERS / name} (a few minutes, once)", flush=True)
    subprocess.run([sys.executable, "-m", "venv", str(PEERS / name)], check=True)  # on the base interpreter
    for pkgs in VENVS[name]:
        subprocess.run([str(py), "-m", "pip", "install", "-q", *pkgs], check=True)
    stamp.write_text(json.dumps(VENVS[name]))
    return py


def _last_json_line(out: str) -> dict:
    for line in reversed(out.strip().splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    raise ValueError("no JSON result line")


def run_peer(name: str, cdir: Path, work: Path, workers: int) -> dict:
    py = venv(name)
    if work.exists():
        import shutil

        shutil.rmtree(work)
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "PYTHONPATH", "VIRTUAL_ENV")}
    t0 = time.perf_counter()
    proc = subprocess.run([str(py), str(REPO / "benchmarks" / "peers" / SCRIPTS[name]), "--input", str(cdir),
                           "--output", str(work), "--workers", str(workers)], env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    (PEERS / f"{name}.log").write_text(proc.stdout + "\n--- stderr ---\n" + proc.stderr)
    if proc.returncode:
        raise SystemExit(f"{name} failed (exit {proc.returncode}); its output: {PEERS / f'{name}.log'}")
    return {**_last_json_line(proc.stdout), "wall_s": wall}


def run_datatrove_process(cdir: Path, work: Path, workers: int, vocab: int, sample_docs: int) -> dict:
    code = ("import json, sys; sys.path.insert(0, %r)\n"
            "from datatrove_baseline import run_datatrove\n"
            "r = run_datatrove(%r, %r, %d, %r, %r, {'vocab_size': %d, 'sample_docs': %d})\n"
            "print(json.dumps({k: v for k, v in r.items() if not k.startswith('ids_') and k != 'filter_stats'}))"
            % (str(REPO / "benchmarks"), str(cdir), str(work), workers, FILTERS, MINHASH, vocab, sample_docs))
    if work.exists():
        import shutil

        shutil.rmtree(work)
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode:
        raise SystemExit(f"datatrove failed:\n{proc.stderr[-3000:]}")
    r = _last_json_line(proc.stdout)
    phases = {k: r[k] for k in ("filters", "exact_dedup", "minhash", "tokenizer_train", "tokenize") if k in r}
    return {"system": "datatrove 0.10.1", "wall_s": wall, "phases": phases, "docs_in": r["docs_in"],
            "kept_after_filters": r["after_filters"], "kept_after_dedup": r["after_dedup"],
            "tokenized": bool(r.get("token_count")), "not_done": []}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mb", type=float, default=60.0)
    ap.add_argument("--vocab", type=int, default=8000)
    ap.add_argument("--sample-docs", type=int, default=4000)
    ap.add_argument("--only", nargs="*", default=None, help="systems to run (tokenmill datatrove curator datajuicer)")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    cores = os.cpu_count() or 1
    root = REPO / "work" / "bench" / "peers-run"
    root.mkdir(parents=True, exist_ok=True)
    info = corpus.build(root / "corpus", args.mb)
    cdir = root / "corpus"
    print(f"corpus: {info['documents']} documents, {info['mb']} MB; {cores} cores", flush=True)
    only = set(args.only or ("tokenmill", "datatrove", "curator", "datajuicer"))
    rows = []
    if "tokenmill" in only:
        work = root / "tokenmill"
        if work.exists():
            import shutil

            shutil.rmtree(work)
        tm = run_tokenmill(cdir, work, args.vocab, args.sample_docs)
        s = tm["summary"]
        by = {st["stage"]: st for st in s["stages"]}
        rows.append({"system": "tokenmill", "wall_s": tm["wall"], "phases": phases_tokenmill(s),
                     "docs_in": by["filter"]["docs_in"], "kept_after_filters": by["filter"]["kept"],
                     "kept_after_dedup": by["minhash"]["kept"], "tokenized": True, "not_done": []})
        print(f"tokenmill: {tm['wall']:.1f}s", flush=True)
    if "datatrove" in only:
        rows.append(run_datatrove_process(cdir, root / "datatrove", cores, args.vocab, args.sample_docs))
        print(f"datatrove: {rows[-1]['wall_s']:.1f}s", flush=True)
    for name in ("curator", "datajuicer"):
        if name in only:
            rows.append(run_peer(name, cdir, root / name, cores))
            print(f"{rows[-1]['system']}: {rows[-1]['wall_s']:.1f}s", flush=True)
    tm_wall = next((r["wall_s"] for r in rows if r["system"] == "tokenmill"), None)
    print(f"\n{info['documents']} documents, {info['mb']} MB, {cores} cores, one window; wall = the whole process\n")
    print("| system | wall s | x tokenmill's wall | phases (s) | kept after filters | kept after dedup | tokenized | did not do |")
    print("|---|---:|---:|---|---:|---:|---|---|")
    for r in rows:
        ratio = f"{r['wall_s'] / tm_wall:.2f}" if tm_wall else ""
        phases = ", ".join(f"{k} {v:.1f}" for k, v in r.get("phases", {}).items())
        print(f"| {r['system']} | {r['wall_s']:.1f} | {ratio} | {phases} | {r['kept_after_filters']} | "
              f"{r['kept_after_dedup'] if r['kept_after_dedup'] is not None else '-'} | "
              f"{'yes' if r['tokenized'] else 'no'} | {len(r['not_done']) or '-'}{' (below)' if r['not_done'] else ''} |")
    for r in rows:
        if r["not_done"]:
            print(f"\n{r['system']} did not do (benchmarks/peers/MISMATCHES.md says how its rules differ):")
            for item in r["not_done"]:
                print(f"- {item}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"corpus": info, "cores": cores, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
