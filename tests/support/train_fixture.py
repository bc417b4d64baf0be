"""Token shards of tinyshakespeare (one document per speech) and training-job configs for the training tests."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from pipelines.token_shards import build_token_manifest, write_token_manifest, write_token_shards
from pipelines.tokenizer import Tokenizer, TokenizerConfig, token_dtype, train_tokenizer

REPO = Path(__file__).resolve().parents[2]
VOCAB = 512


def build_shakespeare_shards(corpora: Path, out: Path, target_tokens: int = 150_000) -> dict:
    """SentencePiece (BPE 512) trained on tinyshakespeare, the text cut into speeches (blank-line separated),
    tokenized into shards + manifest exactly as the pipeline's tokenize stage lays them out."""
    text = (corpora / "tinyshakespeare" / "input.txt").read_text(encoding="utf-8")
    speeches = [s.strip() for s in text.split("\n\n") if s.strip()]
    ids = [f"tinyshakespeare/input.txt#{i}" for i in range(len(speeches))]  # the pipeline's id form: source/file#n
    tok_info = train_tokenizer(speeches, out / "tokenizer" / "tokenizer", TokenizerConfig(vocab_size=VOCAB))
    tok = Tokenizer(tok_info["model_path"])
    arrays = tok.encode_batch(speeches)
    dtype = token_dtype(tok_info["vocab_size"])
    shards_dir = out / "tokens"
    shards = write_token_shards(shards_dir, ids, arrays, target_tokens, tok.eos_id, dtype)
    source_digest = hashlib.sha256(text.encode()).hexdigest()
    manifest = build_token_manifest(shards, tok_info["sha256"], tok_info["vocab_size"], np.dtype(dtype).name, None,
                                    {"source": "tinyshakespeare/input.txt", "source_sha256": source_digest},
                                    eos_id=tok.eos_id)
    write_token_manifest(manifest, shards_dir / "manifest.json")
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
