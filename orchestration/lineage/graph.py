"""The lineage graph a pipeline's parent MLflow run carries: `lineage/lineage.png` and `lineage/lineage.html`.

Drawn from the same walk as `tokenmill lineage` (lineage.build, from the pipeline's last run): one box per
run (stage, short run id, documents in/kept or tokens), one box per group of raw files (input name, files,
bytes), the final manifest as the sink, and an arrow per dataset a run read, labelled with its name and
digest. Runs are placed left to right by their longest distance from the raw files.

The HTML page is self-contained (no script, no stylesheet or font fetched: MLflow's artifact viewer and a
mail attachment show it alike): the same figure as inline SVG, whose boxes link to a table of every run
(id, stage, status, start, code version, parameters, counts, output digest) and every raw file.
"""

from __future__ import annotations

import html
import io
from collections import defaultdict

from orchestration.runtime import plots

plt = plots.plt


def _graph(tree: dict) -> tuple[dict[str, dict], list[tuple[str, str, str]]]:
    """(nodes by key, edges (from, to, label)); a run's key is its run id, a raw group's "raw:<name>"."""
    nodes: dict[str, dict] = {}
    edges: list[tuple[str, str, str]] = []

    def visit(node: dict) -> None:
        rid = node["run_id"]
        if rid in nodes:
            return
        nodes[rid] = {"kind": "run", "node": node}
        for inp in node["inputs"]:
            label = f"{inp['name'][:28]}\n{inp['digest'][:8]}"
            if "produced_by" in inp:
                src = inp["produced_by"]
                if src.get("see_above"):  # expanded elsewhere in the tree: the edge still counts
                    edges.append((src["run_id"], rid, label))
                    continue
                visit(src)
                edges.append((src["run_id"], rid, label))
            else:
                key = f"raw:{inp['name']}"
                files = inp.get("files") or []
                nodes.setdefault(key, {"kind": "raw", "name": inp["name"], "source": inp.get("source"),
                                       "files": files, "bytes": sum(f["bytes"] for f in files)})
                edges.append((key, rid, f"{inp['context'] or 'input'}\n{inp['digest'][:8]}"))

    visit(tree["lineage"])
    top = tree["lineage"]
    if top.get("output_digest"):
        nodes["output"] = {"kind": "output", "digest": top["output_digest"]}
        edges.append((top["run_id"], "output", ""))
    return nodes, edges


def _layers(nodes: dict, edges: list) -> dict[str, int]:
    parents = defaultdict(list)
    for a, b, _ in edges:
        parents[b].append(a)
    depth: dict[str, int] = {}

    def d(key: str) -> int:
        if key not in depth:
            depth[key] = 0  # guards a cycle (none in a lineage)
            depth[key] = 1 + max((d(p) for p in parents[key]), default=-1)
        return depth[key]

    for key in nodes:
        d(key)
    return depth


def _label(key: str, n: dict) -> str:
    if n["kind"] == "raw":
        size = f"{n['bytes'] / 1e6:.2f} MB" if n["files"] else ""
        return f"{n['name']}\n{len(n['files'])} raw files {size}".strip() if n["files"] else f"{n['name']}\n(file)"
    if n["kind"] == "output":
        return f"final output\n{n['digest'][:12]}"
    node = n["node"]
    m = node["metrics"]
    if "docs_in" in m:
        counts = f"{m['docs_in']:,.0f} in, {m.get('docs_kept', 0):,.0f} kept"
    elif "tokens" in m:
        counts = f"{m['tokens']:,.0f} tokens"
    elif "loss" in m:
        counts = f"loss {m['loss']:.3f}"
    else:
        counts = ""
    return f"{node['stage'] or node['name']}\nrun {node['run_id'][:8]}\n{counts}".strip()


