"""The plan before launch (model/plan.py) against measured peaks, and `tokenmill train --plan`.

Measured: torch's FSDPMemTracker over a real sharded training step on CPU (model/memory_probe.py), every
storage alive counted, in fp32 and bf16 (FSDP's mixed precision runs on CPU too), with activation checkpointing
off, selective and full; one process (shard 1) and two (shard 2, spawned gloo ranks)."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest

from model.config import ModelConfig
from model.plan import GiB, memory, parse_bytes, plan
from orchestration.config.schema import read_yaml
from repo_paths import REPO

TOLERANCE = 0.05  # the issue asks 20%; the count is within 1-2% on both presets, so a drift shows here


def preset(name: str, vocab: int) -> ModelConfig:
    return ModelConfig.from_dict({**read_yaml(REPO / "configs" / "model" / f"{name}.yaml"), "vocab_size": vocab})


@pytest.mark.parametrize("bf16", [False, True], ids=["fp32", "bf16"])
@pytest.mark.parametrize("ac", ["none", "selective", "full"])
@pytest.mark.parametrize("unit", ["block", "model"])
def test_the_planned_peak_is_the_measured_peak_of_the_tiny_preset(bf16, ac, unit):
    from model.memory_probe import measure_step

    cfg = preset("tiny", 2000)
    measured = measure_step(cfg, 256, 8, bf16, ac, unit=unit)["Total"]
    planned = memory(cfg, 256, 8, 1, bf16, ac, unit=unit)
    assert planned["peak_at"] == "backward"
    assert abs(planned["total"] / measured - 1) < TOLERANCE, (planned, measured)


def test_the_optimizer_step_peak_of_the_124m_preset_on_a_short_sequence():
    """One sequence of 64 tokens: the activations are small and the peak is the optimizer step's (every gradient,
    AdamW's moments and its temporaries)."""
    from model.memory_probe import measure_step

    cfg = preset("gpt2-124m", 50257)
    measured = measure_step(cfg, 64, 1, False, "none")["Total"]
    planned = memory(cfg, 64, 1, 1, False, "none")
    assert planned["peak_at"] == "optimizer"
    assert abs(planned["total"] / measured - 1) < TOLERANCE, (planned, measured)


# (preset, vocabulary, seq, micro, bf16, checkpointing, unit): the tiny preset with its activations as the peak; the
# 124M preset on one short sequence, whose peak is the end of the backward (the tied embedding's gradient with the
# blocks' gradients reduce-scattered: was planned at 0.79 of the measured, as the optimizer step) or, one unit in
# bf16, the reduce-scatter of the whole model's gradients
CASES_OF_TWO = [("tiny", 2000, 256, 4, bf16, ac, unit) for bf16 in (False, True) for ac in ("none", "full")
                for unit in ("block", "model")] + [("gpt2-124m", 50257, 64, 1, False, "none", "block"),
                                                   ("gpt2-124m", 50257, 64, 1, True, "none", "model")]
PEAKS_OF_TWO = {("gpt2-124m", False): "backward_end", ("gpt2-124m", True): "reduce_scatter"}


def test_the_planned_peak_of_a_rank_sharded_two_ways():
    from model.memory_probe import measure_on_ranks

    cases = [dict(cfg=preset(name, vocab), seq_len=seq, micro=micro, bf16=bf16, ac=ac, unit=unit)
             for name, vocab, seq, micro, bf16, ac, unit in CASES_OF_TWO]
    got = [[m["Total"] for m in rank] for rank in measure_on_ranks(2, cases)]
    for (name, vocab, seq, micro, bf16, ac, unit), measured in zip(CASES_OF_TWO, got[0]):
        planned = memory(preset(name, vocab), seq, micro, 2, bf16, ac, unit=unit)
        assert planned["peak_at"] == PEAKS_OF_TWO.get((name, bf16), "backward"), (name, bf16, unit, planned)
        assert abs(planned["total"] / measured - 1) < TOLERANCE, (name, bf16, ac, unit, planned, measured)
    # the ranks hold the same, to the few rows by which a dimension that 2 does not divide splits unevenly (124M)
    assert all(abs(a / b - 1) < 1e-5 for a, b in zip(*got))


