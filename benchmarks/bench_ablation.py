"""The real ablation (docs/ablations.md): `tokenmill ablate configs/ablate/corpora.yaml` on ../shared/corpora, the
baseline recipe (every stage) against no heuristic filters, no MinHash and a stricter quality threshold, 3 seeds
each, and what it cost.

    .venv/bin/python benchmarks/bench_ablation.py [--workdir work/ablate/corpora] [--json benchmarks/results/ablation.json]
        [--prepare-only] [ablate overrides...]

The books of ../shared/corpora/gutenberg are whole files of 0.4-3.4 MB, hard-wrapped at ~70 characters: as they
are, every one fails Gopher's 100,000-word cap and C4's line rule would cut most of their lines. A crawl never
hands a pipeline a book that way, so this script first writes them as JSONL documents of at most 1,500 words,
cut at paragraph boundaries with each paragraph's line wraps joined (`WORKDIR/../books/*.jsonl`, outside the
repository; the pipeline config reads them from there). Then it runs the ablation (a re-run resumes it) and writes
the verdict, the work sharing (passes run against a naive run of every variant) and the compute to --json.
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
sys.path.insert(0, str(REPO))

from pipelines.quality import book_documents  # noqa: E402

GUTENBERG = REPO.parent / "shared" / "corpora" / "gutenberg"
CONFIG = REPO / "configs" / "ablate" / "corpora.yaml"
BOOKS = REPO / "work" / "ablate" / "books"  # where configs/ablate/corpora/pipeline.yaml reads the books


def prepare_books(out: Path, max_words: int = 1500, min_words: int = 100) -> dict:
    """Every Gutenberg book as documents of at most max_words words along paragraphs, line wraps joined;
    one JSONL file per language (`en.jsonl`, `fr.jsonl`), ids `<file>#<piece>`. Deterministic."""
    out.mkdir(parents=True, exist_ok=True)
    counts = {}
    for lang, files in (("en", sorted(GUTENBERG.glob("*.txt"))), ("fr", sorted((GUTENBERG / "french").glob("*.txt")))):
        n = 0
        tmp = out / f"{lang}.jsonl.tmp"
        with tmp.open("w", encoding="utf-8") as f:
            for path in files:
                text = path.read_text(encoding="utf-8", errors="replace")
                for k, chunk in enumerate(book_documents(text, min_words, max_words)):
                    f.write(json.dumps({"id": f"{path.name}#{k}", "text": chunk}, ensure_ascii=False) + "\n")
                    n += 1
        tmp.replace(out / f"{lang}.jsonl")
        counts[lang] = {"books": len(files), "documents": n}
    return counts


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", default=str(REPO / "work" / "ablate" / "corpora"))
    ap.add_argument("--json", default=str(REPO / "benchmarks" / "results" / "ablation.json"))
    ap.add_argument("--prepare-only", action="store_true")
    ap.add_argument("overrides", nargs="*", help="passed to tokenmill ablate (KEY=VALUE of the ablation config)")
    args = ap.parse_args()
    if not GUTENBERG.is_dir():
        print(f"bench_ablation: {GUTENBERG} not found (../shared/corpora): nothing to ablate", file=sys.stderr)
        return 2
    books = prepare_books(BOOKS)
    print(f"bench_ablation: books as documents in {BOOKS}: {books}")
    if args.prepare_only:
        return 0
    workdir = Path(args.workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ}
    env.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{workdir / 'mlflow.db'}")
    t0 = time.time()
    proc = subprocess.run([sys.executable, "-m", "orchestration.cli", "ablate", str(CONFIG), "--workdir", str(workdir),
                           *args.overrides], cwd=REPO, env=env)
    wall = time.time() - t0
    if proc.returncode:
        return proc.returncode
    verdict = json.loads((workdir / "verdict.json").read_text())
    trains = {}
    for summary in sorted((workdir / "train").glob("*/train_summary.json")):
        s = json.loads(summary.read_text())
        trains[summary.parent.name] = {"seconds": round(s["seconds"], 1), "step": s["step"], "run_id": s["run_id"]}
    pipelines = {}
    for v in verdict["sharing"]:
        s = json.loads((workdir / "variants" / v / "summary.json").read_text())
        pipelines[v] = {"seconds": round(s["seconds"], 1), "tokens": s["tokens"].get("tokens"),
                        "stages": {st["stage"]: {"docs_in": st["docs_in"], "kept": st["kept"],
                                                 "dropped": sum(st["dropped"].values()), "mb_text_kept": st["mb_text_kept"]}
                                   for st in s["stages"]}}
    out = {"config": str(CONFIG.relative_to(REPO)), "books": books, "wall_s_this_invocation": round(wall, 1),
           "sharing": verdict["sharing"], "pipelines": pipelines, "train_runs": trains,
           "train_seconds_total": round(sum(t["seconds"] for t in trains.values()), 1),
           "rows": verdict["rows"], "markdown": verdict["markdown"], "ablation_run": verdict["ablation_run"]}
    Path(args.json).write_text(json.dumps(out, indent=1) + "\n")
    print(verdict["markdown"])
    print(f"bench_ablation: wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
