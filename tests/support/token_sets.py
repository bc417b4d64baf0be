"""Token shards of in-memory documents, written the way the tokenize stage writes them (one writer)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from pipelines.token_shards import TokenShardWriter, build_token_manifest, number_token_files, write_token_manifest

BATCH = 64  # documents per TokenShardWriter.add call, as a pipeline batch would be


def write_token_set(out_dir: Path, shards: Mapping[str, Mapping[str, np.ndarray]], *, target_tokens: int,
                    eos_id: int, dtype, tokenizer_sha256: str, vocab_size: int, extra: dict | None = None,
                    run_id: str | None = None) -> Path:
    """`shards`: input shard name -> {doc id: tokens}, documents in arrival order. Each input shard goes through
    its own `TokenShardWriter` (as one pipeline task does), the files are numbered by `number_token_files` and
    the manifest is `build_token_manifest`'s, written to out_dir/manifest.json (returned)."""
    out_dir = Path(out_dir)
    files = {}
    for name, docs in shards.items():
        writer = TokenShardWriter(out_dir, name, target_tokens, eos_id, dtype)
        ids = list(docs)
        for i in range(0, len(ids), BATCH):
            writer.add(ids[i:i + BATCH], [docs[d] for d in ids[i:i + BATCH]])
        files[name] = writer.close()
    manifest = build_token_manifest(number_token_files(files), tokenizer_sha256, vocab_size, np.dtype(dtype).name,
                                    run_id, extra or {}, eos_id=eos_id)
    write_token_manifest(manifest, out_dir / "manifest.json")
    return out_dir / "manifest.json"
