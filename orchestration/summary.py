"""The end-of-run summary: per stage docs in, kept, dropped by reason, quarantined, MB, seconds."""

from __future__ import annotations

import json
from pathlib import Path

from orchestration.stage_runner import StageResult


def summarize(results: list[StageResult], extra: dict) -> dict:
    stages = []
    for r in results:
        c = r.counts
        stages.append(
            {
                "stage": r.stage,
                "docs_in": c["in"],
                "kept": c["kept"],
                "dropped": c["dropped"],
                "quarantined": c["quarantined"],
                "mb_out": round(sum(f["bytes"] for f in r.manifest["files"]) / 1e6, 3),
                "mb_text_kept": round(r.metrics["text_bytes_kept"] / 1e6, 3),
                "seconds": round(r.seconds, 2),
                "docs_per_second": round(r.metrics["docs_per_second"], 1),
                "output_digest": r.manifest["digest"],
                "manifest": str(r.manifest_path),
                "run_id": r.run_id,
            }
        )
    return {**extra, "stages": stages}


def format_table(summary: dict) -> str:
    head = ["stage", "docs in", "kept", "dropped", "quarantined", "MB text", "seconds", "docs/s"]
    rows = []
    for s in summary["stages"]:
        rows.append([s["stage"], str(s["docs_in"]), str(s["kept"]), str(sum(s["dropped"].values())),
                     str(sum(s["quarantined"].values())), f"{s['mb_text_kept']:.2f}", f"{s['seconds']:.1f}",
                     f"{s['docs_per_second']:.0f}"])
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(head)]
    fmt = lambda cells: "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))  # noqa: E731
    lines = [fmt(head), fmt(["-" * w for w in widths])] + [fmt(r) for r in rows]
    for s in summary["stages"]:
        reasons = {**s["dropped"], **s["quarantined"]}
        if reasons:
            lines.append(f"  {s['stage']}: " + ", ".join(f"{k}={v}" for k, v in sorted(reasons.items(), key=lambda kv: -kv[1])))
    return "\n".join(lines)


def write_summary(summary: dict, path: Path) -> None:
    path.write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
