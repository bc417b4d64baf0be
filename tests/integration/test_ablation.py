"""`tokenmill ablate` end to end (real Ray, a real MLflow store) with the issue's three honesty checks, at the
smallest scale that can show them: ~2,000 documents cut from five Gutenberg books, three variants, 3 seeds of the
a 0.2M-parameter proxy on 819,200 tokens each (two runs side by side, one worker each), held-out text from a sixth book.

- planted: `shuffled` (a user stage after exact dedup shuffles the words of half the documents) must rank below
  the baseline on the held-out text's bits per byte with a signal-to-noise ratio of at least 3;
- null: `same` (the baseline under another name) reruns no pass and no training, and is within noise;
- resume: a copy of the finished ablation without its last training run, SIGKILLed (with its local Ray) after
  that run's step-150 checkpoint, re-run: the same table.
Also the MLflow run tree, a re-run that finds everything done, `--report` and `lineage`. The real ablation on
../shared/corpora is benchmarks/bench_ablation.py (docs/ablations.md)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import mlflow
import pytest

from conftest import using_store
from orchestration.ablation.run import ABLATION_TAG, VARIANT_TAG, run_ablation
from orchestration.config.ablation import load_ablation
from pipelines.quality import book_documents
from repo_paths import CORPORA, EVALS, REPO

pytestmark = pytest.mark.skipif(not (EVALS.is_dir() and (CORPORA / "gutenberg").is_dir()),
                                reason="../shared/evals or ../shared/corpora/gutenberg not found")

BOOKS = ["pg108.txt", "pg120.txt", "pg161.txt", "pg521.txt", "pg834.txt"]  # training; pg1661.txt held out
STEPS = 200  # budget_tokens / 4,096 tokens per step


def _write_inputs(tmp):
    with (tmp / "books.jsonl").open("w") as f:
        for name in BOOKS:
            text = (CORPORA / "gutenberg" / name).read_text(encoding="utf-8", errors="replace")
            for k, doc in enumerate(book_documents(text, min_words=50, max_words=300)):
                f.write(json.dumps({"id": f"{name}#{k}", "text": doc}) + "\n")
    (tmp / "pipeline.yaml").write_text(
        "name: books\ninputs:\n  - {name: books, format: jsonl, id_field: id, paths: [books.jsonl]}\n"
        "output: {shard_mb: 0.5}\n"
        "filter: {gopher_quality: null, gopher_repetition: null, c4: null, fineweb: null}\n"
        "minhash: {enabled: false}\nquality: {enabled: false}\n"
        "tokenizer: {enabled: true, vocab_size: 2000, sample_docs: 3000}\ntokenize: {enabled: true, target_shard_tokens: 100000}\n")
    # a proxy smaller than the tiny preset (0.2M parameters, a quarter of its cost per token) trained 4x longer:
    # at 60 steps the tiny one is still learning word frequencies, where shuffling changes nothing, and its seeds
    # spread 0.046 bits per byte (snr -2.8 for the planted damage); at 200 steps the word order it has learned
    # separates the variants
    (tmp / "train.yaml").write_text(
        "name: proxy\ndata: {seq_len: 128, val_fraction: 0.05}\n"
        "model: {d_model: 64, n_layers: 2, n_heads: 2, n_kv_heads: 1, max_seq_len: 128, tie_embeddings: true}\n"
        "optim: {lr: 5.0e-3, warmup_steps: 10, min_lr_ratio: 0.1}\n"
        "train: {global_batch_tokens: 4096, log_every: 50, eval_every: 100, eval_windows: 32}\n"
        "checkpoint: {every: 50, keep: 2}\nray: {num_workers: 1}\nsample: {prompts: [The], max_new_tokens: 8}\n")
    (tmp / "suite.yaml").write_text(
        "name: held-out\nbatch_size: 32\n"
        f"texts:\n  - {{name: book, path: {CORPORA}/gutenberg/pg1661.txt, format: text, max_doc_chars: 30000}}\n"
        f"tasks:\n  - {{name: piqa, path: {EVALS}/piqa.jsonl, schema: mc, max_items: 20}}\n")
    (tmp / "ablate.yaml").write_text(
        f"name: honesty\npipeline: pipeline.yaml\ntrain: train.yaml\nsuite: suite.yaml\nbudget_tokens: {STEPS * 4096}\n"
        "seeds: 3\nevals: 2\nlast_evals: 2\nvariants:\n  - {name: baseline}\n  - {name: same}\n"
        "  - name: shuffled\n    pipeline: ['user_stages=[{name: shuffled, after: exact_dedup, "
        "stage: \"planted:ShuffleWords\", options: {fraction: 0.5}}]']\n")


@pytest.fixture(scope="module")
def ablation(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ablate")
    _write_inputs(tmp)
    lines: list[str] = []
    (tmp / "mlflow").mkdir()
    with using_store(tmp / "mlflow") as uri:
        cfg, variants = load_ablation(tmp / "ablate.yaml")
        first = run_ablation(cfg, variants, tmp / "work", echo=lines.append)
        again_lines: list[str] = []
        again = run_ablation(cfg, variants, tmp / "work", echo=again_lines.append)
        yield {"tmp": tmp, "uri": uri, "first": first, "again": again, "lines": lines, "again_lines": again_lines}


def _row(result, variant, metric):
    (row,) = [r for r in result["rows"] if r["variant"] == variant and r["metric"] == metric]
    return row


def test_planted_damage_ranks_below_the_baseline_beyond_the_noise(ablation):
    first = ablation["first"]
    row = _row(first, "shuffled", "eval.book.bpb")
    base = _row(first, "baseline", "eval.book.bpb")
    print(f"planted: baseline {base['mean']:.4f} +- {base['std']:.4f}, shuffled {row['mean']:.4f} +- "
          f"{row['std']:.4f} bits per byte, snr {row['snr_seed']:.2f} (checkpoints {row['snr_checkpoint']:.2f})")
    assert row["diff"] > 0 and row["snr_seed"] <= -3 and row["verdict"] == "worse", row
    # the damage came after exact dedup: pass 0, the dedup step and the tokenizer were the baseline's; the dedup
    # apply pass (now with the shuffle) and tokenization ran
    shuffled = first["sharing"]["shuffled"]
    assert shuffled["passes_shared"] == 1 and shuffled["passes_run"] == 2 and shuffled["steps_shared"] == 2, shuffled
    assert shuffled["trainings_run"] == 3 and shuffled["trainings_shared"] == 0


def test_the_null_variant_reruns_nothing_and_is_within_noise(ablation):
    first = ablation["first"]
    assert first["sharing"]["baseline"]["passes_run"] == 3 and first["sharing"]["baseline"]["trainings_run"] == 3
    same = first["sharing"]["same"]
    assert same["passes_run"] == 0 and same["steps_run"] == 0 and same["passes_shared"] == 3, same
    # the same shards (by digest), tokenizer, config and seeds: the baseline's three runs, not trained again
    assert same["trainings_run"] == 0 and same["trainings_shared"] == 3
    assert first["runs"]["same"] == first["runs"]["baseline"]
    assert sum("is baseline-s" in line and "not trained again" in line for line in ablation["lines"]) == 3
    rows = [r for r in first["rows"] if r["variant"] == "same"]
    assert {r["metric"] for r in rows} == {"eval.mean_bpb", "eval.book.bpb", "eval.piqa.bpb", "eval.piqa.acc"}
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
        assert sorted(by_kind["pipeline"]) == ["baseline", "same", "shuffled"]
        assert sorted(by_kind["train"]) == ["baseline"] * 3 + ["shuffled"] * 3
        # one-worker runs on 2 CPUs: two at a time, each its own process on the ablation's Ray
        assert "tokenmill: 6 training runs, 2 side by side" in ablation["lines"]
        spans = sorted((r.info.start_time, r.info.end_time) for r in kids if r.data.tags["tokenmill.kind"] == "train")
        assert any(b[0] < a[1] for a, b in zip(spans, spans[1:])), spans  # some run started before another ended
        assert {a.path for a in client.list_artifacts(parent)} >= {"verdict.json", "verdict.md", "ablation_bpb.png",
                                                                      "ablation_metrics.png"}
        assert client.get_run(parent).info.status == "FINISHED"
        assert json.loads(mlflow.artifacts.load_text(f"runs:/{parent}/verdict.json"))["rows"] == first["rows"]


def test_a_rerun_finds_everything_done_and_report_prints_the_table(ablation):
    assert ablation["again"]["rows"] == ablation["first"]["rows"]
    assert ablation["again"]["ablation_run"] == ablation["first"]["ablation_run"]
    assert sum(line.startswith("tokenmill: training run ") and "already finished" in line
               for line in ablation["again_lines"]) == 6
    assert sum("pipeline already complete" in line for line in ablation["again_lines"]) == 3
    env = {**os.environ, "MLFLOW_TRACKING_URI": ablation["uri"]}
    proc = subprocess.run([sys.executable, "-m", "orchestration.cli", "ablate", "--report", ablation["first"]["ablation_run"]],
                          capture_output=True, text=True, cwd=REPO, env=env)
    assert proc.returncode == 0 and "| eval.mean_bpb | shuffled |" in proc.stdout, proc.stderr[-2000:]
    proc = subprocess.run([sys.executable, "-m", "orchestration.cli", "lineage", ablation["first"]["ablation_run"]],
                          capture_output=True, text=True, cwd=REPO, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    for variant, run in (("baseline", "baseline"), ("shuffled", "shuffled"), ("same", "baseline")):
        block = proc.stdout.split(f"variant:{variant}")[1]  # each variant's first training run, down to tokenize
        assert f"train:{run}-s0" in block and "tokenize" in block, proc.stdout[:3000]
    # the baseline's tokenizer is the run that trained it on the baseline's documents, not a variant given it
    assert "shuffled" not in proc.stdout.split("variant:baseline")[1].split("variant:same")[0], proc.stdout[:5000]


def test_an_ablation_killed_mid_training_finishes_with_the_same_table(ablation, tmp_path):
    """The finished ablation's folder without its last training run (and without its MLflow run record), run
    from the command line; SIGKILL to its process group (driver and local Ray) once that run's step-150
    checkpoint is complete; the re-run resumes the run from it and gives the same table."""
    src, work = ablation["tmp"] / "work", tmp_path / "work"
    shutil.copytree(src, work, ignore=lambda d, names: [n for n in names if n in ("shuffled-s2", "ablation.json")
                                                        or n.startswith("verdict.")])
    cmd = [sys.executable, "-m", "orchestration.cli", "ablate", str(ablation["tmp"] / "ablate.yaml"), "--workdir", str(work)]
    env = {**os.environ, "MLFLOW_TRACKING_URI": ablation["uri"],  # the planted stage's module: tests/support
           "PYTHONPATH": os.pathsep.join([str(REPO / "tests" / "support"), os.environ.get("PYTHONPATH", "")])}
    log = (tmp_path / "killed.log").open("w")
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    ckpt = work / "train" / "shuffled-s2" / "ray" / "shuffled-s2" / "checkpoint_step00000150" / "trainer_state.json"
    deadline = time.time() + 600
    while time.time() < deadline and proc.poll() is None and not ckpt.is_file():
        time.sleep(0.1)
    assert proc.poll() is None, "the ablation ended before the kill: " + (tmp_path / "killed.log").read_text()[-2000:]
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (work / "verdict.json").exists()
    out = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "resumed from" in out.stdout + out.stderr and "checkpoint_step00000150" in out.stdout + out.stderr
    resumed = json.loads((work / "verdict.json").read_text())
    assert resumed["rows"] == ablation["first"]["rows"]
    assert sum("already finished" in line for line in out.stdout.splitlines()) == 5
