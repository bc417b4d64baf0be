"""FSDP2 wiring of the decoder (the math is in transformer.py; this file only says how it is spread over ranks).

The ranks form a device mesh of `replicate x shard` (gloo on CPU, NCCL on GPU). Each block, then the root, is
`fully_shard`ed over it: on a 1-D mesh (replicate 1, the default) that is FSDP over every rank; on a 2-D mesh it
is HSDP (torchtitan's `dp_replicate x dp_shard`): parameters, gradients and optimizer state are sharded within
a row of `shard` ranks and replicated across the `replicate` rows; a gradient is reduce-scattered within the
row, then all-reduced across rows (both averaging). Rank r sits in row r // shard, so when Ray Train puts the
ranks of a node next to each other (it orders workers by node), a row of `shard` ranks is a node's GPUs and only
the all-reduce crosses the network.

Activation checkpointing wraps blocks (before compile and sharding, torchtitan's order): `full` keeps only each
block's input for the backward and recomputes the block; `selective` does so for every k-th block (torchtitan's
layer-wise selective option), which spends (1/k of full's recompute) to save (1/k of the activations). Layer-wise,
not torchtitan's op-level policy, because its saving is exactly "these blocks keep only their input": the plan
(model/plan.py) predicts it from the shape alone, on any device, and a user trades memory for compute in steps
of whole blocks.

The FSDP unit (what one all-gather brings in) is each block on GPU, where the next block's all-gather overlaps
this block's compute on another stream and only one block is gathered at a time. On CPU nothing overlaps (gloo's
collectives and the compute share the same cores) and each unit is three collectives a step that every rank waits
at, so the whole model is one unit there: one all-gather before the forward and one reduce-scatter after the
backward. Measured with the tiny preset, 2 gloo ranks on 2 cores, 16 x 128 tokens each: a step at 0.72x of a
plain loop's speed with block units, 0.90x with one unit, as torch's DDP (0.90x): the rest is two ranks
waiting for each other, which independent processes never do.

bf16 keeps fp32 master weights and reduces gradients in fp32. On GPU every block may be compiled on its own
(torchtitan's per-block compile: the same graph for every block, so it compiles once).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import checkpoint_wrapper
from torch.distributed.device_mesh import DeviceMesh, init_device_mesh
from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

from model.config import ModelConfig
from model.parallel_config import ActivationCheckpointing, checkpointed_blocks
from model.transformer import Decoder


def device_mesh(device_type: str, replicate: int, shard: int) -> DeviceMesh:
    if replicate == 1:  # the flat mesh (the checkpoints of a 1-D and a 2-D mesh load into each other: DCP reshards)
        return init_device_mesh(device_type, (shard,), mesh_dim_names=("shard",))
    return init_device_mesh(device_type, (replicate, shard), mesh_dim_names=("replicate", "shard"))


def apply_activation_checkpointing(model: Decoder, mode: ActivationCheckpointing, every: int = 2) -> list[int]:
    """Wrap the chosen blocks in place (their parameters' names gain a `_checkpoint_wrapped_module.` part, which
    torch.distributed.checkpoint's state-dict functions leave out: checkpoints load with or without it).
    The RNG state is saved for the recompute only when dropout draws from it."""
    chosen = checkpointed_blocks(len(model.layers), mode, every)
    for i in chosen:
        model.layers[i] = checkpoint_wrapper(model.layers[i], preserve_rng_state=model.cfg.dropout > 0)
    return chosen


def build_sharded_model(mcfg: ModelConfig, device: torch.device, mesh_shape: tuple[int, int], bf16: bool,
                        compile_blocks: bool, seed: int, activation_checkpointing: ActivationCheckpointing = "none",
                        ac_every: int = 2, unit: Literal["block", "model"] = "block") -> Decoder:
    torch.manual_seed(seed)  # every rank builds the same initial weights before sharding
    model = Decoder(mcfg).to(device)
    apply_activation_checkpointing(model, activation_checkpointing, ac_every)
    mesh = device_mesh(device.type, *mesh_shape)
    mp = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) if bf16 else MixedPrecisionPolicy()
    for i, block in enumerate(model.layers):
        if compile_blocks:
            block.compile()
        if unit == "block":
            # the last block's backward comes right after its forward: gathering it again would be wasted (torchtitan)
            fully_shard(block, mesh=mesh, mp_policy=mp, reshard_after_forward=i < len(model.layers) - 1)
    fully_shard(model, mesh=mesh, mp_policy=mp)  # the root stays gathered from its forward to its backward
    return model
