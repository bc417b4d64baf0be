"""What a user sees of each stage, whatever pass it ran in: its manifest (counts, dropped files, kept files
where they were written), the accounting check, and one MLflow child run with its metrics and plots. All
MLflow run creation of the pipeline is here."""

from __future__ import annotations

import dataclasses
import os
import time
from collections import Counter

import mlflow
import numpy as np

from orchestration.runtime import plots, tracking
from orchestration.corpus.dedup_index import finish_index, load_previous
from orchestration.runtime.summary import trimmed_note
from pathlib import Path

from pipelines import storage
from pipelines.manifest import build_manifest, mlflow_digest, write_manifest
from pipelines.stages import Plot, Report, Stage
from pipelines.token_shards import build_token_manifest, number_token_files, write_token_manifest

TOKENIZER_SHA_TAG = "tokenmill.tokenizer_sha256"


class AccountingError(RuntimeError):
    """docs in != kept + dropped + quarantined, or a stage's input != the previous stage's kept."""


def check_accounting(stage: str, counts: dict, upstream_kept: int | None = None) -> None:
    total = counts["kept"] + sum(counts["dropped"].values()) + sum(counts["quarantined"].values())
    if total != counts["in"]:
        raise AccountingError(
            f"stage {stage}: {counts['in']} docs in but {counts['kept']} kept + "
            f"{sum(counts['dropped'].values())} dropped + {sum(counts['quarantined'].values())} quarantined = {total}")
    if upstream_kept is not None and upstream_kept != counts["in"]:
        raise AccountingError(f"stage {stage}: {counts['in']} docs in, but the stage before kept {upstream_kept}")


def _merge(run: dict, stage: str, kept_at_end: bool) -> dict:
    c = {"in": 0, "kept": 0, "text_bytes_kept": 0, "seconds": 0.0}
    dropped, quarantined, corrupt, trimmed, extras = Counter(), Counter(), Counter(), Counter(), []
    hk = hd = None
    files = []
    for task in run["results"]:
        for r in task["shards"]:
            s = r["stages"][stage]
            for k in c:
                c[k] += s[k]
            dropped.update(s["dropped"])
            quarantined.update(s["quarantined"])
            corrupt.update(s.get("corrupt", {}))
            trimmed.update(s.get("extra", {}).get("trimmed", {}))
            hk = np.array(s["hist_kept"]) + (0 if hk is None else hk)
            hd = np.array(s["hist_dropped"]) + (0 if hd is None else hd)
            if s.get("dropped_file"):
                files.append({**s["dropped_file"], "kind": "dropped"})
            kept = r["docs_file"] if kept_at_end else s.get("kept_file")
            if kept:
                files.append({**kept, "kind": "kept"})
            extras.append((r["shard"], s.get("extra", {})))
    return {**c, "dropped": dict(sorted(dropped.items())), "quarantined": dict(sorted(quarantined.items())),
            "hist_kept": [] if hk is None else hk.tolist(), "hist_dropped": [] if hd is None else hd.tolist(),
            "corrupt": dict(corrupt), "trimmed": dict(sorted(trimmed.items())), "files": files, "extras": extras}


def _draw(plot: Plot):
    """A stage's plot (pipelines.stages.base.Plot: data) as a figure."""
    if plot.edges is None:
        return plots.counts_bar(plot.title, plot.xlabel, {int(k): v for k, v in plot.counts.items()})
    fig = plots.binned_bar(plot.title, plot.xlabel, np.asarray(plot.edges), np.asarray(plot.counts))
    if plot.marker is not None:
        fig.axes[0].axvline(plot.marker, color="red")
    return fig


