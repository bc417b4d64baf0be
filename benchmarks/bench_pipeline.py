"""tokenmill's corpus chain against datatrove 0.10.1 on the same machine, data and cores, in one run.

    make bench        # = .venv/bin/python benchmarks/bench_pipeline.py [--mb 200] [--scale-mb 12.5]

The chain: heuristic filters (Gopher repetition + quality, C4 with filter_no_terminal_punct=false,
FineWeb), exact + MinHash (14 x 8, word 5-grams) dedup, tokenizer training (tokenmill: SentencePiece BPE;
datatrove: an HF `tokenizers` byte-level BPE, same vocabulary size and sample size), tokenization
(tokenmill's tokenize stage; datatrove's DocumentTokenizer). Corpus: benchmarks/corpus.py (Gutenberg in ~4 KB
documents, crawl/wiki/forum text, planted exact and near copies). Both systems use all cores (datatrove:
LocalPipelineExecutor with one worker per core).

Reported: per phase and end to end, wall seconds, docs/s and MB/s per core, the ratio to datatrove, the
agreement of the kept sets after filters and after dedup; tokenize against SentencePiece's bare encode of
the same documents on the same cores; a scaling run of tokenmill at 1x, 4x and 16x input (wall time, peak
RSS of any worker). Prints a table and writes work/bench/results.json. Ratios, not absolute times: this
machine's speed drifts 20-40% over minutes.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from multiprocessing import Pool
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

import corpus  # noqa: E402

FILTERS = {"gopher_repetition": {}, "gopher_quality": {}, "c4": {"filter_no_terminal_punct": False}, "fineweb": {}}
MINHASH = {"ngram": 5, "bands": 14, "rows": 8}


def tokenmill_config(corpus_dir: Path, vocab: int, sample_docs: int) -> dict:
    return {
        "name": "bench",
        "inputs": [{"name": "bench", "format": "jsonl", "paths": [str(Path(corpus_dir).resolve() / "part-*.jsonl.gz")], "id_field": "id"}],
        "output": {"format": "parquet", "shard_mb": 16},
        "extract": {"enabled": False},  # plain text: datatrove runs no extraction either
        "filter": {"word_splitter": "fast", **FILTERS, "language": {"model_path": None},
                   "pii": {"emails": False, "ips": False}},  # datatrove's chain has no PII masking
        "exact_dedup": {"normalize": "whitespace"},
        "minhash": MINHASH,
        "tokenizer": {"enabled": True, "vocab_size": vocab, "sample_docs": sample_docs},
        "tokenize": {"enabled": True, "target_shard_tokens": 50_000_000},
        "mlflow": {"experiment": "bench"},
    }


def run_tokenmill(corpus_dir: Path, work: Path, vocab: int, sample_docs: int, config_path: Path | None = None) -> dict:
    """The CLI on the bench config (or on config_path), in a fresh process with its own local Ray."""
    work.mkdir(parents=True, exist_ok=True)
    cfg_path = config_path or work.parent / f"{work.name}.yaml"
    if config_path is None:
        cfg_path.write_text(yaml.safe_dump(tokenmill_config(corpus_dir, vocab, sample_docs)))
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{work.parent / (work.name + '.mlflow.db')}"}
    env.pop("RAY_ADDRESS", None)
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "orchestration.cli", "pipeline", str(cfg_path), "--workdir", str(work)],
                          cwd=REPO, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode:
        raise SystemExit(f"tokenmill failed:\n{proc.stderr[-4000:]}")
    summary = json.loads((work / "summary.json").read_text())
    return {"wall": wall, "summary": summary}


def _kept_ids(work: Path, stage: dict) -> set[str]:
    import pyarrow.parquet as pq

    ids = set()
    for f in stage["kept_files"]:
        ids.update(i.split("#", 1)[1] for i in pq.read_table(work / f, columns=["id"]).column("id").to_pylist())
    return ids


def _encode_part(args) -> int:
    model, texts = args
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=model)
    return sum(len(x) for x in sp.encode(texts))


def bare_sentencepiece(work: Path, stage: dict, model: str, cores: int) -> dict:
    """SentencePiece's own encode of the same documents, `cores` processes, texts already in memory."""
    import pyarrow.parquet as pq

    texts = [t for f in stage["kept_files"] for t in pq.read_table(work / f, columns=["text"]).column("text").to_pylist()]
    mb = sum(len(t.encode("utf-8")) for t in texts) / 1e6
    parts = [(model, texts[k::cores]) for k in range(cores)]
    with Pool(cores) as pool:
        pool.map(_encode_part, [(model, ["warm up"])] * cores)
        t0 = time.perf_counter()
        tokens = sum(pool.map(_encode_part, parts))
        secs = time.perf_counter() - t0
    return {"seconds": secs, "mb": mb, "tokens": tokens}


