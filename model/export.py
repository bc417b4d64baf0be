"""The consolidated model: safetensors weights + config.json (+ the tokenizer), loadable without Ray or FSDP.

The export is byte-reproducible: the same weights give the same file, so its sha256 is a lineage key
(a resumed job's export equals the uninterrupted job's). safetensors' own writer is not: it serializes
`__metadata__` from a Rust HashMap, in a different order in every process. `write_safetensors` writes
the same format with the header's keys sorted and the tensors in name order.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import torch
from safetensors.torch import load_file

from model.config import ModelConfig
from pipelines import storage
from model.transformer import Decoder

WEIGHTS, CONFIG, TOKENIZER = "model.safetensors", "config.json", "tokenizer.model"
_DTYPES = {torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
           torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8",
           torch.bool: "BOOL"}


def write_safetensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
    """The safetensors format (8-byte little-endian header size, JSON header padded to 8 bytes, raw
    little-endian data), deterministic: sorted keys, tensors in name order, nothing time-dependent."""
    header: dict = {"__metadata__": dict(sorted(metadata.items()))}
    offset, blobs = 0, []
    for name in sorted(tensors):
        t = tensors[name].detach().to("cpu").contiguous()
        data = t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b""
        header[name] = {"dtype": _DTYPES[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
        blobs.append(data)
    raw = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)))
        f.write(raw)
        for data in blobs:
            f.write(data)


def save_export(out_dir: Path, state_dict: dict[str, torch.Tensor], cfg: ModelConfig, tokenizer_path: str | None,
                extra: dict | None = None) -> Path:
    """Write a full (unsharded) state dict. A tied output projection is stored once, as the embedding.
    `out_dir` may be a URI: the folder is written locally, then published (uploaded) whole."""
    dest = storage.path(out_dir)
    out_dir = storage.scratch_for(dest, directory=True) if storage.is_uri(dest) else dest
    out_dir.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in state_dict.items()
               if not (cfg.tie_embeddings and k == "lm_head.weight")}
    write_safetensors(out_dir / WEIGHTS, tensors, {"format": "pt", "tokenmill": "decoder"})
    (out_dir / CONFIG).write_text(json.dumps({"model": cfg.to_dict(), **(extra or {})}, indent=2, sort_keys=True))
    if tokenizer_path:
        (out_dir / TOKENIZER).write_bytes(storage.path(tokenizer_path).read_bytes())
    if out_dir != dest:
        storage.publish(out_dir, dest)
    return dest


def load_export(path: Path, device: str = "cpu") -> tuple[Decoder, dict]:
    """The model (eval mode) and the export's config.json (a local folder or a URI: read through the cache)."""
    path = storage.local_copy(path)
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
