"""The loss-spike rule (model/spikes.py) on simulated pretraining curves: quiet on noise and on a falling
trend, loud on jumps, deterministic, and resumable from its saved state."""

from __future__ import annotations

import json

import numpy as np
import pytest

from model.spikes import SpikeDetector, SpikeRule, find_spikes


def curve(seed: int, steps: int = 400, tau: float = 15.0, noise: float = 0.05) -> list[tuple[int, float]]:
    rng = np.random.default_rng(seed)
    t = np.arange(1, steps + 1)
    loss = 3 + 4 * np.exp(-t / tau) + rng.normal(0, noise, steps)
    return list(zip(t.tolist(), loss.tolist()))


@pytest.mark.parametrize("tau", [5.0, 15.0, 100.0])
def test_noise_and_a_falling_loss_are_not_spikes(tau):
    for seed in range(10):
        assert find_spikes(curve(seed, tau=tau)) == [], (tau, seed)


def test_planted_jumps_are_found_at_their_steps_even_early_in_a_steep_descent():
    for seed in range(10):
        losses = curve(seed)
        losses[34] = (35, 6.5)  # from ~3.4: a median-of-window rule puts its bar near 10 here
        losses[199] = (200, losses[199][1] + 0.6)
        spikes = find_spikes(losses)
        assert [s["step"] for s in spikes] == [35, 200], seed
        assert all(s["loss"] > s["bar"] > s["expected"] for s in spikes)


def test_a_lasting_level_shift_stops_being_reported():
    losses = [(s, 3.0 + 0.01 * np.sin(s) + (1.0 if s > 100 else 0.0)) for s in range(1, 301)]
    flagged = [s["step"] for s in find_spikes(losses)]
    assert flagged[0] == 101 and max(flagged) < 101 + SpikeRule().window  # not forever
    assert all(b - a == 1 for a, b in zip(flagged, flagged[1:]))


def test_a_resumed_detector_judges_like_an_uninterrupted_one():
    losses = curve(3)
    losses[120] = (121, losses[120][1] + 1.0)
    straight = find_spikes(losses)
    first = SpikeDetector()
    for step, loss in losses[:100]:
        first.observe(step, loss)
    saved = json.loads(json.dumps(first.state()))  # as the checkpoint's trainer_state.json holds it
    second = SpikeDetector(SpikeRule(), saved)
    for step, loss in losses[100:]:
        second.observe(step, loss)
    assert second.spikes == straight and [s["step"] for s in straight] == [121]


def test_nothing_is_judged_before_min_history():
    assert find_spikes([(1, 3.0), (2, 3.0), (3, 30.0)], SpikeRule(min_history=3)) == []
    spikes = find_spikes([(1, 3.0), (2, 3.0), (3, 3.0), (4, 30.0)], SpikeRule(min_history=3))
    assert [s["step"] for s in spikes] == [4] and spikes[0]["expected"] == 3.0


@pytest.mark.parametrize("bad", [{"window": 2}, {"threshold": 0}, {"floor": -0.1}, {"min_history": 60}])
def test_bad_rules_are_refused_with_the_key(bad):
    from pipelines.typed_config import ConfigError
    from orchestration.config.train import train_config_from_dict

    with pytest.raises(ConfigError, match=f"spikes.{next(iter(bad))}"):
        train_config_from_dict({"name": "x", "spikes": bad}, ".")
