"""Throughput of the heuristic filters: datatrove's spaCy word splitting vs the fast splitter.

Single process, same machine, same data (the 697 Common Crawl docs of dolma_fixtures):

    .venv/bin/python benchmarks/bench_filters.py [--passes 2]

Pass 1 of a fast run starts with an empty chunk cache ("cold": every distinct whitespace-separated
chunk is split once); later passes see the same documents again ("warm": all cache hits), an
upper bound for a long-running worker. spaCy is loaded before timing. Throughput is reported on
CPU time (robust on a shared machine) and on wall time.
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
import time
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from datatrove.data import Document  # noqa: E402
from datatrove.pipeline.filters import GopherQualityFilter  # noqa: E402

from pipelines.filters import FILTER_CLASSES, FilterChain, fast_tokenizer_for  # noqa: E402

DOLMA = ROOT.parent / "shared" / "corpora" / "dolma_fixtures" / "CC-MAIN-20190717121559-20190717143559-00140.jsonl.gz"
ALL = {name: {} for name in FILTER_CLASSES}


def load_docs() -> list[str]:
    if not DOLMA.is_file():
        sys.exit(f"corpus not found: {DOLMA}")
    with gzip.open(DOLMA, "rt", encoding="utf-8") as f:
        return [json.loads(line)["text"] for line in f]


def timed(fn: Callable[[str], object], docs: list[str]) -> tuple[float, float]:
    cpu, wall = time.process_time(), time.perf_counter()
    for text in docs:
        fn(text)
    return time.process_time() - cpu, time.perf_counter() - wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--passes", type=int, default=2)
    args = parser.parse_args()
    docs = load_docs()

    gopher = GopherQualityFilter()
    gopher_fast = FilterChain({"gopher_quality": {}})
    chain_spacy = FilterChain({**ALL, "word_splitter": "spacy"})
    chain_fast = FilterChain({**ALL, "word_splitter": "fast"})
    runs: dict[str, Callable[[str], object]] = {
        "datatrove GopherQualityFilter (spaCy)": lambda t: gopher.filter(Document(text=t, id="")),
        "FilterChain gopher_quality (fast)": lambda t: gopher_fast.apply(t, {}),
        "FilterChain all 4 filters (spaCy)": lambda t: chain_spacy.apply(t, {}),
        "FilterChain all 4 filters (fast)": lambda t: chain_fast.apply(t, {}),
    }
    for fn in runs.values():  # load spaCy and the tokenizer rules outside the timings
        fn("Warm up the tokenizers. " * 10)

    fast_tok = fast_tokenizer_for("en")
    results: dict[str, list[tuple[float, float]]] = {}
    for name, fn in runs.items():
        fast_tok.clear_cache()  # every run starts cold
        results[name] = [timed(fn, docs) for _ in range(args.passes)]

    n = len(docs)
    base = {"gopher": results["datatrove GopherQualityFilter (spaCy)"][0][0],
            "chain": results["FilterChain all 4 filters (spaCy)"][0][0]}
    print(f"\n{n} docs, {sum(map(len, docs)) / 1e6:.1f} MB, single process\n")
    print(f"{'run':40s} {'pass':>10s} {'docs/s (cpu)':>13s} {'docs/s (wall)':>14s} {'x vs spaCy':>11s}")
    for name, passes in results.items():
        ref = base["gopher"] if "gopher" in name.lower() else base["chain"]
        for i, (cpu, wall) in enumerate(passes):
            label = "1 (cold)" if i == 0 else f"{i + 1} (warm)"
            print(f"{name:40s} {label:>10s} {n / cpu:13.0f} {n / wall:14.0f} {ref / cpu:10.1f}x")


if __name__ == "__main__":
    main()
