"""`tokenmill quality train`: a fastText quality classifier from positive and negative sources named in
YAML (DCLM-style), recorded as an MLflow run with its validation metrics and the model (with sha256)."""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass, field

import mlflow
import numpy as np

from orchestration.runtime import plots, tracking
from orchestration.config.schema import load_yaml_config
from pipelines.typed_config import PathStr, from_dict
from orchestration.config.pipeline import InputConfig
from pipelines import storage
from pipelines.extract import HtmlExtractor
from pipelines.manifest import mlflow_digest
from pipelines.quality import QualityTrainConfig, split_documents, train_quality_classifier
from pipelines.readers import list_inputs, read_file


@dataclass
class SourceConfig(InputConfig):
    max_docs: int | None = 400  # documents taken from this source (evenly spread), after splitting
    split_words: list[int] | None = field(default_factory=lambda: [50, 250])  # [min, max] words per document


@dataclass
class QualityTrainJob:
    name: str
    positives: list[SourceConfig]
    negatives: list[SourceConfig]
    output: PathStr  # where the model is written
    # fastText's own lr 0.1 and 5 epochs suit ~10^5 documents; on a few hundred per source they leave every
    # score near 0.5 (tests/support/quality_recipe.py: validation F1 0.70 -> ~0.95 with these)
    train: QualityTrainConfig = field(default_factory=lambda: QualityTrainConfig(epoch=20, lr=0.5))
    experiment: str = "tokenmill-quality"


def _texts(src: SourceConfig) -> list[str]:
    texts = []
    # HTML is extracted as the pipeline's extract stage does (its defaults), so the classifier learns from
    # the same kind of text it will score
    html = HtmlExtractor() if src.format in ("html", "warc") else None
    for path, rel in list_inputs(src.paths):
        for cols in read_file(path, f"{src.name}/{rel}", src.format, src.name, text_field=src.text_field):
            texts += [t for t, r in zip(cols["text"], cols["_reason"]) if not r]
    if html is not None:
        texts = [text for text, reason in map(html.extract, texts) if not reason]
    if src.split_words:
        texts = split_documents(texts, min_words=src.split_words[0], max_words=src.split_words[1])
    if src.max_docs is not None and len(texts) > src.max_docs:
        picks = np.linspace(0, len(texts) - 1, src.max_docs).round().astype(int)
        texts = [texts[i] for i in picks]
    return texts


def _log_sources(job: QualityTrainJob, model_path) -> None:
    """The files the classifier learned from, per side, as raw inputs of the run (path, bytes, sha256 in
    MODEL.sources-<side>.json, the way a pipeline records raw_files.json): lineage goes on to them."""
    from pipelines.hashing import canonical_sha256
    from pipelines.hashing import sha256_file
    for side, sources in (("positives", job.positives), ("negatives", job.negatives)):
        files = [{"path": f"{src.name}/{rel}", "bytes": storage.path(path).stat().st_size, "sha256": sha256_file(path),
                  "location": str(path)} for src in sources for path, rel in list_inputs(src.paths)]
        files.sort(key=lambda f: f["path"])
        listed = canonical_sha256([{k: f[k] for k in ("path", "bytes", "sha256")} for f in files])
        out = model_path.with_name(f"{model_path.stem}.sources-{side}.json")
        storage.write_atomic(out, json.dumps({"digest": listed, "files": files}, indent=1))
        tracking.log_raw_input(f"raw:{side}", str(out), listed)


def run_quality_train(config_path: str, overrides: list[str], echo=print) -> dict:
    job = from_dict(QualityTrainJob, load_yaml_config(config_path, overrides, QualityTrainJob))
    cfg = job.train
    tracking.setup(job.experiment)
    with tracking.run(run_name=f"quality-train:{job.name}", tags={tracking.KIND_TAG: "quality_train",
                                                                  tracking.CODE_VERSION_TAG: tracking.code_version()}):
        tracking.log_params({"job": dataclasses.asdict(job), "train_config": dataclasses.asdict(cfg)})
        start = time.perf_counter()
        positives = {s.name: _texts(s) for s in job.positives}
        negatives = {s.name: _texts(s) for s in job.negatives}
        result = train_quality_classifier([t for v in positives.values() for t in v],
                                          [t for v in negatives.values() for t in v], storage.path(job.output), cfg)
        mlflow.log_metrics({k: float(result[k]) for k in ("precision", "recall", "f1", "roc_auc")})
        mlflow.log_metrics({f"docs.{k}": len(v) for k, v in {**positives, **negatives}.items()})
        mlflow.log_metric("wall_seconds", time.perf_counter() - start)
        _log_sources(job, storage.path(result["model_path"]))
        tracking.log_artifact(result["model_path"], "model")
        mlflow.set_tags({"tokenmill.model_sha256": result["sha256"], tracking.OUTPUT_SHA256_TAG: result["sha256"],
                         tracking.OUTPUT_DIGEST_TAG: mlflow_digest(result["sha256"])})  # what the quality stage reads
        labels = np.array([lab == cfg.positive_label for lab, _ in result["scores"]])
        scores = np.array([s for _, s in result["scores"]])
        edges = np.linspace(0, 1, 41)
        fig = plots.binned_bar("quality: validation scores (positives)", "P(positive)", edges,
                               np.histogram(scores[labels], edges)[0])
        fig.axes[0].bar(edges[:-1], np.histogram(scores[~labels], edges)[0], width=np.diff(edges), align="edge",
                        alpha=0.6, label="negatives")
        fig.axes[0].set_title("quality: validation scores (blue: positives, orange: negatives)")
        mlflow.log_figure(fig, "plots/validation_scores.png")
        plots.close(fig)
        echo(f"tokenmill: quality classifier {result['model_path']} sha256 {result['sha256'][:16]}...: "
             f"F1 {result['f1']:.3f}, ROC AUC {result['roc_auc']:.3f}, precision {result['precision']:.3f}, "
             f"recall {result['recall']:.3f}")
        return result
