"""The end-of-run summary: per stage docs in, kept, dropped by reason, quarantined, MB, CPU seconds
(summed over the stage's shard tasks: stages fused into one pass share its wall time)."""

from __future__ import annotations

import json
from pathlib import Path


def format_table(summary: dict) -> str:
    head = ["stage", "pass", "docs in", "kept", "dropped", "quarantined", "MB text", "CPU s", "docs/CPU s"]
    rows = []
    for s in summary["stages"]:
        rows.append([s["stage"], str(s.get("pass", "")), str(s["docs_in"]), str(s["kept"]),
                     str(sum(s["dropped"].values())), str(sum(s["quarantined"].values())), f"{s['mb_text_kept']:.2f}", f"{s['seconds']:.1f}",
                     f"{s['docs_per_second']:.0f}"])
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(head)]
    fmt = lambda cells: "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))  # noqa: E731
    lines = [fmt(head), fmt(["-" * w for w in widths])] + [fmt(r) for r in rows]
    for s in summary["stages"]:
        reasons = {**s["dropped"], **s["quarantined"]}
        if reasons:
            lines.append(f"  {s['stage']}: " + ", ".join(f"{k}={v}" for k, v in sorted(reasons.items(), key=lambda kv: -kv[1])))
        if (c := s.get("corrupt") or {}).get("spans"):
            uncounted = f", {c['spans_uncounted']} of them not countable" if c["spans_uncounted"] else ""
            lines.append(f"  {s['stage']}: records lost to corruption: {c['records_lost']} in {c['spans']} damaged "
                         f"spans ({c['bytes'] / 1e6:.3f} MB compressed{uncounted}); each is a corrupt_stream row")
    return "\n".join(lines)


def write_summary(summary: dict, path: Path) -> None:
    path.write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