def figure(tree: dict):
    nodes, edges = _graph(tree)
    depth = _layers(nodes, edges)
    columns: dict[int, list[str]] = defaultdict(list)
    for key in nodes:
        columns[depth[key]].append(key)
    pos = {}
    for x, keys in columns.items():
        for i, key in enumerate(sorted(keys, key=lambda k: (nodes[k]["kind"] != "run", k))):
            pos[key] = (x * 3.0, -(i - (len(keys) - 1) / 2) * 1.6)
    width = 3.0 * (max(columns) + 1)
    height = 1.6 * max(len(v) for v in columns.values()) + 3.2
    fig, ax = plt.subplots(figsize=(max(6.0, width * 0.75), max(3.0, height * 0.75)))
    for a, b, label in edges:
        (x0, y0), (x1, y1) = pos[a], pos[b]
        skip = depth[b] - depth[a] > 1  # an edge over a column arcs above the boxes in between
        ax.annotate("", xy=(x1 - 0.95, y1), xytext=(x0 + 0.95, y0),
                    arrowprops={"arrowstyle": "->", "color": "#555555", "lw": 1.0,
                                "connectionstyle": f"arc3,rad={-0.3 if skip else 0}"})
        if label:
            lift = 0.3 * (x1 - x0 - 1.9) + 0.15 if skip else 0.15
            ax.text((x0 + x1) / 2, (y0 + y1) / 2 + lift, label, fontsize=7, ha="center", va="bottom",
                    color="#333333")
    colours = {"run": "#dbe9f6", "raw": "#f6ead7", "output": "#dff3df"}
    for key, n in nodes.items():
        x, y = pos[key]
        t = ax.text(x, y, _label(key, n), ha="center", va="center", fontsize=8,
                    bbox={"boxstyle": "round,pad=0.4", "fc": colours[n["kind"]], "ec": "#444444"})
        t.set_url(f"#{_anchor(key)}")  # in the SVG of the HTML page: a link to the run's row
    ax.set_xlim(-1.3, width - 1.7)
    ax.set_ylim(-height / 2, height / 2)
    ax.axis("off")
    start = tree["lineage"]
    ax.set_title(f"lineage of {start['stage'] or start['name']} run {start['run_id'][:8]} "
                 f"(tokenmill lineage {start['run_id']})", fontsize=8)
    fig.tight_layout()
    return fig


def _anchor(key: str) -> str:
    return "n-" + "".join(c if c.isalnum() else "-" for c in key)


def html_page(tree: dict, fig) -> str:
    buf = io.StringIO()
    fig.savefig(buf, format="svg")
    svg = buf.getvalue()
    svg = svg[svg.index("<svg"):]  # drop the XML prolog and doctype: inline SVG in HTML5
    nodes, _ = _graph(tree)
    e = html.escape
    rows = []
    for key, n in nodes.items():
        if n["kind"] != "run":
            continue
        node = n["node"]
        params = ", ".join(f"{k}={v}" for k, v in node["params"].items())
        counts = ", ".join(f"{k}={v:g}" for k, v in node["metrics"].items())
        rows.append(f"<tr id='{_anchor(key)}'><td>{e(node['stage'] or node['name'])}</td><td><code>{e(key)}</code></td>"
                    f"<td>{e(node['status'])}</td><td>{e(str(node['start_time']))}</td>"
                    f"<td><code>{e(str(node['code_version'] or '?')[:12])}</code></td><td>{e(params)}</td>"
                    f"<td>{e(counts)}</td><td><code>{e(str(node['output_digest'] or ''))}</code></td></tr>")
    raw_rows = []
    for key, n in nodes.items():
        if n["kind"] != "raw":
            continue
        raw_rows.append(f"<tr id='{_anchor(key)}'><th colspan='3'>{e(n['name'])} ({len(n['files'])} files; "
                        f"{e(str(n['source']))})</th></tr>")
        raw_rows += [f"<tr><td>{e(f['path'])}</td><td>{f['bytes']:,}</td><td><code>{e(f['sha256'])}</code></td></tr>"
                     for f in n["files"]]
    start = tree["lineage"]
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>tokenmill lineage {e(start['run_id'])}</title>
<style>body{{font:13px sans-serif;margin:1em}} table{{border-collapse:collapse;margin:1em 0}}
td,th{{border:1px solid #ccc;padding:2px 6px;text-align:left;vertical-align:top}} tr:target{{background:#ffd}}
svg{{max-width:100%;height:auto}}</style></head><body>
<h1>Lineage of {e(start['stage'] or start['name'])} run <code>{e(start['run_id'])}</code></h1>
<p>Walked from MLflow by <code>tokenmill lineage {e(start['run_id'])}</code>; click a box for its run.</p>
{svg}
<h2>Runs</h2>
<table><tr><th>stage</th><th>run id</th><th>status</th><th>start (UTC)</th><th>code</th><th>parameters</th>
<th>counts</th><th>output digest</th></tr>
{''.join(rows)}
</table>
<h2>Raw inputs</h2>
<table><tr><th>path</th><th>bytes</th><th>sha256</th></tr>
{''.join(raw_rows)}
</table>
</body></html>
"""


def log_to_mlflow(tree: dict) -> None:
    """Log the graph as lineage/lineage.png and lineage/lineage.html to the active MLflow run."""
    import mlflow

    fig = figure(tree)
    try:
        mlflow.log_figure(fig, "lineage/lineage.png")
        mlflow.log_text(html_page(tree, fig), "lineage/lineage.html")
    finally:
        plots.close(fig)