def _log_stage(st: Stage, params: dict, m: dict, manifest: dict, manifest_path: storage.StoragePath, prev: dict | None,
               raw: tuple | None, report: Report, wall: float, state: dict, previous: list) -> str:
    stage = st.name
    with tracking.stage_run(stage, params) as run:
        if raw is not None:
            tracking.log_raw_input(*raw)
        if prev is not None:
            tracking.log_input_manifest(prev["stage"], prev["manifest"], prev["output_digest"])
        for name, path, sha in report.models:  # a model by its sha256: lineage finds the run that trained it
            tracking.log_raw_input(name, str(storage.path(path).resolve()), sha)
        if st.dedup_index:
            for old in previous:  # the earlier runs' dedup indexes this stage deduplicated against
                tracking.log_input_manifest(f"dedup_index:{old['mlflow_run_id']}", storage.path(old["manifest_path"]),
                                            old["digest"], context="dedup_index")
        if state.get("index"):  # this run's index, written after the last dedup step
            tracking.log_artifact(state["index"]["index_manifest"], "dedup_index")
            mlflow.set_tags({"tokenmill.dedup_index": str(storage.path(state["index"]["index_manifest"]).parent),
                             "tokenmill.dedup_index_digest": state["index"]["index_digest"]})
        metrics = {
            "docs_in": m["in"], "docs_kept": m["kept"], "docs_dropped": sum(m["dropped"].values()),
            "docs_quarantined": sum(m["quarantined"].values()),
            "bytes_out": sum(f["bytes"] for f in manifest["files"]), "text_bytes_kept": m["text_bytes_kept"],
            "cpu_seconds": m["seconds"], "pass_wall_seconds": wall,
            "docs_per_cpu_second": m["in"] / m["seconds"] if m["seconds"] > 0 else 0.0,
            **{f"dropped.{r}": n for r, n in m["dropped"].items()},
            **{f"quarantined.{r.split(':', 1)[1]}": n for r, n in m["quarantined"].items()},
            **({"records_lost_to_corruption": m["corrupt"]["records_lost"], "corrupt_spans": m["corrupt"]["spans"],
                "corrupt_spans_uncounted": m["corrupt"]["spans_uncounted"], "corrupt_bytes": m["corrupt"]["bytes"]}
               if m["corrupt"].get("spans") else {}),
            **{f"trimmed.{k}": n for k, n in m["trimmed"].items()},  # text cut from kept documents
            **report.metrics,
        }
        if report.tags:
            mlflow.set_tags(report.tags)
        mlflow.log_metrics({_metric_key(k): float(v) for k, v in metrics.items()})
        tracking.log_output_manifest(manifest_path, manifest["digest"])
        figs = {"plots/length_histogram.png": plots.length_histogram(
                    stage, m["hist_kept"], m["hist_dropped"], trimmed_note(m["trimmed"], m["text_bytes_kept"])),
                "plots/reasons.png": plots.reasons_bar(stage, m["dropped"], m["quarantined"]),
                **{p.file: _draw(p) for p in report.plots}}
        for name, fig in figs.items():
            mlflow.log_figure(fig, name)
            plots.close(fig)
        return run.info.run_id


# how often a running pass logs its progress into the pipeline's run (and once when it ends): a pass of 100k
# shards is hours, and a point every half minute is a few hundred rows in the store
PROGRESS_EVERY_S = float(os.environ.get("TOKENMILL_PROGRESS_EVERY_S", "30"))


class PassProgress:
    """A pass's progress as metrics of the pipeline's run while the pass runs (the stage runs only appear once
    every pass is done): `progress.passN.` + tasks_done, tasks_total, shards_done, docs_in (into its first stage),
    docs_kept (by its last), docs_per_s, eta_s; the step is the number of tasks done. Readable in the UI and with
    mlflow.get_metric_history while a multi-day run goes on."""

    def __init__(self, index: int, tasks_total: int, first: str | None, last: str | None):
        self.prefix, self.total, self.first, self.last = f"progress.pass{index}.", tasks_total, first, last
        self.done = self.shards = self.docs_in = self.docs_kept = 0
        self.t0 = self.logged_at = time.perf_counter()

    def task_done(self, result: dict) -> None:
        self.done += 1
        for r in result["shards"]:
            self.shards += 1
            self.docs_in += r["stages"][self.first]["in"] if self.first in r["stages"] else 0
            self.docs_kept += r["stages"][self.last]["kept"] if self.last in r["stages"] else 0
        now = time.perf_counter()
        if now - self.logged_at >= PROGRESS_EVERY_S or self.done == self.total:
            self.log(now)

    def log(self, now: float | None = None) -> None:
        now = now or time.perf_counter()
        self.logged_at = now
        secs = max(now - self.t0, 1e-9)
        eta = (self.total - self.done) * secs / self.done if self.done else float("nan")
        mlflow.log_metrics({self.prefix + k: float(v) for k, v in {
            "tasks_done": self.done, "tasks_total": self.total, "shards_done": self.shards, "docs_in": self.docs_in,
            "docs_kept": self.docs_kept, "docs_per_s": self.docs_in / secs, "eta_s": eta}.items()}, step=self.done)


def _metric_key(key: str) -> str:
    return "".join(c if c.isalnum() or c in "_-./ :" else "_" for c in key)


