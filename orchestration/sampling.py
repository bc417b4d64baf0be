"""`tokenmill generate`: text from an export folder or straight from a sharded Ray Train checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

from pipelines import storage
from pipelines.errors import UsageError

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
        raise UsageError(f"tokenizer {tok_path} is not the one the model was trained with (sha256 {expected[:12]}...): "
                         "leave out --tokenizer to use the model's own")
    return model, Tokenizer(tok_path)


def check_sampling(max_new_tokens: int, temperature: float, top_k: int) -> None:
    """Sampling arguments in range, before a model is loaded."""
    if max_new_tokens < 1:
        raise UsageError(f"--max-new-tokens: at least 1, got {max_new_tokens}")
    if not temperature >= 0:  # NaN too
        raise UsageError(f"--temperature: 0 (greedy) or more, got {temperature}")
    if top_k < 0:
        raise UsageError(f"--top-k: 0 (no cut-off) or more, got {top_k}")


def prompt_ids(model: Decoder, tok: Tokenizer, prompt: str, max_new_tokens: int) -> tuple[list[int], str | None]:
    """The prompt's token ids (an empty prompt starts after an eos, as a new document), and a note when the
    model's context leaves room for fewer new tokens than asked. A prompt that leaves no room is a UsageError."""
    ids = [int(i) for i in tok.encode(prompt)] or [tok.eos_id]
    room = model.cfg.max_seq_len - len(ids)
    if room < 1:
        raise UsageError(f"the prompt {prompt[:40]!r}{'...' if len(prompt) > 40 else ''} is {len(ids)} tokens: the "
                         f"model's context is {model.cfg.max_seq_len} tokens, so it leaves no room to generate; "
                         "shorten it")
    note = None
    if room < max_new_tokens:
        note = (f"the prompt {prompt[:40]!r} is {len(ids)} tokens of the model's {model.cfg.max_seq_len}: at most "
                f"{room} new tokens (not {max_new_tokens})")
    return ids, note


@torch.no_grad()
def complete(model: Decoder, tok: Tokenizer, prompt: str, max_new_tokens: int, temperature: float, top_k: int,
             seed: int) -> str:
    """The generated continuation of `prompt` (an empty prompt starts after an eos, as a new document)."""
    ids, _ = prompt_ids(model, tok, prompt, max_new_tokens)
    return tok.decode(generate(model, ids, max_new_tokens, temperature, top_k, eos_id=tok.eos_id, seed=seed))

