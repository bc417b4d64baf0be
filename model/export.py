"""The consolidated model: safetensors weights + config.json (+ the tokenizer), loadable without Ray or FSDP."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from model.config import ModelConfig
from model.transformer import Decoder

WEIGHTS, CONFIG, TOKENIZER = "model.safetensors", "config.json", "tokenizer.model"


def save_export(out_dir: Path, state_dict: dict[str, torch.Tensor], cfg: ModelConfig, tokenizer_path: str | None,
                extra: dict | None = None) -> Path:
    """Write a full (unsharded) state dict. A tied output projection is stored once, as the embedding."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in state_dict.items()
               if not (cfg.tie_embeddings and k == "lm_head.weight")}
    save_file(tensors, str(out_dir / WEIGHTS), metadata={"format": "pt", "tokenmill": "decoder"})
    (out_dir / CONFIG).write_text(json.dumps({"model": cfg.to_dict(), **(extra or {})}, indent=2, sort_keys=True))
    if tokenizer_path:
        shutil.copyfile(tokenizer_path, out_dir / TOKENIZER)
    return out_dir


def load_export(path: Path, device: str = "cpu") -> tuple[Decoder, dict]:
    """The model (eval mode) and the export's config.json."""
    path = Path(path)
    if not (path / WEIGHTS).is_file() or not (path / CONFIG).is_file():
        raise FileNotFoundError(f"{path}: not a tokenmill model export (needs {WEIGHTS} and {CONFIG})")
    meta = json.loads((path / CONFIG).read_text())
    cfg = ModelConfig.from_dict(meta["model"])
    model = Decoder(cfg)
    state = load_file(str(path / WEIGHTS), device="cpu")
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not (cfg.tie_embeddings and k == "lm_head.weight")]
    if missing or unexpected:
        raise ValueError(f"{path / WEIGHTS}: missing {missing}, unexpected {unexpected}")
    return model.to(device).eval(), meta