def _tokenizer_run(tok: dict, prev: dict, params: dict) -> str:
    with tracking.stage_run("tokenizer", params) as run:
        tracking.log_input_manifest(prev["stage"], prev["manifest"], prev["output_digest"])
        if tok.get("trained"):
            mlflow.log_metric("sample_docs", tok["sample_docs"])
            tracking.log_artifact(tok["model_path"], "tokenizer")
            tracking.log_artifact(tok["vocab_path"], "tokenizer")
        mlflow.log_metric("vocab_size", tok["vocab_size"])
        mlflow.set_tags({TOKENIZER_SHA_TAG: tok["sha256"], tracking.OUTPUT_DIGEST_TAG: mlflow_digest(tok["sha256"]),
                         tracking.OUTPUT_SHA256_TAG: tok["sha256"], tracking.GIVEN_TAG: str(not tok.get("trained")).lower()})
        return run.info.run_id


def _tokens(st: Stage, workdir: storage.StoragePath, m: dict, tok: dict, prev: dict, wall: float) -> dict:
    """The token manifest from the per-shard token files (shard name order, then file order)."""
    from pipelines.tokenizer import Tokenizer

    t = Tokenizer(tok["model_path"])
    entries = number_token_files({shard: e.get("token_files", []) for shard, e in m["extras"]})
    text_bytes = sum(e.get("text_bytes", 0) for _, e in m["extras"])
    out_dir = workdir / "tokens"
    with tracking.stage_run(st.name, {"target_shard_tokens": m["params"]["target_shard_tokens"],
                                         "tokenizer_sha256": t.sha256, "dtype": t.dtype.name}) as run:
        tracking.log_input_manifest(prev["stage"], prev["manifest"], prev["output_digest"])
        tracking.log_raw_input("tokenizer", tok["model_path"], t.sha256)
        manifest = build_token_manifest(entries, t.sha256, t.vocab_size, t.dtype.name, None,
                                        {"input_stage": prev["stage"], "input_digest": prev["output_digest"]},
                                        eos_id=t.eos_id)
        manifest["mlflow_run_id"] = run.info.run_id  # not covered by the digest: the shards are what they are
        path = out_dir / "manifest.json"
        write_token_manifest(manifest, path)
        total, docs = manifest["totals"]["tokens"], manifest["totals"]["documents"]
        secs = max(m["seconds"], 1e-9)
        mlflow.log_metrics({"documents": docs, "tokens": total, "shards": len(entries), "cpu_seconds": m["seconds"],
                            "pass_wall_seconds": wall, "tokens_per_cpu_second": total / secs,
                            "mb_per_cpu_second": text_bytes / 1e6 / secs, "tokens_per_document": total / max(docs, 1)})
        tracking.log_output_manifest(path, manifest["digest"])
        for plot in st.report([e for _, e in m["extras"]], tok).plots:
            fig = _draw(plot)
            mlflow.log_figure(fig, plot.file)
            plots.close(fig)
        return {"manifest_path": str(path), "digest": manifest["digest"], "tokens": total, "documents": docs,
                "shards": len(entries), "seconds": m["seconds"], "wall_seconds": wall, "run_id": run.info.run_id,
                "tokens_per_second": total / secs, "mb_per_second": text_bytes / 1e6 / secs}


def _log_lineage_graph(last_run_id: str, echo) -> None:
    """lineage/lineage.png and .html on the parent run, walked from its last stage run (all finished now)."""
    from orchestration.lineage import walk as lineage, graph as lineage_graph

    try:
        lineage_graph.log_to_mlflow(lineage.build(last_run_id))
    except Exception as exc:  # noqa: BLE001  (a drawing problem must not fail a finished pipeline; it is said)
        echo(f"tokenmill: warning: the lineage graph was not drawn ({type(exc).__name__}: {exc}); "
             f"`tokenmill lineage {last_run_id}` prints the same lineage")


