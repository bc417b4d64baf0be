"""Training checkpoints: torch.distributed.checkpoint (DCP) shards plus what a resumed job needs, and their checks.

A checkpoint folder holds:
- DCP's shards and `.metadata`: the model and optimizer state, each rank writing its own piece;
- `trainer_state.json` (rank 0): the step, the loss, the loader position (`data`), and what `tokenmill generate`
  and lineage need without the job's config (`model`, `tokenizer`, `tokenizer_sha256`, `mlflow_run_id`,
  `manifest_digest`; `spikes`: the spike detector's window);
- `rng_rankNNNNN.safetensors`: every rank's RNG state;
- `files_rankNNNNN.json`: the sha256 of every file that rank wrote.

Nothing is unpickled from a checkpoint: RNG states are safetensors, the trainer state JSON; DCP reads tensors.
Where the folder goes (Ray Train's storage) is the caller's business: `save` writes into a folder it is given.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Callable

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from safetensors.torch import load_file, save_file
from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

from model.config import ModelConfig
from model.transformer import Decoder
from pipelines import storage
from pipelines.hashing import sha256_file

STATE_FILE = "trainer_state.json"


def _rng_state() -> dict:
    state = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["cpu"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def _file_digests(folder: Path) -> dict[str, str]:
    return {f.relative_to(folder).as_posix(): sha256_file(f)
            for f in sorted(p for p in folder.rglob("*") if p.is_file())}


def save(folder: Path, model, optimizer, rank: int, state: dict | None) -> None:
    """This rank's piece of a checkpoint into `folder` (its own local folder): DCP shards, its RNG state, the
    trainer state (rank 0 passes it, the others None), then the sha256 list of every file it wrote."""
    folder = Path(folder)
    msd, osd = get_state_dict(model, optimizer)
    dcp.save({"model": msd, "optim": osd}, checkpoint_id=str(folder))
    save_file(_rng_state(), str(folder / f"rng_rank{rank:05d}.safetensors"))
    if state is not None:
        (folder / STATE_FILE).write_text(json.dumps(state, indent=1))
    digests = _file_digests(folder)
    (folder / f"files_rank{rank:05d}.json").write_text(json.dumps(digests, indent=1, sort_keys=True))


def load(path: Path, model, optimizer, loader, rank: int) -> dict:
    """Model, optimizer, the loader's position (`loader.load_state_dict`) and this rank's RNG state from a
    checkpoint; its trainer state."""
    msd, osd = get_state_dict(model, optimizer)
    state = {"model": msd, "optim": osd}
    dcp.load(state, checkpoint_id=str(path))
    set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optim"])
    meta = json.loads((Path(path) / STATE_FILE).read_text())
    loader.load_state_dict(meta["data"])
    rng = Path(path) / f"rng_rank{rank:05d}.safetensors"
    if rng.is_file():  # absent when the world size changed; the data order does not depend on it
        _set_rng_state(load_file(str(rng)))
    elif (old := Path(path) / f"rng_rank{rank:05d}.pt").is_file():  # checkpoints before safetensors RNG
        _set_rng_state(torch.load(old, weights_only=True))  # a dict of tensors: nothing to unpickle
    return meta


def verify(path: Path, rank: int = 0, world: int = 1) -> str | None:
    """None if this rank's share of the checkpoint's file lists verifies (rank r checks the lists of ranks
    r, r + world, ...; one process with the defaults checks them all), else what is wrong. Checkpoints
    without lists (older ones) are not checked here."""
    path = storage.path(path)  # a local folder, or a checkpoint on object storage (lineage --verify)
    for listing in sorted(path.glob("files_rank*.json"))[rank::world]:
        try:
            files = json.loads(listing.read_text())
        except ValueError as exc:
            return f"{listing.name} unreadable ({exc})"
        for name, digest in files.items():
            f = path / name
            if not f.is_file():
                return f"{name} is missing"
            if sha256_file(f) != digest:
                return f"{name} does not match its sha256 (corrupt or truncated)"
    return None


def incomplete(path) -> str | None:
    """Why a checkpoint folder cannot be resumed from without reading it (None: it looks whole): the trainer
    state or DCP's .metadata missing (a save that stopped half-way, a folder Ray Train had not finished
    moving), or a file its ranks' lists name missing. The sha256 of every file is checked when it is loaded."""
    path = storage.path(path)
    for name in (STATE_FILE, ".metadata"):
        if not (path / name).is_file():
            return f"incomplete: no {name}"
    listings = sorted(path.glob("files_rank*.json"))
    if not listings:
        return "incomplete: no files_rank*.json (the ranks' file lists)"
    for listing in listings:
        try:
            names = json.loads(listing.read_text())
        except ValueError as exc:
            return f"incomplete: {listing.name} unreadable ({exc})"
        missing = [n for n in names if not (path / n).is_file()]
        if missing:
            return f"incomplete: {missing[0]} is missing" + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else "")
    return None


def all_ok(ok: bool) -> bool:
    """True on every rank if `ok` on every rank (a collective)."""
    flag = torch.tensor([1 if ok else 0], dtype=torch.int32)
    dist.all_reduce(flag, op=dist.ReduceOp.MIN)
    return bool(flag.item())


def restore(candidates: list[tuple[Path, str]], model, optimizer, loader, rank: int, world: int,
            say: Callable[[str], None]) -> tuple[dict, list[str]]:
    """(its trainer state, problems): the first of `candidates` (folder, name to show), newest first, that
    verifies and loads on every rank (a collective: every rank walks the same list)."""
    problems = []
    for path, shown in candidates:
        bad = verify(path, rank, world)
        if all_ok(bad is None):
            try:
                meta = load(path, model, optimizer, loader, rank)
            except Exception as exc:  # noqa: BLE001  (DCP raises on every rank when any rank fails)
                bad = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            if all_ok(bad is None):
                return meta, problems
        problems.append(f"{shown}: {bad or 'unreadable on another rank'}")
        if rank == 0:
            say(f"[train] checkpoint {shown} is unusable ({bad or 'on another rank'}); trying the one before it")
    raise RuntimeError("no usable checkpoint: " + "; ".join(problems))


def load_unsharded(path: Path) -> tuple[Decoder, dict]:
    """The model of a DCP checkpoint, loaded in this one process (DCP reads every rank's shard), and its
    trainer state."""
    meta = json.loads((Path(path) / STATE_FILE).read_text())
    model = Decoder(ModelConfig.from_dict(meta["model"]))
    saved = dcp.FileSystemReader(str(path)).read_metadata().state_dict_metadata
    state = {k: v for k, v in model.state_dict().items() if f"model.{k}" in saved}
    dcp.load({"model": state}, checkpoint_id=str(path))
    model.load_state_dict(state, strict=False)  # copies in place: a tied output projection stays tied
    return model.eval(), meta


def checkpoint_digest(path) -> str:
    """sha256 over (relative path, sha256) of every file of a checkpoint folder (local or a URI)."""
    h = hashlib.sha256()
    path = storage.path(path)
    for f in sorted((p for p in path.rglob("*") if p.is_file()), key=str):
        h.update(f"{f.relative_to(path)}\0{sha256_file(f)}\n".encode())
    return h.hexdigest()
