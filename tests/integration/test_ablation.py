"""`tokenmill ablate` end to end at toy scale (real Ray, a real MLflow store): the quickstart pipeline as the
baseline and the same recipe under another name (the null check: it reruns no pass and is within noise), two seeds,
ten training steps each, a small suite; the verdict, the MLflow run tree, `--report`, and a re-run that finds
everything done. (The planted and resume checks, and the real ablation: docs/ablations.md.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import mlflow
import pytest

from conftest import using_store
from orchestration.ablation.run import ABLATION_TAG, VARIANT_TAG, run_ablation
from orchestration.config.ablation import load_ablation
from repo_paths import CORPORA, EVALS, REPO

pytestmark = pytest.mark.skipif(not EVALS.is_dir(), reason="evaluation sets not found at ../shared/evals")


@pytest.fixture(scope="module")
def ablation(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ablate")
    (tmp / "suite.yaml").write_text(
        "name: mini\nbatch_size: 32\n"
        f"texts:\n  - {{name: wiki, path: {CORPORA}/wikitext2_test/wiki.test.raw, format: text, max_doc_chars: 20000}}\n"
        f"tasks:\n  - {{name: piqa, path: {EVALS}/piqa.jsonl, schema: mc, max_items: 30}}\n")
    (tmp / "ablate.yaml").write_text(
        f"name: toy\npipeline: {REPO}/configs/quickstart.yaml\ntrain: {REPO}/configs/train/quickstart.yaml\n"
        "suite: suite.yaml\nbudget_tokens: 40960\nseeds: 2\nevals: 2\nlast_evals: 2\n"
        "variants:\n  - {name: baseline}\n  - {name: same}\n")
    lines: list[str] = []
    (tmp / "mlflow").mkdir()
    with using_store(tmp / "mlflow") as uri:
        cfg, variants = load_ablation(tmp / "ablate.yaml")
        first = run_ablation(cfg, variants, tmp / "work", echo=lines.append)
        again_lines: list[str] = []
        again = run_ablation(cfg, variants, tmp / "work", echo=again_lines.append)
        yield {"tmp": tmp, "uri": uri, "first": first, "again": again, "lines": lines, "again_lines": again_lines}


def test_the_null_variant_reruns_no_pass_and_is_within_noise(ablation):
    first = ablation["first"]
    assert first["sharing"]["baseline"]["passes_run"] == 3 and first["sharing"]["baseline"]["passes_shared"] == 0
    same = first["sharing"]["same"]
    assert same["passes_run"] == 0 and same["steps_run"] == 0 and same["passes_shared"] == 3, same
    rows = [r for r in first["rows"] if r["variant"] == "same"]
    assert {r["metric"] for r in rows} == {"eval.mean_bpb", "eval.wiki.bpb", "eval.piqa.bpb", "eval.piqa.acc"}
    # the same data, seeds and model: the same numbers, run for run
    assert all(r["diff"] == 0 and r["verdict"] == "within noise" for r in rows), rows
    assert "| eval.mean_bpb | same |" in first["markdown"] and "|snr| >= 2" in first["markdown"]


def test_every_run_is_a_child_of_the_ablation_run_with_its_variant(ablation):
    first = ablation["first"]
    with using_store(ablation["tmp"] / "mlflow"):
        client = mlflow.MlflowClient()
        parent = first["ablation_run"]
        kids = mlflow.search_runs(search_all_experiments=True, output_format="list",
                                  filter_string=f"tags.`{ABLATION_TAG}` = '{parent}'")
        by_kind = {}
        for r in kids:
            assert r.data.tags["mlflow.parentRunId"] == parent
            by_kind.setdefault(r.data.tags["tokenmill.kind"], []).append(r.data.tags[VARIANT_TAG])
        assert sorted(by_kind["pipeline"]) == ["baseline", "same"]
        assert sorted(by_kind["train"]) == ["baseline", "baseline", "same", "same"]
        assert {a.path for a in client.list_artifacts(parent)} >= {"verdict.json", "verdict.md", "ablation_bpb.png",
                                                                      "ablation_metrics.png"}
        assert client.get_run(parent).info.status == "FINISHED"
        assert json.loads(mlflow.artifacts.load_text(f"runs:/{parent}/verdict.json"))["rows"] == first["rows"]


def test_a_rerun_finds_everything_done_and_report_prints_the_table(ablation):
    assert ablation["again"]["rows"] == ablation["first"]["rows"]
    assert ablation["again"]["ablation_run"] == ablation["first"]["ablation_run"]
    assert sum(line.startswith("tokenmill: training run ") and "already finished" in line
               for line in ablation["again_lines"]) == 4
    assert sum("pipeline already complete" in line for line in ablation["again_lines"]) == 2
    proc = subprocess.run([sys.executable, "-m", "orchestration.cli", "ablate", "--report", ablation["first"]["ablation_run"]],
                          capture_output=True, text=True, cwd=REPO, env={**os.environ, "MLFLOW_TRACKING_URI": ablation["uri"]})
    assert proc.returncode == 0 and "| eval.mean_bpb | same |" in proc.stdout, proc.stderr[-2000:]
    proc = subprocess.run([sys.executable, "-m", "orchestration.cli", "lineage", ablation["first"]["ablation_run"]],
                          capture_output=True, text=True, cwd=REPO, env={**os.environ, "MLFLOW_TRACKING_URI": ablation["uri"]})
    assert proc.returncode == 0, proc.stderr[-2000:]
    for variant in ("baseline", "same"):  # each variant's first training run, down to its tokenize stage's run
        block = proc.stdout.split(f"variant:{variant}")[1]
        assert f"train:{variant}-s0" in block and "tokenize" in block, proc.stdout[:3000]
