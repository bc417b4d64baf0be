"""Token shards of tinyshakespeare (one document per speech) and training-job configs for the training tests."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from pipelines.tokenizer import Tokenizer, TokenizerConfig, token_dtype, train_tokenizer
from token_sets import write_token_set

VOCAB = 512


def build_shakespeare_shards(corpora: Path, out: Path, target_tokens: int = 150_000) -> dict:
    """SentencePiece (BPE 512) trained on tinyshakespeare, the text cut into speeches (blank-line separated),
    tokenized into shards + manifest by the pipeline's own writer (`TokenShardWriter`, `number_token_files`)."""
    text = (corpora / "tinyshakespeare" / "input.txt").read_text(encoding="utf-8")
    speeches = [s.strip() for s in text.split("\n\n") if s.strip()]
    ids = [f"tinyshakespeare/input.txt#{i}" for i in range(len(speeches))]  # the pipeline's id form: source/file#n
    tok_info = train_tokenizer(speeches, out / "tokenizer" / "tokenizer", TokenizerConfig(vocab_size=VOCAB))
    tok = Tokenizer(tok_info["model_path"])
    arrays = tok.encode_batch(speeches)
    dtype = token_dtype(tok_info["vocab_size"])
    shards_dir = out / "tokens"
    # one input shard per 2,000 speeches, as ingest would cut the file (names sort in speech order)
    shards = {f"tinyshakespeare/input.txt/{k // 2000:05d}": {} for k in range(0, len(ids), 2000)}
    for k, (doc_id, a) in enumerate(zip(ids, arrays)):
        shards[f"tinyshakespeare/input.txt/{k // 2000:05d}"][doc_id] = a
    source_digest = hashlib.sha256(text.encode()).hexdigest()
    manifest_path = write_token_set(shards_dir, shards, target_tokens=target_tokens, eos_id=tok.eos_id, dtype=dtype,
                                    tokenizer_sha256=tok_info["sha256"], vocab_size=tok_info["vocab_size"],
                                    extra={"source": "tinyshakespeare/input.txt", "source_sha256": source_digest})
    manifest = json.loads(manifest_path.read_text())
    return {"manifest": shards_dir / "manifest.json", "tokenizer": Path(tok_info["model_path"]),
            "documents": len(ids), "tokens": manifest["totals"]["tokens"]}


def train_job(name: str, shards: dict, steps: int, **sections) -> dict:
    """A tiny-model job on the shakespeare shards (raw dict; the tests add what they vary)."""
    job = {
        "name": name,
        "data": {"manifest": str(shards["manifest"]), "tokenizer": str(shards["tokenizer"]), "seq_len": 64,
                 "val_fraction": 0.05, "seed": 0},
        "model": {"preset": "../model/tiny.yaml"},
        "optim": {"lr": 3.0e-3, "warmup_steps": 5, "min_lr_ratio": 0.1},
        "train": {"steps": steps, "global_batch_tokens": 2048, "log_every": 1, "eval_every": 20, "eval_windows": 64},
        "checkpoint": {"every": 20, "keep": 2},
        "ray": {"num_workers": 2, "cpus_per_worker": 1, "max_failures": 1},
        "sample": {"prompts": ["ROMEO:"], "max_new_tokens": 24},
        "mlflow_experiment": "tokenmill-test-train",
    }
    for key, value in sections.items():
        job[key] = {**job.get(key, {}), **value} if isinstance(value, dict) else value
    return job
