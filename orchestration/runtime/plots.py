"""The PNG plots each stage logs to its MLflow run."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from pipelines.stage_files import LENGTH_BINS  # noqa: E402


def length_histogram(stage: str, kept: list[int], dropped: list[int], note: str = ""):
    fig, ax = plt.subplots(figsize=(7, 3.5))
    labels = [f"{b}" if b < 1024 else f"{b // 1024}k" for b in LENGTH_BINS]
    x = np.arange(len(LENGTH_BINS))
    if kept:
        ax.bar(x - 0.2, kept, width=0.4, label="kept")
    if dropped:
        ax.bar(x + 0.2, dropped, width=0.4, label="dropped / quarantined")
    ax.set_xticks(x[::2], labels[::2], rotation=45)
    ax.set_xlabel("document length (characters, lower bin edge)")
    ax.set_ylabel("documents")
    ax.set_title(f"{stage}: document length" + (f"\n{note}" if note else ""), fontsize=10 if note else None)
    ax.legend()
    fig.tight_layout()
    return fig


def reasons_bar(stage: str, dropped: dict[str, int], quarantined: dict[str, int]):
    items = sorted({**dropped, **quarantined}.items(), key=lambda kv: -kv[1])[:30] or [("(none)", 0)]
    fig, ax = plt.subplots(figsize=(7, 0.35 * len(items) + 1.2))
    ax.barh([k for k, _ in items][::-1], [v for _, v in items][::-1])
    ax.set_xlabel("documents")
    ax.set_title(f"{stage}: dropped and quarantined, by reason")
    fig.tight_layout()
    return fig


def binned_bar(title: str, xlabel: str, edges, counts):
    """A histogram whose counts were computed on the cluster (edges: len(counts) + 1)."""
    fig, ax = plt.subplots(figsize=(7, 3.5))
    edges = np.asarray(edges, dtype=float)
    ax.bar(edges[:-1], counts, width=np.diff(edges), align="edge")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("count")
    ax.set_title(title)
    fig.tight_layout()
    return fig


def counts_bar(title: str, xlabel: str, counts: dict[int, int]):
    fig, ax = plt.subplots(figsize=(7, 3.5))
    keys = sorted(counts)
    ax.bar([str(k) for k in keys], [counts[k] for k in keys])
    if any(counts.values()):
        ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("count")
    ax.set_title(title)
    fig.tight_layout()
    return fig


def close(fig) -> None:
    plt.close(fig)


def loss_curve(train: list[tuple[int, float]], val: list[tuple[int, float]], title: str,
               spikes: list[tuple[int, float]] = ()):
    """Training loss per step, validation loss at its evaluation steps, and the loss spikes marked."""
    fig, ax = plt.subplots(figsize=(7, 3.8))
    if train:
        ax.plot(*zip(*sorted(train)), label="train loss", linewidth=1)
    if val:
        ax.plot(*zip(*sorted(val)), "o-", label="validation loss")
    if spikes:
        ax.plot(*zip(*sorted(spikes)), "rv", label=f"loss spikes ({len(spikes)}: tokenmill lineage --spikes)")
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy (nats / token)")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    return fig


def mixture_shares(realized: dict[str, list[tuple[int, float]]], planned: dict[str, list[tuple[int, float]]],
                   title: str):
    """Each source's cumulative share of the sequences (solid) against its cumulative target (dashed), by step."""
    fig, ax = plt.subplots(figsize=(7, 3.8))
    for name in realized:
        line, = ax.plot(*zip(*sorted(realized[name])), label=f"{name} realized", linewidth=1.2)
        if planned.get(name):
            ax.plot(*zip(*sorted(planned[name])), "--", color=line.get_color(), label=f"{name} planned", linewidth=0.8)
    ax.set_xlabel("step")
    ax.set_ylabel("share of the sequences")
    ax.set_yscale("symlog", linthresh=0.01)  # a 1 % source stays visible beside a 70 % one
    ax.set_title(title)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    return fig