def record_stages(cfg, workdir: storage.StoragePath, runs: list[dict], state: dict, steps: dict, raw_path: storage.StoragePath, raw_digest: str,
                  uri: str, start: float, echo=print, startup: dict | None = None) -> dict:
    """Every stage's manifest, accounting check and MLflow child run, under the pipeline's run (active), once the
    passes are done; then the summary."""
    from orchestration.runtime.summary import format_table, write_summary

    stages_out, extra = [], {}
    prev = None
    previous = load_previous(cfg)
    parent = mlflow.active_run()  # the pipeline's run, opened before the passes (they log progress into it)
    tracking.log_artifact(raw_path)
    for st in (s for r in runs for s in r["pass"].apply if s.dedup_index):
        if (state.get(st.name) or {}).get("index"):
            finish_index(state[st.name]["index"]["index_manifest"], parent.info.run_id)
    for run in runs:
        p = run["pass"]
        for i, st in enumerate(p.apply):
            at_end = i == len(p.apply) - 1 and not p.sink
            m = _merge(run, st.name, at_end)
            m["params"] = st.params()
            check_accounting(st.name, m, None if prev is None else prev["kept"])
            if st.sink:  # tokenize: the tokenizer's run, then the token shards' run
                tok = state[st.name]
                tok_params = {**dataclasses.asdict(st.tokenizer_cfg)}
                tok_run = _tokenizer_run(tok, prev, tok_params)
                extra["tokenizer"] = {"model_path": tok["model_path"], "sha256": tok["sha256"],
                                      "vocab_size": tok["vocab_size"], "run_id": tok_run}
                extra["tokens"] = _tokens(st, workdir, m, tok, prev, run["wall"])
                t = extra["tokens"]
                echo(f"tokenmill:   tokenize: {t['documents']} documents, {t['tokens']} tokens in {t['shards']} "
                     f"shards, {t['mb_per_second']:.2f} MB/s per CPU")
                continue
            out_dir = workdir / "stages" / st.name
            counts = {k: m[k] for k in ("in", "kept", "dropped", "quarantined")}
            files = [{**f, "path": str(Path(f["path"]))} for f in m["files"]]
            params = {**m["params"], "input_digest": prev["output_digest"] if prev else raw_digest}
            manifest = build_manifest(st.name, files, counts, params)
            path = out_dir / "manifest.json"  # its file paths are relative to the workdir
            write_manifest(manifest, path)
            raw = ("raw:" + ",".join(i.name for i in cfg.inputs), str(raw_path), raw_digest) if prev is None else None
            report = st.report([e for _, e in m["extras"]], state.get(st.name) or {})
            run_id = _log_stage(st, m["params"], m, manifest, path, prev, raw, report, run["wall"],
                                state.get(st.name, {}), previous)
            if report.tags:  # the pipeline's run (active here) carries them too
                mlflow.set_tags(report.tags)
            entry = {"stage": st.name, "docs_in": m["in"], "kept": m["kept"], "dropped": m["dropped"],
                     "quarantined": m["quarantined"], "corrupt": m["corrupt"], "trimmed": m["trimmed"], "mb_out": round(sum(f["bytes"] for f in files) / 1e6, 3),
                     "mb_text_kept": round(m["text_bytes_kept"] / 1e6, 3), "seconds": round(m["seconds"], 2),
                     "docs_per_second": round(m["in"] / m["seconds"], 1) if m["seconds"] > 0 else 0.0,
                     "output_digest": manifest["digest"], "manifest": str(path), "run_id": run_id,
                     "pass": p.index, "kept_files": [f["path"] for f in files if f["kind"] == "kept"]}
            stages_out.append(entry)
            prev = {**entry, "stage": st.name}
    total = time.perf_counter() - start
    final = stages_out[-1]
    summary = {
        "pipeline": cfg.name, "workdir": str(workdir), "mlflow_tracking_uri": uri,
        "mlflow_run_id": parent.info.run_id, "raw_files_digest": raw_digest,
        "final_manifest": extra.get("tokens", {}).get("manifest_path", final["manifest"]),
        "final_digest": extra.get("tokens", {}).get("digest", final["output_digest"]),
        "seconds": round(total, 2), "stages": stages_out,
        "passes": [{"pass": r["pass"].index, "stages": [s.name for s in r["pass"].apply], "tasks": r["tasks"],
                    "skipped": r["skipped"], "collected": r["collected"], "seconds": round(r["wall"], 2),
                    "peak_rss_mb": round(r["peak_rss_mb"], 1)} for r in runs],
        "global_steps": steps, "startup_seconds": startup or {}, **extra,
    }
    write_summary(summary, workdir / "summary.json")
    tracking.log_artifact(workdir / "summary.json")
    mlflow.log_metric("wall_seconds", total)
    mlflow.set_tags({"tokenmill.final_digest": summary["final_digest"]})
    _log_lineage_graph(extra.get("tokens", {}).get("run_id", final["run_id"]), echo)
    echo(format_table(summary))
    echo(f"tokenmill: wrote {workdir / 'summary.json'} in {total:.1f}s; MLflow run {summary['mlflow_run_id']}")
    return summary

