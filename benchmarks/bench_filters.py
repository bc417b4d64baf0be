"""The heuristic filters, docs per CPU-second: datatrove's filter classes against the fused kernels.

    .venv/bin/python benchmarks/bench_filters.py [--docs 2000] [--json benchmarks/results/filters.json]

Same process, same documents, one after the other: a deterministic sample of the benchmark corpus
(benchmarks/corpus.py: Gutenberg in ~4 KB documents, crawl, wiki, forum and C4 text). For each filter alone and
for the chain the pipeline runs (FineWeb's recipe: Gopher repetition, Gopher quality, C4 keeping lines without
terminal punctuation, FineWeb), two engines of tokenmill's FilterChain:

- "datatrove": the datatrove 0.10 classes' own filter() calls with the fast word splitter (words.py), which is
  what the pipeline ran before the fused kernels;
- "fused": pipelines/filters/fused.py, the same decisions (checked here on every document, and by
  tests/test_filter_kernels.py on 10,000 more) from one pass on integer word ids.

Each run starts cold (a new chain, the word splitter's memo and the fused kernels' vocabulary cleared), as a
fresh worker, and goes once through the sample. CPU time (robust on a shared machine); ratios, not absolute numbers: this
machine's speed drifts 20-40%.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import corpus  # noqa: E402

from pipelines.filters import FILTER_CLASSES, FilterChain, fast_tokenizer_for  # noqa: E402
from pipelines.filters.fused import clear_vocabularies  # noqa: E402

CHAIN = {**{name: {} for name in FILTER_CLASSES}, "c4": {"filter_no_terminal_punct": False}}
RUNS = {**{name: {name: CHAIN[name]} for name in FILTER_CLASSES}, "chain (all four)": CHAIN}


def sample(n: int, seed: int = 0) -> list[str]:
    docs = [text for _, text in corpus.base_documents()]
    return random.Random(seed).sample(docs, min(n, len(docs)))


def run(cfg: dict, engine: str, docs: list[str]) -> tuple[float, list[tuple[str, str]]]:
    fast_tokenizer_for("en").clear_cache()
    clear_vocabularies()
    chain = FilterChain(cfg, engine=engine)
    chain.apply("Warm up the tokenizer rules. " * 10, {})  # load the rules outside the timing
    fast_tokenizer_for("en").clear_cache()
    clear_vocabularies()
    cpu = time.process_time()
    out = [chain.apply(text, {}) for text in docs]
    return time.process_time() - cpu, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    # 6,000 documents (27 MB): about what each of two workers filters of the 56 MB benchmark corpus
    parser.add_argument("--docs", type=int, default=6000)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    docs = sample(args.docs)
    mb = sum(len(t.encode("utf-8")) for t in docs) / 1e6
    rows = []
    for name, cfg in RUNS.items():
        ref_cpu, ref_out = run(cfg, "datatrove", docs)
        cpu, out = run(cfg, "fused", docs)
        same = sum(a == b for a, b in zip(ref_out, out))
        kept = sum(1 for _, reason in out if not reason)
        rows.append({"filter": name, "docs": len(docs), "kept": kept, "same_decisions_and_text": same,
                     "datatrove_docs_per_cpu_s": len(docs) / ref_cpu, "fused_docs_per_cpu_s": len(docs) / cpu,
                     "fused_mb_per_cpu_s": mb / cpu, "speedup": ref_cpu / cpu})
    print(f"\n{len(docs)} documents of the benchmark corpus, {mb:.1f} MB, one process, cold start\n")
    print("| filter | datatrove docs/CPU-s | fused docs/CPU-s | fused MB/CPU-s | speedup | kept | same output |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['filter']} | {r['datatrove_docs_per_cpu_s']:.0f} | {r['fused_docs_per_cpu_s']:.0f} | "
              f"{r['fused_mb_per_cpu_s']:.2f} | {r['speedup']:.2f}x | {r['kept']} | "
              f"{r['same_decisions_and_text']}/{r['docs']} |")
    if any(r["same_decisions_and_text"] != r["docs"] for r in rows):
        sys.exit("the fused kernels disagreed with datatrove's classes on some document (see the table)")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"docs": len(docs), "mb": mb, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
