"""The corpus pipeline: ingest -> extract -> filter -> exact dedup -> MinHash, each stage an MLflow run."""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import mlflow

from orchestration import tracking
from orchestration.pipeline_config import PipelineConfig
from orchestration.ray_runtime import init_ray
from orchestration.stage_runner import StagePlan, StageResult, run_stage
from orchestration.stages import exact_dedup, extract, filter as filter_stage, ingest, minhash, quality
from orchestration.stages import tokenize, tokenizer_train
from pipelines.readers import list_inputs
from orchestration.summary import format_table, summarize, write_summary


def run_pipeline(cfg: PipelineConfig, workdir: Path, echo=print) -> dict:
    workdir = Path(workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    for inp in cfg.inputs:  # a wrong path fails here, before Ray and MLflow start
        if inp.format != "hf":
            list_inputs(inp.paths)
    resources = init_ray(cfg.ray.num_cpus)
    uri = tracking.setup(cfg.mlflow.experiment)
    echo(f"tokenmill: Ray with {resources.get('CPU', 0):g} CPUs; MLflow store {uri}")
    raw = dataclasses.asdict(cfg)
    out, batch = cfg.output, cfg.ray.read_block_docs
    results: list[StageResult] = []
    start = time.perf_counter()

    def stage(name: str, params: dict, plan_fn) -> StageResult:
        echo(f"tokenmill: stage {len(results)} {name} ...")
        if results and results[-1].counts["kept"] == 0:  # nothing left: record an empty stage, run nothing
            p = results[-1]
            plan_fn = lambda: StagePlan(None, 0, None, p.stage, p.manifest_path, p.manifest["digest"])  # noqa: E731
        r = run_stage(name, len(results), workdir, params, plan_fn, out.shards, out.format)
        c = r.counts
        echo(f"tokenmill:   {c['in']} in, {c['kept']} kept, {sum(c['dropped'].values())} dropped, "
             f"{sum(c['quarantined'].values())} quarantined in {r.seconds:.1f}s")
        results.append(r)
        return r

    with tracking.parent_run(cfg.name, raw, {"tokenmill.workdir": str(workdir)}) as parent:
        raw_files, raw_digest = ingest.raw_files_manifest(cfg.inputs)
        raw_path = workdir / "raw_files.json"
        raw_path.write_text(json.dumps({"digest": raw_digest, "files": raw_files}, indent=1))
        mlflow.log_artifact(str(raw_path))

        def ingest_plan():
            tracking.log_raw_input("raw:" + ",".join(i.name for i in cfg.inputs), str(raw_path), raw_digest)
            return ingest.plan(cfg.inputs, batch)

        prev = stage("ingest", {"inputs": [dataclasses.asdict(i) for i in cfg.inputs], "raw_digest": raw_digest},
                     ingest_plan)
        if cfg.extract.enabled:
            prev = stage("extract", dataclasses.asdict(cfg.extract),
                         lambda p=prev: extract.plan(p, cfg.extract, cfg.ray))
        if cfg.filter.enabled:
            prev = stage("filter", dataclasses.asdict(cfg.filter),
                         lambda p=prev: filter_stage.plan(p, cfg.filter, cfg.ray))
        if cfg.exact_dedup.enabled:
            prev = stage("exact_dedup", dataclasses.asdict(cfg.exact_dedup),
                         lambda p=prev: exact_dedup.plan(p, cfg.exact_dedup.normalize, cfg.ray))
        if cfg.minhash.enabled:
            prev = stage("minhash", dataclasses.asdict(cfg.minhash),
                         lambda p=prev: minhash.plan(p, cfg.minhash, cfg.ray))
        if cfg.quality.enabled:
            prev = stage("quality", dataclasses.asdict(cfg.quality),
                         lambda p=prev: quality.plan(p, cfg.quality, cfg.ray))
        extra = {}
        if cfg.tokenizer.enabled or cfg.tokenizer.model_path:
            echo("tokenmill: tokenizer ...")
            tok = tokenizer_train.run(prev, cfg.tokenizer, cfg.ray, workdir)
            extra["tokenizer"] = {k: tok[k] for k in ("model_path", "sha256", "vocab_size", "run_id")}
            if cfg.tokenize.enabled:
                echo("tokenmill: tokenize ...")
                extra["tokens"] = tokenize.run(prev, tok, cfg.tokenize, cfg.ray, workdir)
                t = extra["tokens"]
                echo(f"tokenmill:   {t['documents']} documents, {t['tokens']} tokens in {t['shards']} shards, "
                     f"{t['tokens_per_second']:.0f} tokens/s, {t['mb_per_second']:.2f} MB/s")
        total = time.perf_counter() - start
        summary = summarize(results, {
            "pipeline": cfg.name,
            "workdir": str(workdir),
            "mlflow_tracking_uri": uri,
            "mlflow_run_id": parent.info.run_id,
            "raw_files_digest": raw_digest,
            "final_manifest": str(prev.manifest_path),
            "final_digest": prev.manifest["digest"],
            "seconds": round(total, 2),
            **extra,
        })
        write_summary(summary, workdir / "summary.json")
        mlflow.log_artifact(str(workdir / "summary.json"))
        mlflow.log_metric("wall_seconds", total)
        mlflow.set_tags({"tokenmill.final_digest": prev.manifest["digest"]})
    echo(format_table(summary))
    echo(f"tokenmill: wrote {workdir / 'summary.json'} in {total:.1f}s; MLflow run {summary['mlflow_run_id']}")
    return summary
