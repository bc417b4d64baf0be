"""FSDP2 wiring of the decoder (the math is in transformer.py; this file only says how it is spread over ranks).

Each block, then the root, is `fully_shard`ed over a 1-D device mesh of all ranks (gloo on CPU, NCCL on GPU);
bf16 keeps fp32 master weights and reduces gradients in fp32. On GPU every block may be compiled on its own
(torchtitan's per-block compile: the same graph for every block, so it compiles once).
"""

from __future__ import annotations

import torch
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

from model.config import ModelConfig
from model.transformer import Decoder


def build_sharded_model(mcfg: ModelConfig, device: torch.device, world: int, bf16: bool, compile_blocks: bool,
                        seed: int) -> Decoder:
    torch.manual_seed(seed)  # every rank builds the same initial weights before sharding
    model = Decoder(mcfg).to(device)
    mesh = init_device_mesh(device.type, (world,))
    mp = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) if bf16 else MixedPrecisionPolicy()
    for block in model.layers:
        if compile_blocks:
            block.compile()
        fully_shard(block, mesh=mesh, mp_policy=mp)
    fully_shard(model, mesh=mesh, mp_policy=mp)
    return model
