"""Running one stage: its MLflow child run, its output shards and manifest, and the accounting check."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import mlflow
import ray

from orchestration import plots, tracking
from orchestration.stage_output import merge_results, write_stage
from pipelines.manifest import build_manifest, kept_files, write_manifest


class AccountingError(RuntimeError):
    """docs in != kept + dropped + quarantined: a stage lost or invented documents."""


@dataclass
class StagePlan:
    dataset: ray.data.Dataset | None  # records + _reason, one row per input document; None: no input
    docs_in: int | None  # None for ingest: every record read becomes exactly one row
    # Called after the write with the written files; returns {"metrics": {...}, "figures": {"x.png": fig}}
    extras: Callable[[list[Path]], dict[str, Any]] | None = None
    input_name: str | None = None
    input_manifest: Path | None = None
    input_digest: str | None = None
    # optional (id, value) rows joined to the documents during the write; see stage_output.write_stage
    side: ray.data.Dataset | None = None
    merge: Callable | None = None


@dataclass
class StageResult:
    stage: str
    out_dir: Path
    manifest_path: Path
    manifest: dict
    seconds: float
    run_id: str
    metrics: dict[str, float] = field(default_factory=dict)

    @property
    def kept_files(self) -> list[Path]:
        return kept_files(self.manifest, self.out_dir)

    @property
    def counts(self) -> dict:
        return self.manifest["counts"]


def check_accounting(stage: str, counts: dict) -> None:
    total = counts["kept"] + sum(counts["dropped"].values()) + sum(counts["quarantined"].values())
    if total != counts["in"]:
        raise AccountingError(
            f"stage {stage}: {counts['in']} docs in but {counts['kept']} kept + "
            f"{sum(counts['dropped'].values())} dropped + {sum(counts['quarantined'].values())} quarantined = {total}"
        )


def run_stage(
    stage: str,
    index: int,
    workdir: Path,
    params: dict,
    plan_fn: Callable[[], StagePlan],
    shards: int,
    fmt: str,
) -> StageResult:
    out_dir = workdir / "stages" / f"{index:02d}_{stage}"
    if out_dir.exists():
        import shutil

        shutil.rmtree(out_dir)  # a stage's output is rewritten whole, never mixed with a previous run's
    out_dir.mkdir(parents=True)
    with tracking.stage_run(stage, params) as run:
        start = time.perf_counter()
        plan = plan_fn()
        if plan.input_manifest is not None:
            tracking.log_input_manifest(plan.input_name or stage, plan.input_manifest, plan.input_digest)
        written = [] if plan.dataset is None else write_stage(plan.dataset, out_dir, shards, fmt, plan.side, plan.merge)
        merged = merge_results(written)
        extras = plan.extras([out_dir / f["path"] for f in merged["files"]]) if plan.extras else {}
        seconds = time.perf_counter() - start

        docs_in = plan.docs_in
        if docs_in is None:
            docs_in = merged["kept"] + sum(merged["dropped"].values()) + sum(merged["quarantined"].values())
        counts = {
            "in": docs_in,
            "kept": merged["kept"],
            "dropped": merged["dropped"],
            "quarantined": merged["quarantined"],
        }
        manifest = build_manifest(stage, merged["files"], counts, params)
        manifest_path = out_dir / "manifest.json"
        write_manifest(manifest, manifest_path)
        check_accounting(stage, counts)

        metrics = {
            "docs_in": docs_in,
            "docs_kept": merged["kept"],
            "docs_dropped": sum(merged["dropped"].values()),
            "docs_quarantined": sum(merged["quarantined"].values()),
            "bytes_out": sum(f["bytes"] for f in merged["files"]),
            "text_bytes_kept": merged["text_bytes_kept"],
            "wall_seconds": seconds,
            "docs_per_second": docs_in / seconds if seconds > 0 else 0.0,
            **{f"dropped.{r}": n for r, n in merged["dropped"].items()},
            **{f"quarantined.{r.split(':', 1)[1]}": n for r, n in merged["quarantined"].items()},
            **extras.get("metrics", {}),
        }
        mlflow.log_metrics({_metric_key(k): float(v) for k, v in metrics.items()})
        tracking.log_output_manifest(manifest_path, manifest["digest"])
        figures = {
            "plots/length_histogram.png": plots.length_histogram(
                stage, merged["length_hist_kept"], merged["length_hist_dropped"]
            ),
            "plots/reasons.png": plots.reasons_bar(stage, merged["dropped"], merged["quarantined"]),
            **extras.get("figures", {}),
        }
        for name, fig in figures.items():
            mlflow.log_figure(fig, name)
            plots.close(fig)
        return StageResult(stage, out_dir, manifest_path, manifest, seconds, run.info.run_id, metrics)


def _metric_key(key: str) -> str:
    # MLflow metric names allow alphanumerics, _ - . space / : only
    return "".join(c if c.isalnum() or c in "_-./ :" else "_" for c in key)
