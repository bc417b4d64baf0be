"""Tokenizer training as a pipeline stage: a deterministic sample of the kept corpus (the documents with
the smallest hash of (seed, id), chosen per block then globally) trains SentencePiece in one Ray task."""

from __future__ import annotations

import time
from pathlib import Path

import mlflow
import pyarrow as pa
import ray

from orchestration import tracking
from orchestration.pipeline_config import RayConfig, TokenizerStageConfig
from orchestration.stage_output import read_stage
from orchestration.stage_runner import StageResult
from pipelines.manifest import mlflow_digest
from pipelines.tokenizer import Tokenizer, TokenizerConfig, sample_key, train_tokenizer

TOKENIZER_SHA_TAG = "tokenmill.tokenizer_sha256"


def _smallest_keys(batch: pa.Table, n: int, seed: int) -> pa.Table:
    ids = batch.column("id").to_pylist()
    keys = [sample_key(i, seed) for i in ids]
    order = sorted(range(len(keys)), key=lambda k: (keys[k], ids[k]))[:n]
    return pa.table({"id": batch.column("id").take(order), "key": pa.array([keys[k] for k in order], pa.uint64())})


def _only(batch: pa.Table, ids: frozenset) -> pa.Table:
    mask = pa.array([i in ids for i in batch.column("id").to_pylist()])
    return batch.filter(mask).select(["id", "text"])


@ray.remote
def _train(refs: list, out_prefix: str, cfg: TokenizerConfig, order: list[str]) -> dict:
    tables = [t for t in ray.get(refs) if t.num_rows]
    table = pa.concat_tables(tables) if tables else pa.table({"id": [], "text": []})
    by_id = dict(zip(table.column("id").to_pylist(), table.column("text").to_pylist()))
    return train_tokenizer((by_id[i] for i in order), Path(out_prefix), cfg)


def run(prev: StageResult, cfg: TokenizerStageConfig, ray_cfg: RayConfig, workdir: Path) -> dict:
    out_dir = workdir / "tokenizer"
    out_dir.mkdir(parents=True, exist_ok=True)
    tok_cfg = TokenizerConfig(vocab_size=cfg.vocab_size, sample_docs=cfg.sample_docs, seed=cfg.seed,
                              character_coverage=cfg.character_coverage)
    with tracking.stage_run("tokenizer", {**tok_cfg.__dict__, "model_path": cfg.model_path}) as run:
        start = time.perf_counter()
        tracking.log_input_manifest(prev.stage, prev.manifest_path, prev.manifest["digest"])
        if cfg.model_path:  # a given tokenizer: recorded, not trained
            tok = Tokenizer(cfg.model_path)
            info = {"model_path": str(Path(cfg.model_path).resolve()), "sha256": tok.sha256, "vocab_size": tok.vocab_size}
        else:
            docs = read_stage(prev.kept_files, ray_cfg.read_block_docs)
            firsts = docs.map_batches(_smallest_keys, batch_format="pyarrow",
                                      fn_kwargs={"n": cfg.sample_docs, "seed": cfg.seed}).take_all()
            # n smallest keys of the union are among each block's n smallest: the sample is partition-free
            chosen = sorted(((r["key"], r["id"]) for r in firsts))[: cfg.sample_docs]
            order = [i for _, i in chosen]
            sample = docs.map_batches(_only, batch_format="pyarrow", fn_kwargs={"ids": frozenset(order)})
            info = ray.get(_train.remote(sample.to_arrow_refs(), str(out_dir / "tokenizer"), tok_cfg, order))
            mlflow.log_metric("sample_docs", len(order))
            mlflow.log_artifact(info["model_path"], "tokenizer")
            mlflow.log_artifact(info["vocab_path"], "tokenizer")
        mlflow.log_metrics({"vocab_size": info["vocab_size"], "wall_seconds": time.perf_counter() - start})
        mlflow.set_tags({TOKENIZER_SHA_TAG: info["sha256"], tracking.OUTPUT_DIGEST_TAG: mlflow_digest(info["sha256"]),
                         tracking.OUTPUT_SHA256_TAG: info["sha256"]})
        return {**info, "run_id": run.info.run_id}
