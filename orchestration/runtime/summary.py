"""The end-of-run summary: per stage docs in, kept, dropped by reason, quarantined, MB, CPU seconds
(summed over the stage's shard tasks: stages fused into one pass share its wall time)."""

from __future__ import annotations

import json


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
        if note := trimmed_note(s.get("trimmed") or {}, s["mb_text_kept"] * 1e6):
            lines.append(f"  {s['stage']}: {note}")
        if (c := s.get("corrupt") or {}).get("spans"):
            uncounted = f", {c['spans_uncounted']} of them not countable" if c["spans_uncounted"] else ""
            lines.append(f"  {s['stage']}: records lost to corruption: {c['records_lost']} in {c['spans']} damaged "
                         f"spans ({c['bytes'] / 1e6:.3f} MB compressed{uncounted}); each is a corrupt_stream row")
    return "\n".join(lines)


def trimmed_note(trimmed: dict, text_bytes_kept: float) -> str:
    """What filters cut out of the documents they kept, in one line ("" when nothing), e.g.
    'text cut from kept documents: 0.12 MB of 4.50 (2.7%) in 31 documents, 210 lines (c4: too_few_words=180, ...)'."""
    cut = sum(n for k, n in trimmed.items() if k.endswith(".bytes"))
    if not cut:
        return ""
    before = text_bytes_kept + cut
    docs = sum(n for k, n in trimmed.items() if k.endswith(".docs"))
    lines = sum(n for k, n in trimmed.items() if k.endswith(".lines"))
    why = ", ".join(f"{k.replace('.lines.', ': ', 1)}={n}" for k, n in trimmed.items() if ".lines." in k)
    return (f"text cut from kept documents: {cut / 1e6:.2f} MB of {before / 1e6:.2f} ({100 * cut / before:.1f}%) "
            f"in {docs} documents, {lines} lines" + (f" ({why})" if why else ""))


def write_summary(summary: dict, path) -> None:
    from pipelines import storage

    storage.write_atomic(path, json.dumps(summary, indent=2, sort_keys=True) + "\n")
