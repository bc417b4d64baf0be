"""Before the passes: the quality stage's classifier, trained from its YAML when the config gives that instead of
a model (its global step, the cut-off for keep_fraction, is QualityStage.reduce, on the driver)."""

from __future__ import annotations

import dataclasses
import json

from orchestration.corpus.steps import before
from pipelines import storage
from pipelines.hashing import canonical_sha256, sha256_file
from pipelines.stages.quality import QualityStage


@before(QualityStage)
def train_classifier(cfg, workdir: storage.StoragePath, echo) -> None:
    """quality.train without quality.model_path: train that classifier into WORKDIR/quality/ (an MLflow run in
    the pipeline's experiment, whose output digest the quality stage's input names), unless the same YAML
    trained the model already there; then use it."""
    q = cfg.quality
    if not q.enabled or q.model_path or not q.train:
        return
    from orchestration.corpus.quality_train import run_quality_train

    out = workdir / "quality" / "quality.bin"
    stamp_path = out.with_suffix(".stamp.json")
    stamp = canonical_sha256({"config": storage.path(q.train).read_text(), "experiment": cfg.mlflow.experiment})
    done = json.loads(stamp_path.read_text()) if stamp_path.is_file() else {}
    if done.get("stamp") == stamp and out.is_file() and sha256_file(out) == done.get("sha256"):
        echo(f"tokenmill: quality classifier {out} already trained from {q.train}")
    else:
        result = run_quality_train(q.train, [f"output={out}", f"experiment={cfg.mlflow.experiment}"], echo)
        storage.write_atomic(stamp_path, json.dumps({"stamp": stamp, "sha256": result["sha256"]}))
    cfg.quality = dataclasses.replace(q, model_path=str(out))
