"""The verdict of an ablation: per metric, each variant's mean and spread over seeds, its difference from the
baseline, and whether that difference stands above the noise. Pure Python (no Ray, no MLflow): the driver
collects the numbers, this decides.

Two noises, as AI2's "Signal and Noise" (2025) separates them:
- seed noise: the pooled standard deviation over seeds of the variant and the baseline,
  sqrt(((n_v - 1) s_v^2 + (n_b - 1) s_b^2) / (n_v + n_b - 2)) (each run's final value);
- checkpoint noise: the mean, over the variant's and the baseline's runs, of the standard deviation of one run's
  last k evaluations (how much a single model's score moves between its last checkpoints).
snr = (mean_v - mean_b) / seed noise, signed so that a positive snr means "better" (bits per byte: lower is
better; accuracies: higher). The verdict is "better" or "worse" when |snr| >= the threshold (default 2, stated
in the table) and the difference also exceeds the checkpoint noise, else "within noise". With one seed there is
no seed noise: the verdict rests on checkpoint noise alone and says so.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


def lower_is_better(metric: str) -> bool:
    """Bits per byte and losses go down as models improve; accuracies go up."""
    leaf = metric.rsplit(".", 1)[-1]
    return leaf.endswith("bpb") or "loss" in leaf


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof 1; 0 for one value)."""
    n = len(values)
    if not n:
        return math.nan, math.nan
    mean = sum(values) / n
    return mean, (math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0)


def pooled_std(a: list[float], b: list[float]) -> float:
    dof = len(a) + len(b) - 2
    if dof <= 0:
        return math.nan
    _, sa = mean_std(a)
    _, sb = mean_std(b)
    return math.sqrt(((len(a) - 1) * sa ** 2 + (len(b) - 1) * sb ** 2) / dof)


@dataclass
class Row:
    variant: str
    metric: str
    mean: float
    std: float
    seeds: int
    diff: float  # mean - baseline mean (raw units)
    snr_seed: float  # signed: > 0 is better
    snr_checkpoint: float
    verdict: str  # "baseline" | "better" | "worse" | "within noise"


def verdicts(finals: dict[str, list[float]], tails: dict[str, list[list[float]]], baseline: str, metric: str,
             threshold: float = 2.0) -> list[Row]:
    """One metric's rows. `finals`: variant -> the metric's final value per seed; `tails`: variant -> per seed,
    the metric's last k evaluations (for the checkpoint noise)."""
    if baseline not in finals:
        raise ValueError(f"no results for the baseline {baseline!r}")
    sign = -1.0 if lower_is_better(metric) else 1.0
    base = finals[baseline]
    mb, _ = mean_std(base)
    rows = []
    for variant, values in finals.items():
        m, s = mean_std(values)
        spreads = [mean_std(t)[1] for t in tails.get(variant, []) + tails.get(baseline, []) if len(t) > 1]
        ckpt = sum(spreads) / len(spreads) if spreads else math.nan
        diff = m - mb
        seed = pooled_std(values, base)
        snr_seed = sign * diff / seed if seed and not math.isnan(seed) else math.nan
        snr_ckpt = sign * diff / ckpt if ckpt and not math.isnan(ckpt) else math.nan
        if variant == baseline:
            verdict = "baseline"
        else:
            deciding = snr_seed if not math.isnan(snr_seed) else snr_ckpt
            above_ckpt = math.isnan(snr_ckpt) or abs(snr_ckpt) >= 1.0
            if math.isnan(deciding) or abs(deciding) < threshold or not above_ckpt:
                verdict = "within noise"
            else:
                verdict = "better" if deciding > 0 else "worse"
        rows.append(Row(variant, metric, m, s, len(values), diff, snr_seed, snr_ckpt, verdict))
    return rows


def markdown(rows: list[Row], threshold: float) -> str:
    """The table, one line per variant and metric, with the rule under it."""
    out = ["| metric | variant | mean | std (seeds) | n | diff vs baseline | snr (seeds) | snr (checkpoints) | verdict |",
           "|---|---|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        f = lambda x, p=4: "" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:+.{p}f}"  # noqa: E731
        out.append(f"| {r.metric} | {r.variant} | {r.mean:.4f} | {r.std:.4f} | {r.seeds} | "
                   f"{'' if r.verdict == 'baseline' else f(r.diff)} | {'' if r.verdict == 'baseline' else f(r.snr_seed, 2)} | "
                   f"{'' if r.verdict == 'baseline' else f(r.snr_checkpoint, 2)} | {r.verdict} |")
    out.append(f"\nsnr: the difference from the baseline over the pooled seed standard deviation (positive: better; "
               f"bits per byte lower is better). A variant is better or worse when |snr| >= {threshold:g} and the "
               "difference is at least the spread of one run's last checkpoints; otherwise within noise.")
    return "\n".join(out)
