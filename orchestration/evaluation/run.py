"""`tokenmill eval MODEL_OR_CHECKPOINT --suite FILE`: the suite's numbers for one model, as an MLflow run.

The run (kind "eval") logs every set's metrics (`eval.<set>.bpb`, `eval.<task>.acc`, ...) and the summary
`eval.mean_bpb`; the table as `eval/results.json` and `eval/results.md`; each evaluation file as an input dataset
(its sha256) and the model as an input whose digest is the export's (or checkpoint's) sha256, so `tokenmill lineage
EVAL_RUN_ID` walks from the numbers to the training run and on to the shards and raw files.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

from pipelines import storage
from pipelines.errors import UsageError
from pipelines.evalsets import (EvalSuiteConfig, prepare_suite, read_suite, suite_digest, suite_files,
                                suite_metrics)
from pipelines.hashing import sha256_file
from pipelines.typed_config import from_dict

EVAL_KIND = "eval"
SUITE_DIGEST_TAG = "tokenmill.eval.suite_digest"
MODEL_TAG = "tokenmill.eval.model"


def load_suite(path: str | Path, overrides: list[str] = ()) -> EvalSuiteConfig:
    from orchestration.config.schema import load_yaml_config

    return from_dict(EvalSuiteConfig, load_yaml_config(path, overrides, EvalSuiteConfig))


def model_digest(path) -> tuple[str, str]:
    """(kind, sha256) of what is evaluated: an export's weights file, or a checkpoint's digest."""
    from model.checkpoint import STATE_FILE
    from model.export import WEIGHTS

    path = storage.path(path)
    if (path / WEIGHTS).is_file():
        return "export", sha256_file(path / WEIGHTS)
    if (path / STATE_FILE).is_file():
        from model.checkpoint import checkpoint_digest

        return "checkpoint", checkpoint_digest(path)
    raise UsageError(f"{path}: neither a model export nor a Ray Train checkpoint")


def training_run_of(path, kind: str, sha: str) -> str | None:
    """The training run that made the model: a checkpoint names it; an export is found by its weights' sha256."""
    import mlflow

    from model.checkpoint import STATE_FILE

    if kind == "checkpoint":
        return json.loads((storage.path(path) / STATE_FILE).read_text()).get("mlflow_run_id")
    runs = mlflow.search_runs(search_all_experiments=True, output_format="list",
                              filter_string=f"tags.`tokenmill.export_sha256` = '{sha}'")
    return runs[0].info.run_id if runs else None


def format_table(results: dict) -> str:
    """The results as a Markdown table: one row per set, bits per byte and the task accuracies."""
    lines = ["| set | bits/byte | acc | acc_norm | acc_centered | n |", "|---|---:|---:|---:|---:|---:|"]
    for name, r in results.items():
        if name == "mean_bpb":
            continue
        if "acc" in r:
            lines.append(f"| {name} | {r['bpb']:.4f} | {r['acc']:.4f} | {r['acc_norm']:.4f} | "
                         f"{r['acc_centered']:+.4f} | {r['items']} |")
        else:
            lines.append(f"| {name} | {r['bpb']:.4f} |  |  |  | {r['documents']} docs |")
    lines.append(f"| **mean** | **{results['mean_bpb']:.4f}** |  |  |  |  |")
    return "\n".join(lines)


def run_eval(model_path: str, suite_path: str, overrides: list[str] = (), experiment: str = "tokenmill-eval",
             echo=print) -> dict:
    import mlflow

    from model.evaluate import Request, score
    from orchestration.lineage.walk import TRAINED_BY_TAG
    from orchestration.runtime import tracking
    from orchestration.train.generate import load_for_sampling

    suite = load_suite(suite_path, overrides)
    files = suite_files(suite)
    digest = suite_digest(suite, files)
    read = read_suite(suite)  # every file read and checked before the model is loaded
    try:
        model, tok = load_for_sampling(model_path)
    except FileNotFoundError as exc:
        raise UsageError(str(exc)) from None
    seq_len = suite.seq_len or model.cfg.max_seq_len
    if seq_len > model.cfg.max_seq_len:
        raise UsageError(f"{suite_path}: seq_len {seq_len} exceeds the model's max_seq_len {model.cfg.max_seq_len}")
    if tok.vocab_size != model.cfg.vocab_size:
        raise UsageError(f"the tokenizer has {tok.vocab_size} pieces but the model {model.cfg.vocab_size}: they do not "
                         "belong together")
    prepared = prepare_suite(suite, tok, seq_len, read)
    kind, sha = model_digest(model_path)
    tracking.setup(experiment)
    trained_by = training_run_of(model_path, kind, sha)
    with tracking.run(run_name=f"eval:{suite.name}", tags={
            tracking.KIND_TAG: EVAL_KIND, tracking.CODE_VERSION_TAG: tracking.code_version(),
            SUITE_DIGEST_TAG: digest, MODEL_TAG: str(model_path), **({TRAINED_BY_TAG: trained_by}
                                                                     if trained_by else {})}) as active:
        tracking.log_params({"suite": dataclasses.asdict(suite), "seq_len": seq_len, "requests": len(prepared.requests),
                             "model_kind": kind})
        tracking.log_raw_input(f"model:{kind}", str(model_path), sha)
        for f in files:
            tracking.log_raw_input(f"eval:{f['name']}", f["path"], f["sha256"])
        start = time.perf_counter()
        scores = score(model, [Request(*r) for r in prepared.requests], seq_len, suite.batch_size)
        wall = time.perf_counter() - start
        results = suite_metrics(prepared, scores)
        tokens = sum(s.tokens for s in scores)
        mlflow.log_metrics({f"eval.{name}.{k}": float(v) for name, r in results.items() if name != "mean_bpb"
                            for k, v in r.items()})
        mlflow.log_metrics({"eval.mean_bpb": results["mean_bpb"], "eval.seconds": wall,
                            "eval.requests_per_s": len(scores) / max(wall, 1e-9), "eval.tokens_scored": tokens})
        table = format_table(results)
        mlflow.log_dict({"suite": suite.name, "suite_digest": digest, "model": str(model_path), "model_sha256": sha,
                         "results": results}, "eval/results.json")
        mlflow.log_text(table + "\n", "eval/results.md")
        echo(table)
        echo(f"tokenmill: evaluated {model_path} on suite {suite.name!r} ({len(prepared.requests)} requests, "
             f"{tokens:,} tokens scored in {wall:.1f}s); MLflow run {active.info.run_id}")
        return {"run_id": active.info.run_id, "results": results, "suite_digest": digest, "model_sha256": sha,
                "training_run_id": trained_by, "seconds": wall}