def test_memory_by_kind_follows_the_mesh_precision_and_checkpointing():
    cfg = preset("gpt2-124m", 50257)
    one, eight = memory(cfg, 1024, 4, 1, True), memory(cfg, 1024, 4, 8, True)
    for kind in ("parameters", "gradients", "optimizer"):
        assert abs(eight[kind] * 8 / one[kind] - 1) < 1e-3  # sharded state divides by the shard count
    assert eight["activations"] == one["activations"]  # activations are per micro-batch, not sharded
    none, sel, full = (memory(cfg, 1024, 4, 8, True, ac)["activations"] for ac in ("none", "selective", "full"))
    assert full < sel < none and sel == pytest.approx((none + full) / 2, rel=1e-9)  # every 2nd block of 12
    fp32 = memory(cfg, 1024, 4, 8, False)
    assert fp32["activations"] > 1.5 * eight["activations"]


def test_the_largest_micro_batch_that_fits_and_a_plan_that_cannot():
    cfg = preset("llama-1b", 128256)
    common = dict(cfg=cfg, seq_len=2048, global_batch_tokens=2048 * 64 * 8, steps=1000, world=8, mesh=(1, 8),
                  bf16=True)
    p = plan(**common, device_memory=80 * GiB)
    assert p.fits and p.largest_fitting_micro and 64 % p.largest_fitting_micro == 0
    over = memory(cfg, 2048, p.largest_fitting_micro * 2, 8, True, accumulating=True)["total"]
    assert over > p.budget >= p.memory["total"]  # the next divisor would not fit
    full = plan(**common, device_memory=80 * GiB, ac="full")
    assert full.largest_fitting_micro > p.largest_fitting_micro
    tiny_device = plan(**common, device_memory=2 * GiB)
    assert not tiny_device.fits and tiny_device.largest_fitting_micro is None
    assert "not even a micro-batch of 1 fits" in "\n".join(tiny_device.lines())
    timed = plan(**common, peak_flops=989.5e12, mfu=0.5)
    assert timed.seconds == pytest.approx(timed.total_tokens * timed.flops_per_token / (8 * 989.5e12 * 0.5))


def test_parse_bytes():
    assert parse_bytes("80GB") == parse_bytes("80 GiB") == 80 * GiB
    assert parse_bytes("512MiB") == 512 * 2**20 and parse_bytes("1024") == 1024
    for bad in ("eighty GB", "-1GB", "0"):
        with pytest.raises(ValueError, match="not an amount of memory"):
            parse_bytes(bad)


