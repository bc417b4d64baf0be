"""Tokenization on Ray Data: actors encode batches with SentencePiece; documents are hash-partitioned by
id into shards (count chosen from the total tokens and the target), each written sorted by id, so the
shards and manifest are byte-identical whatever the number of workers or blocks."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import mlflow
import numpy as np
import pyarrow as pa
import ray

from orchestration import plots, tracking
from orchestration.pipeline_config import RayConfig, TokenizeConfig
from orchestration.stage_output import read_stage
from orchestration.stage_runner import StageResult
from orchestration.stages.filter import actor_cpus
from pipelines.stage_files import shard_of
from pipelines.token_shards import build_token_manifest, write_token_manifest, write_token_shard
from pipelines.tokenizer import Tokenizer

TOKENS_PER_DOC_BINS = np.array([0] + [2**k for k in range(2, 24)], dtype=np.int64)


class EncodeActor:
    def __init__(self, model_path: str):
        self.tok = Tokenizer(model_path)

    def __call__(self, batch: pa.Table) -> pa.Table:
        arrays = self.tok.encode_batch(batch.column("text").to_pylist())
        dt = self.tok.dtype.newbyteorder("<")
        return pa.table({
            "id": batch.column("id"),
            "n_tokens": pa.array([a.size for a in arrays], pa.int64()),
            "tokens": pa.array([np.asarray(a, dtype=dt).tobytes() for a in arrays], pa.binary()),
            "text_bytes": pa.array([len(t.encode("utf-8")) for t in batch.column("text").to_pylist()], pa.int64()),
        })


def _add_shard(batch: pa.Table, shards: int) -> pa.Table:
    return batch.append_column("_shard", pa.array(shard_of(batch.column("id").to_pylist(), shards)))


def _write(group: pa.Table, out_dir: str, eos_id: int, dtype: str) -> pa.Table:
    shard = int(group.column("_shard")[0].as_py())
    dt = np.dtype(dtype).newbyteorder("<")
    arrays = [np.frombuffer(b, dtype=dt) for b in group.column("tokens").to_pylist()]
    entry = write_token_shard(Path(out_dir), shard, group.column("id").to_pylist(), arrays, eos_id, dtype)
    return pa.table({"entry": [json.dumps(entry)]})


def _per_doc_hist(batch: pa.Table) -> dict:
    n = batch.column("n_tokens").to_numpy() + 1
    idx = np.searchsorted(TOKENS_PER_DOC_BINS, n, side="right") - 1
    return {"hist": [np.bincount(idx, minlength=len(TOKENS_PER_DOC_BINS))]}


def run(prev: StageResult, tokenizer: dict, cfg: TokenizeConfig, ray_cfg: RayConfig, workdir: Path) -> dict:
    out_dir = workdir / "tokens"
    if out_dir.exists():
        import shutil

        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True)
    tok = Tokenizer(tokenizer["model_path"])
    with tracking.stage_run("tokenize", {"target_shard_tokens": cfg.target_shard_tokens,
                                         "tokenizer_sha256": tok.sha256, "dtype": tok.dtype.name}) as run:
        start = time.perf_counter()
        tracking.log_input_manifest(prev.stage, prev.manifest_path, prev.manifest["digest"])
        tracking.log_raw_input("tokenizer", tokenizer["model_path"], tok.sha256)
        encoded = read_stage(prev.kept_files, ray_cfg.read_block_docs).map_batches(
            EncodeActor, fn_constructor_kwargs={"model_path": tokenizer["model_path"]},
            batch_size=ray_cfg.batch_size, batch_format="pyarrow",
            compute=ray.data.ActorPoolStrategy(size=ray_cfg.actors), num_cpus=actor_cpus(ray_cfg),
        ).materialize()
        docs = encoded.count()
        total = (encoded.sum("n_tokens") or 0) + docs  # + one eos per document
        text_bytes = encoded.sum("text_bytes") or 0
        shards = max(1, math.ceil(total / cfg.target_shard_tokens))
        entries = []
        if docs:
            written = encoded.map_batches(_add_shard, batch_format="pyarrow", fn_kwargs={"shards": shards}).groupby(
                "_shard", num_partitions=shards).map_groups(
                _write, batch_format="pyarrow",
                fn_kwargs={"out_dir": str(out_dir), "eos_id": tok.eos_id, "dtype": tok.dtype.name})
            entries = [json.loads(r["entry"]) for r in written.take_all()]
        # hash partitioning can leave a shard empty on tiny inputs: number the written ones 0..k-1
        entries = _renumber(sorted(entries, key=lambda e: e["shard"]), out_dir)
        manifest = build_token_manifest(
            entries, tok.sha256, tok.vocab_size, tok.dtype.name, run.info.run_id,
            {"input_stage": prev.stage, "input_digest": prev.manifest["digest"]},
            eos_id=tok.eos_id,
        )
        manifest_path = out_dir / "manifest.json"
        write_token_manifest(manifest, manifest_path)
        seconds = time.perf_counter() - start
        rows = encoded.map_batches(_per_doc_hist, batch_format="pyarrow").take_all()
        hist = np.sum([r["hist"] for r in rows], axis=0) if rows else np.zeros(len(TOKENS_PER_DOC_BINS))
        mlflow.log_metrics({"documents": docs, "tokens": total, "shards": len(entries), "wall_seconds": seconds,
                            "tokens_per_second": total / seconds, "mb_per_second": text_bytes / 1e6 / seconds,
                            "tokens_per_document": total / max(docs, 1)})
        tracking.log_output_manifest(manifest_path, manifest["digest"])
        fig = plots.binned_bar("tokenize: tokens per document (incl. eos)", "tokens (log2 bins)",
                               np.log2(np.maximum(np.append(TOKENS_PER_DOC_BINS, 2**24), 1)), hist)
        mlflow.log_figure(fig, "plots/tokens_per_document.png")
        plots.close(fig)
        return {"manifest_path": str(manifest_path), "digest": manifest["digest"], "tokens": total,
                "documents": docs, "shards": len(entries), "seconds": seconds, "run_id": run.info.run_id,
                "tokens_per_second": total / seconds, "mb_per_second": text_bytes / 1e6 / seconds}


def _renumber(entries: list[dict], out_dir: Path) -> list[dict]:
    from pipelines.token_shards import shard_file_names

    out = []
    for k, e in enumerate(entries):
        if e["shard"] != k:
            bin_name, idx_name = shard_file_names(k)
            (out_dir / e["path"]).rename(out_dir / bin_name)
            (out_dir / e["index_path"]).rename(out_dir / idx_name)
            e = {**e, "shard": k, "path": bin_name, "index_path": idx_name}
        out.append(e)
    return out
