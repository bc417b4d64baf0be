"""`tokenmill generate`: text from an export folder or straight from a sharded Ray Train checkpoint."""

from __future__ import annotations

from pathlib import Path

from model.checkpoint import STATE_FILE, load_unsharded
from model.export import TOKENIZER, WEIGHTS, load_export
from model.transformer import Decoder
from pipelines import storage
from pipelines.errors import UsageError
from pipelines.hashing import sha256_file
from pipelines.tokenizer import Tokenizer


def load_for_sampling(checkpoint: str | Path, tokenizer: str | None = None) -> tuple[Decoder, Tokenizer]:
    path = storage.local_copy(checkpoint)  # an export or checkpoint on object storage: read through the cache
    if (path / WEIGHTS).is_file():
        model, meta = load_export(path)
        tok_path = tokenizer or path / TOKENIZER
    elif (path / STATE_FILE).is_file() and (path / ".metadata").is_file():
        model, meta = load_unsharded(path)
        tok_path = tokenizer or meta.get("tokenizer")
    else:
        raise FileNotFoundError(f"{path}: neither a model export ({WEIGHTS}) nor a Ray Train checkpoint "
                                f"({STATE_FILE} + DCP .metadata)")
    if not tok_path or not storage.path(tok_path).is_file():
        raise FileNotFoundError(f"tokenizer {tok_path}: not found (pass --tokenizer)")
    expected = meta.get("tokenizer_sha256")
    if expected and sha256_file(tok_path) != expected:
        raise UsageError(f"tokenizer {tok_path} is not the one the model was trained with (sha256 {expected[:12]}...): "
                         "leave out --tokenizer to use the model's own")
    return model, Tokenizer(tok_path)