def phases_tokenmill(s: dict) -> dict:
    """Wall seconds per phase: filters = pass 0 (read, filter, collect dedup keys); dedup = the global
    dedup steps + pass 1 (apply drops, collect the tokenizer sample); tokenizer; tokenize = the last pass."""
    passes, steps = s["passes"], s["global_steps"]
    return {
        "filters": passes[0]["seconds"],
        "dedup": steps["exact_dedup"]["seconds"] + steps["minhash"]["seconds"] + passes[1]["seconds"],
        "tokenizer_train": steps["tokenize"]["seconds"],
        "tokenize": passes[-1]["seconds"],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mb", type=float, default=200.0)
    ap.add_argument("--scale-mb", type=float, default=12.5, help="1x of the scaling run (4x and 16x follow)")
    ap.add_argument("--vocab", type=int, default=8000)
    ap.add_argument("--sample-docs", type=int, default=4000)
    ap.add_argument("--skip-datatrove", action="store_true")
    ap.add_argument("--skip-scaling", action="store_true")
    ap.add_argument("--scaling-only", action="store_true", help="redo only the scaling run, keep the rest of results.json")
    args = ap.parse_args()
    if args.scaling_only:
        results = json.loads((REPO / "work" / "bench" / "results.json").read_text())
        results["scaling"] = scaling(REPO / "work" / "bench", args)
        (REPO / "work" / "bench" / "results.json").write_text(_dump(results))
        print(table(results))
        return
    cores = os.cpu_count() or 1
    root = REPO / "work" / "bench"
    root.mkdir(parents=True, exist_ok=True)
    results: dict = {"cores": cores, "args": vars(args)}

    info = corpus.build(root / "corpus", args.mb)
    results["corpus"] = info
    print(f"corpus: {info['documents']} documents, {info['mb']} MB ({info['planted']})", flush=True)
    cdir = root / "corpus"
    tm_work = root / "tokenmill"
    if tm_work.exists():
        import shutil

        shutil.rmtree(tm_work)
    tm = run_tokenmill(cdir, tm_work, args.vocab, args.sample_docs)
    s = tm["summary"]
    results["tokenmill"] = {"wall": tm["wall"], "pipeline_seconds": s["seconds"], "phases": phases_tokenmill(s),
                            "passes": s["passes"], "global_steps": s["global_steps"],
                            "stages": [{k: st[k] for k in ("stage", "docs_in", "kept", "seconds")} for st in s["stages"]],
                            "tokens": s["tokens"]["tokens"]}
    print(f"tokenmill: {tm['wall']:.1f}s", flush=True)
    by = {st["stage"]: st for st in s["stages"]}
    bare = bare_sentencepiece(tm_work, s["stages"][-1], s["tokenizer"]["model_path"], cores)
    results["sentencepiece_bare"] = bare

    if not args.skip_datatrove:
        from datatrove_baseline import run_datatrove

        dt_work = root / "datatrove"
        if dt_work.exists():
            import shutil

            shutil.rmtree(dt_work)
        t0 = time.perf_counter()
        dt = run_datatrove(str(cdir), str(dt_work), cores, FILTERS, MINHASH,
                           {"vocab_size": args.vocab, "sample_docs": args.sample_docs})
        dt_wall = time.perf_counter() - t0
        tm_filtered, tm_dedup = _kept_ids(tm_work, by["filter"]), _kept_ids(tm_work, by["minhash"])
        dt_filtered, dt_dedup = set(dt.pop("ids_after_filters")), set(dt.pop("ids_after_dedup"))
        results["datatrove"] = {**dt, "wall": dt_wall}
        results["agreement"] = {
            "filters": {"tokenmill": len(tm_filtered), "datatrove": len(dt_filtered), "both": len(tm_filtered & dt_filtered),
                        "jaccard": len(tm_filtered & dt_filtered) / max(1, len(tm_filtered | dt_filtered))},
            "dedup": {"tokenmill": len(tm_dedup), "datatrove": len(dt_dedup), "both": len(tm_dedup & dt_dedup),
                      "jaccard": len(tm_dedup & dt_dedup) / max(1, len(tm_dedup | dt_dedup))},
        }
        print(f"datatrove: {dt_wall:.1f}s", flush=True)

    if not args.skip_scaling:
        results["scaling"] = scaling(root, args)

    out = root / "results.json"
    out.write_text(_dump(results))
    print(table(results))
    print(f"\nwrote {out}")


def _dump(results: dict) -> str:
    """JSON with paths relative to the repository (a results file names no machine's folders)."""
    return json.dumps(results, indent=1, default=str).replace(str(REPO) + "/", "")


def scaling(root: Path, args) -> list[dict]:
    scale = []
    for k in (1, 4, 16):
        mb = args.scale_mb * k
        d = root / f"scale-{k}x"
        ci = corpus.build(d / "corpus", mb, files=16)
        w = d / "tokenmill"
        if w.exists():
            import shutil

            shutil.rmtree(w)
        r = run_tokenmill(d / "corpus", w, args.vocab, args.sample_docs)
        rss = max(p.get("peak_rss_mb", 0) for p in r["summary"]["passes"])  # shard tasks
        gs = r["summary"]["global_steps"]
        scale.append({"x": k, "mb": ci["mb"], "docs": ci["documents"], "wall": r["wall"],
                      "pipeline_seconds": r["summary"]["seconds"], "peak_rss_mb": rss,
                      "peak_rss_by_pass": [p.get("peak_rss_mb") for p in r["summary"]["passes"]],
                      "global_step_rss_mb": {n: v.get("peak_rss_mb") for n, v in gs.items()}})
        print(f"scale {k}x: {ci['mb']} MB in {r['wall']:.1f}s, peak worker RSS {rss:.0f} MB", flush=True)
    return scale


def table(r: dict) -> str:
    cores, mb, docs = r["cores"], r["corpus"]["mb"], r["corpus"]["documents"]
    tm = r["tokenmill"]
    lines = [f"\n{docs} documents, {mb} MB, {cores} cores (MB/s and docs/s are per core)\n"]
    head = f"{'phase':16s} {'tokenmill s':>11s} {'datatrove s':>11s} {'tm MB/s/core':>12s} {'dt MB/s/core':>12s} {'tm/dt speed':>11s}"
    lines.append(head)
    lines.append("-" * len(head))
    dt = r.get("datatrove")
    dt_phase = {}
    if dt:
        dt_phase = {"filters": dt["filters"], "dedup": (dt.get("exact_dedup") or 0) + dt["minhash"],
                    "tokenizer_train": dt["tokenizer_train"], "tokenize": dt["tokenize"]}
    tm_total = tm["wall"]
    rows = [*tm["phases"].items(), ("end to end", tm_total)]
    for name, secs in rows:
        d = dt_phase.get(name) if name != "end to end" else (dt["wall"] if dt else None)
        speed = f"{d / secs:10.2f}x" if d else "-"
        lines.append(f"{name:16s} {secs:11.1f} {d if d else float('nan'):11.1f} {mb / secs / cores:12.3f} "
                     f"{(mb / d / cores) if d else float('nan'):12.3f} {speed:>11s}")
    lines.append(f"{'docs/s/core e2e':16s} {docs / tm_total / cores:11.0f} "
                 f"{(docs / dt['wall'] / cores) if dt else float('nan'):11.0f}")
    bare = r["sentencepiece_bare"]
    tk = tm["phases"]["tokenize"]
    lines.append(f"\ntokenize pass: {bare['mb'] / tk:.2f} MB/s on {cores} cores; SentencePiece bare encode of the same "
                 f"text: {bare['mb'] / bare['seconds']:.2f} MB/s (tokenize = {bare['seconds'] / tk:.2f} of bare)")
    if "agreement" in r:
        for k, a in r["agreement"].items():
            lines.append(f"kept after {k}: tokenmill {a['tokenmill']}, datatrove {a['datatrove']}, both {a['both']}, "
                         f"Jaccard {a['jaccard']:.4f}")
    if "scaling" in r:
        lines.append(f"\n{'scale':6s} {'MB':>7s} {'wall s':>8s} {'x time':>7s} {'shard task RSS MB':>18s} {'x RSS':>6s}"
                     f"  global steps' peak RSS MB (exact / minhash components / tokenizer)")
        base = r["scaling"][0]
        for s in r["scaling"]:
            g = s["global_step_rss_mb"]
            lines.append(f"{s['x']:>4d}x  {s['mb']:7.1f} {s['wall']:8.1f} {s['wall'] / base['wall']:7.2f} "
                         f"{s['peak_rss_mb']:18.0f} {s['peak_rss_mb'] / base['peak_rss_mb']:6.2f}  "
                         f"{g.get('exact_dedup')} / {g.get('minhash')} / {g.get('tokenize')}")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
