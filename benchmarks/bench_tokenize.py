"""Tokenization throughput per core on Gutenberg books: SentencePiece's own encode loop vs tokenmill's
Tokenizer.encode_batch (+ TokenShardWriter), single process, one thread, same model, same books.

    .venv/bin/python benchmarks/bench_tokenize.py [--max-mb 1000] [--vocab 8000] [--repeat 1]

MB are UTF-8 megabytes (10**6 bytes) of text in. The time is the best of `repeat` rounds; each round
runs every method once (after one untimed warm-up run of the SentencePiece loop), so a busy moment on
a shared machine hits all methods alike. The tokenizer is trained first on a sample of the books
(not timed). Every method's ids are checked equal to SentencePiece's whole-document ids.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pipelines.token_shards import TokenShardWriter  # noqa: E402
from pipelines.tokenizer import Tokenizer, TokenizerConfig, sample_key, train_tokenizer  # noqa: E402

GUTENBERG = REPO.parent / "shared" / "corpora" / "gutenberg"


def load_books(max_mb: float) -> dict[str, str]:
    if not GUTENBERG.is_dir():
        sys.exit(f"benchmark data not found: {GUTENBERG} (the real corpora live in ../shared/corpora)")
    paths = sorted(GUTENBERG.glob("*.txt")) + sorted((GUTENBERG / "books").glob("*.txt"))
    books, size = {}, 0
    for p in paths:
        if size >= max_mb * 1e6:
            break
        text = p.read_text(encoding="utf-8", errors="replace")
        books[p.relative_to(GUTENBERG).as_posix()] = text
        size += len(text.encode("utf-8"))
    return books


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--max-mb", type=float, default=1000.0, help="stop adding books past this many MB (default: all, about 61 MB)")
    ap.add_argument("--vocab", type=int, default=8000)
    ap.add_argument("--repeat", type=int, default=1)
    args = ap.parse_args()

    books = load_books(args.max_mb)
    ids = sorted(books)
    texts = [books[i] for i in ids]
    mb = sum(len(t.encode("utf-8")) for t in texts) / 1e6

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        cfg = TokenizerConfig(vocab_size=args.vocab)
        t0 = time.perf_counter()
        sample = sorted(range(len(ids)), key=lambda k: sample_key(ids[k], 0))[:8]  # the tokenize stage's sample rule
        info = train_tokenizer([texts[k] for k in sample], tmp / "tok", cfg)
        train_s = time.perf_counter() - t0
        tok = Tokenizer(info["model_path"])
        sp = tok.processor
        print(f"{len(texts)} books, {mb:.1f} MB; BPE vocab {tok.vocab_size} trained on 8 books in {train_s:.1f} s")

        def sp_loop():
            return [sp.encode(t, out_type=int) for t in texts]

        def sp_batch():
            return sp.encode(texts, out_type=int, num_threads=1)

        def ours():
            return tok.encode_batch(texts, num_threads=1)

        def ours_and_write():
            arrays = tok.encode_batch(texts, num_threads=1)
            writer = TokenShardWriter(tmp / "shards", "books", 50_000_000, tok.eos_id, tok.dtype)
            writer.add(ids, arrays)
            return writer.close(), arrays

        methods = [("sentencepiece encode(text) loop", sp_loop), ("sentencepiece encode(list) batch", sp_batch),
                   ("tokenmill encode_batch", ours), ("tokenmill encode_batch + TokenShardWriter", ours_and_write)]
        reference = [np.asarray(r, dtype=np.int64) for r in sp_loop()]  # warm-up, and the ids to match
        n_tokens = sum(len(r) for r in reference)
        best = {name: float("inf") for name, _ in methods}
        for _ in range(args.repeat):  # rounds interleave the methods, so a busy moment hits all of them
            for name, fn in methods:
                t0 = time.perf_counter()
                out = fn()
                best[name] = min(best[name], time.perf_counter() - t0)
                arrays = out[1] if isinstance(out, tuple) else out
                assert all(np.array_equal(np.asarray(a, dtype=np.int64), r) for a, r in zip(arrays, reference)), \
                    f"{name}: ids differ from sentencepiece's"
                del out, arrays
        base_s = best[methods[0][0]]
        rows = [(name, best[name]) for name, _ in methods]
        shard_bytes = sum(p.stat().st_size for p in (tmp / "shards").glob("*.bin"))

    print(f"{n_tokens:,} tokens ({mb * 1e6 / n_tokens:.2f} bytes/token); shards {shard_bytes / 1e6:.1f} MB; 1 thread\n")
    print(f"| {'method':<44} | {'seconds':>7} | {'MB/s':>6} | {'Mtok/s':>6} | {'ratio':>5} |")
    print(f"|{'-' * 46}|{'-' * 9}|{'-' * 8}|{'-' * 8}|{'-' * 7}|")
    for name, s in rows:
        print(f"| {name:<44} | {s:7.2f} | {mb / s:6.2f} | {n_tokens / s / 1e6:6.2f} | {base_s / s:5.2f} |")


if __name__ == "__main__":
    main()
