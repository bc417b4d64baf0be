"""Loss-spike detection: which steps' losses jumped well above the run's recent trend.

The rule (robust to noise, to outliers and to the steady fall of a pretraining loss):

    spike at step t  <=>  loss_t > trend_W(t) + k * max(1.4826 * MAD(residuals_W), floor * trend_W(t))

where W is the (step, loss) pairs of the `window` steps before t, trend_W the Theil-Sen line through them
(the median of all pairwise slopes, then the median intercept) extended to step t, residuals_W the losses
minus that line, MAD their median absolute deviation (1.4826 * MAD estimates the standard deviation of
normal noise), k = `threshold` (6 by default: normal noise passes it about once in 10^9 steps) and `floor`
a relative minimum width (2% by default) so that a very flat stretch does not turn tiny wobbles into
spikes. No step is judged before `min_history` steps have been seen. Only upward jumps count.

Why these choices: a level (median of the window) lags a falling loss, so early in training every bar
sits far above the current loss and the MAD is inflated by the trend itself (on a simulated curve
3 + 4 exp(-t/15) with 0.05 noise, a median+MAD rule missed a jump from 3.4 to 6.5 at step 35; the trend
rule flags it and nothing else). Theil-Sen and the MAD ignore up to 29% and 50% outliers, where a least-
squares line and a standard deviation are dragged by one spike: so spikes stay in the window, and a loss
that settles at a higher level stops being reported after a few dozen steps instead of forever.

Deterministic: the same losses give the same spikes. The state (the window and the spikes so far) is a
plain dict, saved in checkpoints so that a resumed job goes on judging against the same history.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

MAD_TO_SIGMA = 1.4826


@dataclass(frozen=True)
class SpikeRule:
    """The training config's `spikes:` section."""
    enabled: bool = True
    window: int = 50  # steps of history the median and MAD are taken over
    threshold: float = 6.0  # k: how many robust standard deviations above the median is a spike
    floor: float = 0.02  # the smallest spread, relative to the median
    min_history: int = 10  # steps seen before any is judged

    def validate(self, key: str) -> None:
        for name, ok in (("window", self.window >= 3), ("threshold", self.threshold > 0),
                         ("floor", self.floor >= 0), ("min_history", 3 <= self.min_history <= self.window)):
            if not ok:
                raise ValueError(f"{key}.{name}: {getattr(self, name)} is out of range (window >= 3, threshold > 0, "
                                 "floor >= 0, 3 <= min_history <= window)")


class SpikeDetector:
    def __init__(self, rule: SpikeRule = SpikeRule(), state: dict | None = None):
        self.rule = rule
        self.history: deque[tuple[int, float]] = deque(
            (tuple(x) for x in (state or {}).get("history", [])), maxlen=rule.window)
        self.spikes: list[dict] = list((state or {}).get("spikes", []))

    def observe(self, step: int, loss: float) -> dict | None:
        """Judge `loss` at `step` against the trend of the window before it; the spike's record, or None."""
        r = self.rule
        spike = None
        if len(self.history) >= r.min_history:
            steps = np.array([s for s, _ in self.history], dtype=np.float64)
            h = np.array([v for _, v in self.history], dtype=np.float64)
            expected, spread = _robust_trend(steps, h, float(step))
            spread = max(spread, r.floor * abs(expected))
            bar = expected + r.threshold * spread
            if loss > bar:
                spike = {"step": step, "loss": loss, "expected": expected, "spread": spread, "bar": bar,
                         "sigmas": (loss - expected) / spread if spread else float("inf")}
                self.spikes.append(spike)
        self.history.append((step, loss))
        return spike

    def state(self) -> dict:
        return {"history": list(self.history), "spikes": list(self.spikes)}


def _robust_trend(steps: np.ndarray, losses: np.ndarray, at: float) -> tuple[float, float]:
    """(the Theil-Sen line through (steps, losses) evaluated at `at`, 1.4826 x the MAD of its residuals).
    Theil-Sen: the median of all pairwise slopes, then the median intercept; up to 29% outliers move it
    by nothing, and a falling loss is followed instead of judged against a level it has left."""
    i, j = np.triu_indices(len(steps), k=1)
    dx = steps[j] - steps[i]
    slope = float(np.median((losses[j] - losses[i])[dx > 0] / dx[dx > 0])) if (dx > 0).any() else 0.0
    intercept = float(np.median(losses - slope * steps))
    residuals = losses - (intercept + slope * steps)
    return intercept + slope * at, MAD_TO_SIGMA * float(np.median(np.abs(residuals - np.median(residuals))))


def find_spikes(losses: list[tuple[int, float]], rule: SpikeRule = SpikeRule()) -> list[dict]:
    """The spikes of a whole loss curve [(step, loss), ...] in step order."""
    det = SpikeDetector(rule)
    for step, loss in losses:
        det.observe(step, loss)
    return det.spikes
