"""MinHash signature throughput: tokenmill's batch-vectorized `signatures` vs datatrove 0.10's
MinhashDedupSignature hashing path (get_shingles + get_signature per document, as its run() does),
single process, same documents, same shingling (word 5-grams) and 14 x 8 hash functions.

    .venv/bin/python benchmarks/bench_minhash.py [--repeat 3]

Docs/s is the best of `repeat` runs over the whole file (warm-up run excluded: datatrove loads spaCy,
tokenmill fills its code point class table).
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import sys
import tempfile
import time
import types
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pipelines.minhash import MinHashConfig, signatures  # noqa: E402

DATA = REPO.parent / "shared" / "corpora" / "dolma_fixtures" / "CC-MAIN-20190717121559-20190717143559-00140.jsonl.gz"


def load_docs() -> list[str]:
    if not DATA.is_file():
        sys.exit(f"benchmark data not found: {DATA} (the real corpora live in ../shared/corpora)")
    with gzip.open(DATA, "rt", encoding="utf-8") as f:
        return [json.loads(line)["text"] for line in f]


def import_datatrove_minhash():
    """datatrove.pipeline.dedup's __init__ imports its exact-substring step, which needs `tokenizers`
    (not a tokenmill dependency); the MinHash module itself does not, so load it without that __init__."""
    try:
        from datatrove.pipeline.dedup import minhash
    except ImportError:
        import datatrove.pipeline

        name = "datatrove.pipeline.dedup"
        pkg = types.ModuleType(name)
        pkg.__path__ = [os.path.join(datatrove.pipeline.__path__[0], "dedup")]
        sys.modules[name] = pkg
        from datatrove.pipeline.dedup import minhash
    return minhash


def datatrove_runner(hash_fc: str, out_dir: str) -> Callable[[list[str]], object]:
    dt = import_datatrove_minhash()
    from datatrove.utils.hashing import HashConfig

    cfg = dt.MinhashConfig(n_grams=5, num_buckets=14, hashes_per_bucket=8, seed=1,
                           hash_config=HashConfig(precision=64, hash_fc=hash_fc))
    step = dt.MinhashDedupSignature(output_folder=out_dir, config=cfg)
    if hash_fc == "xxhash":
        # datatrove 0.10.1 passes str to xxhash.xxh64_intdigest, which xxhash 4 rejects ("Strings must be
        # encoded before hashing"); hash the UTF-8 bytes, which is what older xxhash did with a str.
        import xxhash

        step._hash_func = lambda s: xxhash.xxh64_intdigest(s.encode("utf-8"))

    def run(docs: list[str]) -> list:
        sigs = []
        for text in docs:  # MinhashDedupSignature.run's per-document hashing, without the file writes
            shingles = step.get_shingles(text)
            if shingles.size != 0:
                sigs.append(step.get_signature(shingles))
        return sigs

    return run


def tokenmill_runner(batch: int) -> Callable[[list[str]], object]:
    cfg = MinHashConfig(ngram=5, bands=14, rows=8, seed=1)

    def run(docs: list[str]) -> list:
        return [signatures(docs[i : i + batch], cfg) for i in range(0, len(docs), batch)]

    return run


def best_seconds(run: Callable[[list[str]], object], docs: list[str], repeat: int) -> float:
    run(docs)  # warm-up
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        run(docs)
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    docs = load_docs()
    mb = sum(len(d.encode("utf-8")) for d in docs) / 1e6
    print(f"{len(docs)} docs, {mb:.2f} MB of UTF-8 text ({DATA.name}); best of {args.repeat}, 1 process\n")

    with tempfile.TemporaryDirectory() as tmp:
        rows = [
            ("datatrove 0.10.1 MinhashDedupSignature (sha1)", datatrove_runner("sha1", tmp)),
            ("datatrove 0.10.1 MinhashDedupSignature (xxhash64)", datatrove_runner("xxhash", tmp)),
            ("tokenmill signatures, batch 1", tokenmill_runner(1)),
            ("tokenmill signatures, batch 64", tokenmill_runner(64)),
            ("tokenmill signatures, batch 1024", tokenmill_runner(1024)),
        ]
        results = [(name, len(docs) / best_seconds(run, docs, args.repeat)) for name, run in rows]

    baseline = results[0][1]
    width = max(len(name) for name, _ in results)
    print(f"{'implementation':<{width}}  {'docs/s':>9}  {'MB/s':>6}  {'vs datatrove sha1':>17}")
    for name, rate in results:
        print(f"{name:<{width}}  {rate:>9.0f}  {rate * mb / len(docs):>6.2f}  {rate / baseline:>16.1f}x")


if __name__ == "__main__":
    main()
