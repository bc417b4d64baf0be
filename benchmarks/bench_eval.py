"""Evaluation throughput: `model.evaluate.score` on an evaluation suite against a plain forward pass over the same
padded batches (the floor: what the model alone costs), one process, same model, same requests.

    .venv/bin/python benchmarks/bench_eval.py [--suite configs/eval/core.yaml] [--preset tiny] [--vocab 8000]
        [--max-items 100] [--threads 1] [--json benchmarks/results/eval.json]

The model is the preset's shape with random weights (scores do not matter here, their cost does) and a
SentencePiece tokenizer trained on Gutenberg books. Reported: requests and items per second, UTF-8 bytes of the
scored text per second, tokens per second, and the ratio of the plain forward pass's time to the evaluation's
(1.0 would mean scoring costs nothing beyond the model).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from model.config import ModelConfig  # noqa: E402
from model.evaluate import Request, _batches, score  # noqa: E402
from model.transformer import Decoder  # noqa: E402
from orchestration.config.schema import read_yaml  # noqa: E402
from orchestration.evaluation.run import load_suite  # noqa: E402
from pipelines.evalsets import prepare_suite  # noqa: E402
from pipelines.tokenizer import Tokenizer, TokenizerConfig, sample_key, train_tokenizer  # noqa: E402

GUTENBERG = REPO.parent / "shared" / "corpora" / "gutenberg"


def plain_forward(model, requests: list[Request], seq_len: int, batch_size: int) -> float:
    """Seconds of model(inputs) alone over the same batches `score` forms."""
    start = time.perf_counter()
    with torch.no_grad():
        for idx in _batches(requests, batch_size):
            seqs = [(requests[i].context + requests[i].continuation)[-(seq_len + 1):] for i in idx]
            width = max(len(s) for s in seqs) - 1
            inputs = torch.zeros(len(seqs), width, dtype=torch.long)
            for row, s in enumerate(seqs):
                inputs[row, :len(s) - 1] = torch.tensor(s[:-1])
            model(inputs)
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--suite", default=str(REPO / "configs" / "eval" / "core.yaml"))
    ap.add_argument("--preset", default="tiny", help="configs/model/<preset>.yaml (default tiny)")
    ap.add_argument("--vocab", type=int, default=8000)
    ap.add_argument("--max-items", type=int, default=100, help="items per task (default 100)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if not GUTENBERG.is_dir():
        sys.exit(f"benchmark data not found: {GUTENBERG} (the real corpora live in ../shared/corpora)")

    suite = load_suite(args.suite)
    suite = dataclasses.replace(suite, tasks=[dataclasses.replace(t, max_items=args.max_items) for t in suite.tasks])
    with tempfile.TemporaryDirectory() as tmp:
        books = sorted(GUTENBERG.glob("*.txt"), key=lambda p: sample_key(p.name, 0))[:6]
        info = train_tokenizer([b.read_text(encoding="utf-8") for b in books], Path(tmp) / "tok",
                               TokenizerConfig(vocab_size=args.vocab))
        tok = Tokenizer(info["model_path"])
    preset = read_yaml(REPO / "configs" / "model" / f"{args.preset}.yaml")
    cfg = ModelConfig.from_dict({**preset, "vocab_size": tok.vocab_size})
    torch.manual_seed(0)
    model = Decoder(cfg).eval()
    seq_len = suite.seq_len or cfg.max_seq_len
    prepared = prepare_suite(suite, tok, seq_len)
    requests = [Request(*r) for r in prepared.requests]
    items = sum(len(s.items) + len(s.docs) for s in prepared.sets)
    scored_bytes = sum(b for s in prepared.sets for *_, b in s.docs) + sum(it[3] for s in prepared.sets for it in s.items)
    tokens = sum(len(r.continuation) for r in requests)
    fed = sum(min(len(r.context) + len(r.continuation), seq_len + 1) - 1 for r in requests)

    plain_forward(model, requests[:64], seq_len, suite.batch_size)  # warm-up
    t_plain = plain_forward(model, requests, seq_len, suite.batch_size)
    start = time.perf_counter()
    score(model, requests, seq_len, suite.batch_size)
    t_eval = time.perf_counter() - start

    rows = {"preset": args.preset, "params_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 2),
            "vocab": tok.vocab_size, "seq_len": seq_len, "batch_size": suite.batch_size, "threads": args.threads,
            "requests": len(requests), "items": items, "scored_bytes": scored_bytes, "scored_tokens": tokens,
            "tokens_fed": fed, "eval_seconds": round(t_eval, 3), "forward_seconds": round(t_plain, 3),
            "requests_per_s": round(len(requests) / t_eval, 1), "items_per_s": round(items / t_eval, 1),
            "bytes_per_s": round(scored_bytes / t_eval, 1), "forward_over_eval": round(t_plain / t_eval, 3)}
    print(f"suite {suite.name!r}: {len(requests):,} requests ({items:,} items and documents), {scored_bytes:,} bytes "
          f"scored, {fed:,} tokens fed; model {args.preset} {rows['params_m']}M, vocabulary {tok.vocab_size}, "
          f"{args.threads} thread(s)\n")
    print("| method | seconds | requests/s | items/s | scored bytes/s | ratio |")
    print("|---|---:|---:|---:|---:|---:|")
    print(f"| plain forward pass (the floor) | {t_plain:.2f} | {len(requests) / t_plain:,.1f} | {items / t_plain:,.1f} "
          f"| {scored_bytes / t_plain:,.0f} | 1.00 |")
    print(f"| tokenmill score (log-softmax, gather, greedy) | {t_eval:.2f} | {rows['requests_per_s']:,.1f} | "
          f"{rows['items_per_s']:,.1f} | {rows['bytes_per_s']:,.0f} | {t_plain / t_eval:.2f} |")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
