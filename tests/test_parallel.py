"""HSDP, activation checkpointing and FSDP units (model/parallelize.py) on CPU: 4 gloo ranks as 1 x 4 (FSDP),
2 x 2 and 4 x 1 (HSDP), with each block or the whole model as FSDP's unit, train 20 steps on real text with the
same losses; a checkpoint written on one mesh shape (and unit) resumes on another with the losses of the run that
never stopped; checkpointed blocks give the loss and gradients of plain ones."""

from __future__ import annotations

import pytest
import torch

import mesh_run
from model.parallel_config import MeshConfig, checkpointed_blocks
from model.parallelize import apply_activation_checkpointing
from model.transformer import Decoder

STEPS = 20
# float32 sums in another order (reduce-scatter then all-reduce): the same losses to ~1e-7 relative (measured
# 3.6e-7 absolute after 20 steps at loss ~3.5)
RTOL = 1e-5


# name: (mesh, activation checkpointing, FSDP unit)
MESHES = {"2x2": ((2, 2), "none", "block"), "4x1-selective-ac": ((4, 1), "selective", "block"),
          "2x2-one-unit": ((2, 2), "none", "model")}
# name: (first half's mesh and unit, second half's)
RESUMES = {"2x2-to-1x4": (((2, 2), "block"), ((1, 4), "block")),
           "1x4-to-2x2-one-unit": (((1, 4), "block"), ((2, 2), "model"))}


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, dict[int, float]]:
    """Every run of this file in one set of 4 processes: the flat mesh, the others, and the resumes (first half on
    one shape with a checkpoint, second half on another)."""
    tmp = tmp_path_factory.mktemp("mesh")
    plan = {"flat": dict(mesh=(1, 4), steps=STEPS)}
    plan.update({name: dict(mesh=mesh, steps=STEPS, ac=ac, unit=unit) for name, (mesh, ac, unit) in MESHES.items()})
    for name, ((first, unit1), (then, unit2)) in RESUMES.items():
        plan[f"{name}:first"] = dict(mesh=first, unit=unit1, steps=STEPS // 2, save_to=tmp / name)
        plan[f"{name}:then"] = dict(mesh=then, unit=unit2, steps=STEPS, resume_from=tmp / name)
    return dict(zip(plan, mesh_run.run(4, list(plan.values()))))


def test_the_flat_mesh_learns(runs):
    flat = runs["flat"]
    assert sorted(flat) == list(range(1, STEPS + 1))
    assert flat[STEPS] < flat[1] - 1.0  # bytes of real text: 5.5 nats at the start, ~3.5 after 20 steps


@pytest.mark.parametrize("name", MESHES)
def test_hsdp_meshes_give_the_flat_meshs_losses(runs, name):
    assert runs[name] == pytest.approx(runs["flat"], rel=RTOL)


@pytest.mark.parametrize("name", RESUMES)
def test_a_checkpoint_resumes_on_another_mesh_shape_with_the_same_losses(runs, name):
    first, rest = runs[f"{name}:first"], runs[f"{name}:then"]
    assert sorted(first) == list(range(1, STEPS // 2 + 1))
    assert sorted(rest) == list(range(STEPS // 2 + 1, STEPS + 1))
    assert {**first, **rest} == pytest.approx(runs["flat"], rel=RTOL)


@pytest.mark.parametrize("mode", ["full", "selective"])
def test_checkpointed_blocks_give_the_same_loss_and_gradients(mode):
    cfg = mesh_run.model_config(n_layers=4)
    batch = mesh_run.text_windows(4)
    grads = {}
    for ac in ("none", mode):
        torch.manual_seed(0)
        model = Decoder(cfg)
        wrapped = apply_activation_checkpointing(model, ac, every=2)
        assert wrapped == checkpointed_blocks(4, ac, 2)
        loss = model(batch[:, :-1], batch[:, 1:])
        loss.backward()
        # the wrapper's part of the names is left out, as torch.distributed.checkpoint's state dicts do
        grads[ac] = (loss.item(), {n.replace("_checkpoint_wrapped_module.", ""): p.grad.clone()
                                   for n, p in model.named_parameters()})
    (base_loss, base), (loss, got) = grads["none"], grads[mode]
    assert loss == base_loss
    assert got.keys() == base.keys()
    for name in base:
        torch.testing.assert_close(got[name], base[name], rtol=0, atol=0, msg=name)


def test_which_blocks_are_checkpointed():
    assert checkpointed_blocks(6, "none") == []
    assert checkpointed_blocks(6, "full") == [0, 1, 2, 3, 4, 5]
    assert checkpointed_blocks(6, "selective", 2) == [1, 3, 5]
    assert checkpointed_blocks(6, "selective", 3) == [2, 5]


def test_mesh_shapes():
    assert MeshConfig().shape(4) == (1, 4)
    assert MeshConfig(replicate=2).shape(4) == (2, 2) == MeshConfig(shard=2).shape(4)
    assert MeshConfig(replicate=4, shard=1).shape(4) == (4, 1)
    for bad in (MeshConfig(replicate=3), MeshConfig(replicate=2, shard=3)):
        with pytest.raises(ValueError, match="must equal ray.num_workers"):
            bad.shape(4)
