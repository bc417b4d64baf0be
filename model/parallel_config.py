"""How the decoder is spread over ranks and what it recomputes: the device mesh's shape and activation
checkpointing. Torch-free, so configs load without torch; model/parallelize.py applies them, model/plan.py
predicts their memory."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pipelines.typed_config import PositiveInt

ActivationCheckpointing = Literal["none", "full", "selective"]
# what one FSDP all-gather brings in: each block on its own (then the root's embedding and norm), or the whole model
# at once; auto: block on GPU, model on CPU (model/parallelize.py says why)
FsdpUnit = Literal["auto", "block", "model"]


def resolve_unit(unit: FsdpUnit, device_type: str) -> Literal["block", "model"]:
    if unit != "auto":
        return unit
    return "block" if device_type == "cuda" else "model"


@dataclass
class MeshConfig:
    """`replicate x shard` ranks (their product: the number of workers). Unset: shard over every worker (FSDP);
    one of them set: the other is workers / it."""
    replicate: PositiveInt | None = None
    shard: PositiveInt | None = None

    def shape(self, world: int) -> tuple[int, int]:
        """(replicate, shard) for `world` ranks, or ValueError saying why not."""
        r, s = self.replicate, self.shard
        if r is None and s is None:
            r, s = 1, world
        elif r is None:
            r = world // s if world % s == 0 else 0
        elif s is None:
            s = world // r if world % r == 0 else 0
        if not r or not s or r * s != world:
            raise ValueError(f"replicate {self.replicate} x shard {self.shard} does not fit {world} workers: "
                             "replicate x shard must equal ray.num_workers")
        return r, s


def checkpointed_blocks(n_layers: int, mode: ActivationCheckpointing, every: int = 2) -> list[int]:
    """The blocks whose activations are recomputed in the backward: all (full), every `every`-th (selective:
    blocks every-1, 2*every-1, ...; torchtitan's layer-wise frequency), none."""
    if mode == "full":
        return list(range(n_layers))
    if mode == "selective":
        return [i for i in range(n_layers) if (i + 1) % every == 0]
    return []
