"""Remote token shards read by byte ranges (pipelines/block_cache.py) against the local memmap, on moto's S3 server.

    .venv/bin/python benchmarks/bench_remote_shards.py [--tokens 24000000] [--seq-len 1024] [--batch 16]
        [--steps 60] [--cache-mb 8] [--json benchmarks/results/remote_shards.json]

One process, one rank, the same token set (random documents of 50-4,000 tokens, uint16, files of ~2M tokens)
read four ways over the same sample positions: local memmap; S3 by ranges without and with fetching ahead
(`data.prefetch_steps`); and S3 downloaded whole first (what remote shards cost before: time to the first batch
and the whole set on disk). Reported: the loader alone (rank_batch + advance) in tokens/s, a training step of
the tiny preset (forward, backward, AdamW) in tokens/s with local and with remote-prefetched data, the bytes
fetched per useful byte, and the cache's peak disk against the set's size.

moto runs on this machine and its Python server shares the CPU with the loader. A real object store answers a
request in 10-50 ms: the reads go through a loopback proxy that holds each request `--latency-ms` (default 20),
which is what fetching ahead on a thread pool hides and the no-prefetch row pays.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from model.config import ModelConfig  # noqa: E402
from model.data import TrainingData  # noqa: E402
from model.transformer import Decoder  # noqa: E402
from orchestration.config.schema import read_yaml  # noqa: E402
from pipelines import storage  # noqa: E402
from pipelines.block_cache import BlockCache  # noqa: E402
from pipelines.shard_reader import ShardSet  # noqa: E402
from tests.support.servers import TcpProxy, moto_s3  # noqa: E402
from tests.support.token_sets import write_token_set  # noqa: E402

VOCAB = 8000


def token_set(folder: Path, tokens: int) -> Path:
    rng = np.random.default_rng(0)
    shards, total, j = {}, 0, 0
    while total < tokens:
        docs = {}
        for i in range(400):
            n = int(rng.integers(50, 4000))
            docs[f"f{j}-d{i}"] = rng.integers(1, VOCAB, n).astype(np.uint16)
            total += n + 1
        shards[f"f{j:03d}"] = docs
        j += 1
    return write_token_set(folder, shards, target_tokens=2_000_000, eos_id=0, dtype="uint16",
                           tokenizer_sha256="0" * 64, vocab_size=VOCAB)


def loader_seconds(data: TrainingData, batch: int, steps: int, prefetch: int) -> float:
    start = time.perf_counter()
    for _ in range(steps):
        data.rank_batch(batch, 0, 1)
        data.prefetch(batch, 0, 1, prefetch)
        data.advance(batch)
    return time.perf_counter() - start


def train_seconds(data: TrainingData, model, opt, batch: int, steps: int, prefetch: int) -> float:
    start = time.perf_counter()
    for _ in range(steps):
        x, y = data.rank_batch(batch, 0, 1)
        data.prefetch(batch, 0, 1, prefetch)
        logits = model(x)
        loss = torch.nn.functional.cross_entropy(logits.view(-1, logits.size(-1)), y.view(-1))
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        data.advance(batch)
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tokens", type=int, default=24_000_000)
    ap.add_argument("--seq-len", type=int, default=1024)
    ap.add_argument("--batch", type=int, default=16, help="sequences per step")
    ap.add_argument("--steps", type=int, default=60, help="loader steps (default 60)")
    ap.add_argument("--train-steps", type=int, default=8, help="training steps (default 8)")
    ap.add_argument("--latency-ms", type=float, default=20.0)
    ap.add_argument("--cache-mb", type=int, default=8)
    ap.add_argument("--prefetch", type=int, default=2, help="steps fetched ahead (default 2)")
    ap.add_argument("--json")
    args = ap.parse_args()
    torch.set_num_threads(1)
    rows: dict = {"tokens": args.tokens, "latency_ms": args.latency_ms, "seq_len": args.seq_len, "batch": args.batch, "steps": args.steps,
                  "cache_mb": args.cache_mb, "prefetch_steps": args.prefetch}
    with tempfile.TemporaryDirectory() as tmp, moto_s3(Path(tmp), "bench", export_env=True) as s3:
        tmp = Path(tmp)
        os.environ["TOKENMILL_CACHE"] = str(tmp / "objects")  # the whole downloads, removed with the folder
        manifest = token_set(tmp / "tokens", args.tokens)
        set_bytes = sum(f.stat().st_size for f in (tmp / "tokens").glob("*.bin"))
        remote = storage.path("s3://bench/tokens")
        for f in sorted((tmp / "tokens").iterdir()):
            (remote / f.name).write_bytes(f.read_bytes())
        proxy = TcpProxy(int(s3["endpoint"].rsplit(":", 1)[1]), args.latency_ms).start()
        os.environ["AWS_ENDPOINT_URL"] = f"http://127.0.0.1:{proxy.port}"  # reads from here on pay the latency
        rows["set_mb"] = round(set_bytes / 2**20, 1)
        rows["files"] = len(list((tmp / "tokens").glob("*.bin")))

        def data_for(cache: BlockCache | None) -> TrainingData:
            src = manifest if cache is None else remote / "manifest.json"
            return TrainingData(ShardSet(src, verify=False, cache=cache), args.seq_len, seed=0, val_fraction=0.01)

        useful = args.steps * args.batch * (args.seq_len + 1) * 2
        table = []
        local = data_for(None)
        loader_seconds(local, args.batch, 5, 0)  # warm the page cache and the permutation
        local.position = 0
        t_local = loader_seconds(local, args.batch, args.steps, 0)
        table.append(("local memmap", t_local, None))
        for name, prefetch in (("S3 by ranges, no prefetch", 0), (f"S3 by ranges, prefetch {args.prefetch} steps", args.prefetch)):
            cache = BlockCache(tmp / f"blocks-{prefetch}", args.cache_mb << 20)
            t = loader_seconds(data_for(cache), args.batch, args.steps, prefetch)
            cache.drain()
            table.append((name, t, cache))
        start = time.perf_counter()  # before: every shard downloaded whole into the local cache, then mapped
        whole = TrainingData(ShardSet(remote / "manifest.json", verify=True), args.seq_len, seed=0, val_fraction=0.01)
        t_first = time.perf_counter() - start
        t_whole = loader_seconds(whole, args.batch, args.steps, 0)

        preset = read_yaml(REPO / "configs" / "model" / "tiny.yaml")
        cfg = ModelConfig.from_dict({**preset, "vocab_size": VOCAB, "max_seq_len": args.seq_len})
        results = {}
        for name, cache_mb in (("local", 0), ("s3", args.cache_mb)):
            torch.manual_seed(0)
            model = Decoder(cfg)
            opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
            cache = BlockCache(tmp / f"train-{name}", cache_mb << 20) if cache_mb else None
            data = data_for(cache)
            train_seconds(data, model, opt, args.batch, 2, args.prefetch)  # warm-up
            results[name] = train_seconds(data, model, opt, args.batch, args.train_steps, args.prefetch)
            if cache:  # misses and waits: steps that waited for the network despite fetching ahead
                cache.close()
                results["s3_cache"] = dict(cache.stats)
        proxy.stop()

    tok = args.steps * args.batch * args.seq_len
    train_tok = args.train_steps * args.batch * args.seq_len
    print(f"{rows['set_mb']} MB of uint16 tokens in {rows['files']} files; {args.steps} steps "
          f"of {args.batch} x {args.seq_len} tokens; block cache {args.cache_mb} MB; moto S3 on loopback, "
          f"{args.latency_ms:g} ms per request\n")
    print("| loader | seconds | tokens/s | vs local | fetched / useful bytes | cache peak MB | misses | waits |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, t, cache in table:
        fetched = cache.stats["fetched_bytes"] / useful if cache else 0
        print(f"| {name} | {t:.2f} | {tok / t:,.0f} | {t_local / t:.2f} | {fetched:.1f} | "
              f"{cache.peak_bytes / 2**20 if cache else 0:.1f} | {cache.stats['missed'] if cache else 0} | "
              f"{cache.stats['waited'] if cache else 0} |")
        rows[name] = {"seconds": round(t, 3), "tokens_per_s": round(tok / t), "vs_local": round(t_local / t, 3),
                      **({"fetched_over_useful": round(fetched, 2), "cache_peak_mb": round(cache.peak_bytes / 2**20, 2),
                          **cache.stats} if cache else {})}
    print(f"| S3 downloaded whole (before) | {t_whole:.2f} + {t_first:.2f} to the first batch | {tok / t_whole:,.0f} | "
          f"{t_local / t_whole:.2f} | 1.0 (all of it) | {rows['set_mb']} (the whole set) | - | - |")
    rows["whole_download"] = {"first_batch_s": round(t_first, 3), "seconds": round(t_whole, 3), "disk_mb": rows["set_mb"]}
    print(f"\ntraining step (tiny preset, 1 thread, {args.train_steps} steps): local {train_tok / results['local']:,.0f} "
          f"tokens/s, S3 by ranges with prefetch {train_tok / results['s3']:,.0f} tokens/s: "
          f"{results['local'] / results['s3']:.3f} of local (block misses {results['s3_cache']['missed']}, waits "
          f"{results['s3_cache']['waited']}, hits {results['s3_cache']['hits']})")
    rows["train"] = {"local_tokens_per_s": round(train_tok / results["local"]),
                     "s3_tokens_per_s": round(train_tok / results["s3"]),
                     "s3_over_local": round(results["local"] / results["s3"], 3), "s3_cache": results["s3_cache"]}
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
