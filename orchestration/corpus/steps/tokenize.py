"""The tokenizer the tokenize stage encodes with: a given SentencePiece model, or one trained on the global
sample (the smallest sample keys of all shards' local samples) read back from the shards that hold it."""

from __future__ import annotations

import heapq

import ray

from orchestration.corpus.passes import peak_rss_mb, reset_peak_rss
from orchestration.corpus.steps import StepContext, cached, key_files, step
from pipelines import storage
from pipelines.hashing import canonical_sha256, sha256_file
from pipelines.stage_files import read_parquet, read_shard
from pipelines.stages.tokenize import TokenizeStage
from pipelines.tokenizer import Tokenizer, TokenizerConfig, train_tokenizer


@ray.remote(num_cpus=1, max_retries=3)
def _sample(files: list[str], root: str, n: int) -> list[tuple[int, str, str]]:
    """The n smallest (sample key, id, shard) over every shard's candidates (each shard's n smallest: the
    global n smallest are among them), reading one file at a time: memory is n rows."""
    heap: list[tuple[int, str, str]] = []  # negated keys: a max-heap of the n smallest
    for f in files:
        t = read_parquet(storage.path(root) / f, ["key", "id", "shard"])
        for k, i, s in zip(t.column("key").to_pylist(), t.column("id").to_pylist(), t.column("shard").to_pylist()):
            item = (-k, i, s)
            if len(heap) < n:
                heapq.heappush(heap, item)
            elif item > heap[0]:
                heapq.heapreplace(heap, item)
    return sorted((-k, i, s) for k, i, s in heap)


@ray.remote(num_cpus=1, max_retries=1, max_calls=1)
def _train_tokenizer(root: str, files: dict[str, list[str]], order: list[str], out_prefix: str,
                     cfg: TokenizerConfig) -> dict:
    reset_peak_rss()
    by_id: dict[str, str] = {}
    for path, ids in files.items():
        wanted = set(ids)
        for t in read_shard(storage.path(root) / path, 1000):
            for i, text in zip(t.column("id").to_pylist(), t.column("text").to_pylist()):
                if i in wanted:
                    by_id[i] = text
    return {**train_tokenizer((by_id[i] for i in order), storage.path(out_prefix), cfg), "peak_rss_mb": round(peak_rss_mb(), 1)}


def tokenizer(workdir: storage.StoragePath, results: list[dict], cfg, name: str = "tokenize") -> dict:
    """cfg: TokenizerStageConfig. The sample: the `sample_docs` smallest sample keys over all shards."""
    if cfg.model_path:
        tok = Tokenizer(cfg.model_path)
        return {"model_path": str(storage.path(cfg.model_path).resolve()), "sha256": tok.sha256, "vocab_size": tok.vocab_size,
                "trained": False, "sample_docs": 0, "decides": {"sha256": tok.sha256, "vocab_size": tok.vocab_size},
                "skipped": True}  # given: nothing to train
    docs_file = {r["shard"]: r["docs_file"]["path"] for task in results for r in task["shards"] if r["docs_file"]}
    files = [f for fs in key_files(results, name).values() for f in fs]
    chosen = ray.get(_sample.remote(files, str(workdir), cfg.sample_docs))
    order = [i for _, i, _ in chosen]
    if not order:
        raise ValueError("tokenizer: no document survived the stages before it, so there is nothing to train "
                         "the tokenizer on (see the stage counts above; or give tokenizer.model_path)")
    tok_cfg = cfg.training()
    by_file: dict[str, list[str]] = {}
    for _, i, shard in chosen:
        by_file.setdefault(docs_file[shard], []).append(i)
    stamps = {"cfg": tok_cfg.__dict__, "sample": canonical_sha256(order),
              "files": {f: sha256_file(workdir / f) for f in sorted(by_file)}}

    def run() -> dict:
        info = ray.get(_train_tokenizer.remote(str(workdir), by_file, order, str(workdir / "tokenizer" / "tokenizer"),
                                               tok_cfg))
        return {**info, "files": [info["model_path"]], "trained": True, "sample_docs": len(order),
                "decides": {"sha256": info["sha256"], "vocab_size": info["vocab_size"]}}  # the tokenize pass's key

    return cached(workdir, "tokenizer", stamps, run)




@step(TokenizeStage)
def _step(stage: TokenizeStage, ctx: StepContext) -> dict:
    return {**tokenizer(ctx.workdir, ctx.results, stage.tokenizer_cfg, stage.name), "out_dir": str(ctx.workdir / "tokens")}