def test_tokenmill_train_plan_prints_the_plan_and_exits_1_when_it_cannot_fit():
    cmd = [sys.executable, "-m", "orchestration.cli", "train", str(REPO / "configs" / "train" / "quickstart.yaml"),
           "--plan", "model.vocab_size=2000"]
    ok = subprocess.run(cmd + ["--gpu", "H100"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, ok.stderr
    assert "1.0M parameters" in ok.stdout and "bf16" in ok.stdout and "fits" in ok.stdout, ok.stdout
    assert "FSDP unit: each block" in ok.stdout, ok.stdout  # train.fsdp_unit auto: blocks on GPU
    no = subprocess.run(cmd + ["--device-memory", "64MiB", "model.preset=../model/gpt2-124m.yaml"], cwd=REPO,
                        capture_output=True, text=True, timeout=120)
    assert no.returncode == 1 and "DOES NOT FIT" in no.stdout, (no.stdout, no.stderr)
    assert "FSDP unit: the whole model" in no.stdout and "fp32" in no.stdout, no.stdout  # and the whole model on CPU
    bad = subprocess.run(cmd + ["--device-memory", "lots"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "--device-memory: not an amount of memory" in bad.stderr, bad.stderr


def test_a_mesh_that_does_not_fit_the_workers_is_a_config_error():
    from orchestration.config.train import load_train_config
    from pipelines.typed_config import ConfigError

    path = REPO / "configs" / "train" / "quickstart.yaml"
    assert load_train_config(path, ["ray.num_workers=4", "train.global_batch_tokens=8192", "ray.mesh.replicate=2"]
                             ).ray.mesh.shape(4) == (2, 2)
    with pytest.raises(ConfigError, match="ray.mesh: replicate 3 x shard None does not fit 4 workers"):
        load_train_config(path, ["ray.num_workers=4", "train.global_batch_tokens=8192", "ray.mesh.replicate=3"])
    with pytest.raises(ConfigError, match="train.activation_checkpointing"):
        load_train_config(path, ["train.activation_checkpointing=some"])
    assert dataclasses.asdict(load_train_config(path).ray.mesh) == {"replicate": None, "shard": None}


def test_when_nothing_fits_the_plan_shows_one_sequence_and_only_a_given_memory_stops_the_job():
    from orchestration.train.planning import refuse_unless_fits
    from pipelines.errors import UsageError

    cfg = preset("tiny", 2000)
    p = plan(cfg, 256, 256 * 16 * 2, 10, 2, (1, 2), False, device_memory=20 * 2**20)  # one sequence needs 27 MiB
    assert p.largest_fitting_micro is None and p.micro == 1
    assert p.memory == memory(cfg, 256, 1, 2, False, accumulating=True)
    with pytest.raises(UsageError, match=f"even a micro-batch of 1 needs {p.memory['total'] / GiB:.2f} GiB"):
        refuse_unless_fits(p)
    p.binding = False  # this machine's memory shared by its workers: an estimate, a warning
    refuse_unless_fits(p)
    assert "does not fit (expect swapping)" in "\n".join(p.lines())
    configured = plan(cfg, 256, 256 * 16 * 2, 10, 2, (1, 2), False, micro=16, device_memory=40 * 2**20)
    assert configured.micro == 16 and configured.largest_fitting_micro == 1
    with pytest.raises(UsageError, match="train.micro_batch_size=1 fits"):
        refuse_unless_fits(configured)


def test_checkpointing_lengthens_the_expected_time_by_its_recompute():
    cfg = preset("gpt2-124m", 50257)
    common = dict(cfg=cfg, seq_len=1024, global_batch_tokens=1024 * 8, steps=100, world=1, mesh=(1, 1), bf16=True,
                  peak_flops=1e15, mfu=0.5)
    none, full, sel = (plan(**common, ac=ac) for ac in ("none", "full", "selective"))
    assert full.seconds == pytest.approx(none.seconds * 4 / 3) and sel.seconds == pytest.approx(none.seconds * 7 / 6)


def test_plan_options_are_checked():
    path = str(REPO / "configs" / "train" / "quickstart.yaml")
    base = [sys.executable, "-m", "orchestration.cli", "train", path]
    bad_mfu = subprocess.run(base + ["--plan", "--mfu", "40", "model.vocab_size=2000"], cwd=REPO, capture_output=True,
                             text=True, timeout=120)
    assert bad_mfu.returncode == 2 and "--mfu: 40.0 is not a fraction" in bad_mfu.stderr, bad_mfu.stderr
    alone = subprocess.run(base + ["--workdir", "/nonexistent", "--gpu", "H100"], cwd=REPO, capture_output=True,
                           text=True, timeout=120)
    assert alone.returncode == 2 and "--gpu only go with --plan" in alone.stderr, alone.stderr


def test_selective_checkpointing_of_fewer_blocks_than_its_frequency_is_refused():
    from orchestration.config.train import load_train_config
    from pipelines.typed_config import ConfigError

    with pytest.raises(ConfigError, match="train.ac_every: 5 is more than the model's 4 blocks"):
        load_train_config(REPO / "configs" / "train" / "quickstart.yaml",
                          ["train.activation_checkpointing=selective", "train.ac_every=5"])
