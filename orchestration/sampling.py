"""`tokenmill generate`: text from an export folder or straight from a sharded Ray Train checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

from pipelines import storage

import torch

from model.config import ModelConfig
from model.export import TOKENIZER, WEIGHTS, load_export
from model.generate import generate
from model.transformer import Decoder
from pipelines.stage_files import sha256_file
from pipelines.tokenizer import Tokenizer

STATE_FILE = "trainer_state.json"  # written by orchestration.train_worker beside the DCP shards


def load_dcp_checkpoint(path: Path) -> tuple[Decoder, dict]:
    """The model of a DCP checkpoint, loaded in this one process (DCP reads every rank's shard)."""
    import torch.distributed.checkpoint as dcp

    meta = json.loads((path / STATE_FILE).read_text())
    model = Decoder(ModelConfig.from_dict(meta["model"]))
    saved = dcp.FileSystemReader(str(path)).read_metadata().state_dict_metadata
    state = {k: v for k, v in model.state_dict().items() if f"model.{k}" in saved}
    dcp.load({"model": state}, checkpoint_id=str(path))
    model.load_state_dict(state, strict=False)  # copies in place: a tied output projection stays tied
    return model.eval(), meta


def load_for_sampling(checkpoint: str | Path, tokenizer: str | None = None) -> tuple[Decoder, Tokenizer]:
    path = storage.local_copy(checkpoint)  # an export or checkpoint on object storage: read through the cache
    if (path / WEIGHTS).is_file():
        model, meta = load_export(path)
        tok_path = tokenizer or path / TOKENIZER
    elif (path / STATE_FILE).is_file() and (path / ".metadata").is_file():
        model, meta = load_dcp_checkpoint(path)
        tok_path = tokenizer or meta.get("tokenizer")
    else:
        raise FileNotFoundError(f"{path}: neither a model export ({WEIGHTS}) nor a Ray Train checkpoint "
                                f"({STATE_FILE} + DCP .metadata)")
    if not tok_path or not storage.path(tok_path).is_file():
        raise FileNotFoundError(f"tokenizer {tok_path}: not found (pass --tokenizer)")
    expected = meta.get("tokenizer_sha256")
    if expected and sha256_file(tok_path) != expected:
        raise ValueError(f"tokenizer {tok_path} is not the one the model was trained with (sha256 {expected[:12]}...)")
    return model, Tokenizer(tok_path)


@torch.no_grad()
def complete(model: Decoder, tok: Tokenizer, prompt: str, max_new_tokens: int, temperature: float, top_k: int,
             seed: int) -> str:
    """The generated continuation of `prompt` (an empty prompt starts after an eos, as a new document)."""
    ids = [int(i) for i in tok.encode(prompt)] or [tok.eos_id]
    return tok.decode(generate(model, ids, max_new_tokens, temperature, top_k, eos_id=tok.eos_id, seed=seed))

