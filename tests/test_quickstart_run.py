"""`tokenmill run` on the quickstart: the pipeline, then training on its shards, and the lineage between them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest

from orchestration.lineage import raw_files
from orchestration.tracking import producer_of

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]


def test_quickstart_run_trains_on_its_shards_and_the_lineage_walks_back(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri}
    env.pop("RAY_ADDRESS", None)
    out = subprocess.run(
        [sys.executable, "-m", "orchestration.cli", "run", "configs/quickstart.yaml", "--workdir", str(tmp_path / "qs"),
         # the filters and dedup stages are covered elsewhere (test_pipeline_integration); here: the chain
         "ray.num_cpus=2", "filter.enabled=false", "exact_dedup.enabled=false", "minhash.enabled=false",
         "train.train.steps=6", "train.train.eval_every=3", "train.checkpoint.every=3"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.count("tokenmill: sample ") == 3  # the config's three prompts
    summary = json.loads((tmp_path / "qs" / "train" / "train_summary.json").read_text())
    assert summary["step"] == 6
    tokens = json.loads((tmp_path / "qs" / "summary.json").read_text())["tokens"]

    # lineage: checkpoint -> training run -> token manifest -> tokenize stage run -> ... -> raw files
    mlflow.set_tracking_uri(uri)
    try:
        train_run = mlflow.get_run(summary["run_id"])
        checkpoint = Path(train_run.data.tags["tokenmill.checkpoint.latest"])
        assert checkpoint.name == "checkpoint_step00000006"
        state = json.loads((checkpoint / "trainer_state.json").read_text())
        assert state["mlflow_run_id"] == summary["run_id"] and state["step"] == 6
        digest = train_run.inputs.dataset_inputs[0].dataset.digest
        (tokenize_run,) = producer_of(digest)
        assert tokenize_run.info.run_id == tokens["run_id"]
        stages = []
        run = tokenize_run
        while True:
            stages.append(run.data.tags.get("tokenmill.stage", run.info.run_name))
            inputs = [i for i in run.inputs.dataset_inputs if i.dataset.name != "tokenizer"]
            producers = [p for i in inputs for p in producer_of(i.dataset.digest)]
            if not producers:
                break
            run = producers[0]
        assert stages == ["tokenize", "extract", "ingest"]
        assert any(t.value == "raw_input" for i in run.inputs.dataset_inputs for t in i.tags)
        assert train_run.data.tags["tokenmill.pipeline_run_id"] == json.loads(
            (tmp_path / "qs" / "summary.json").read_text())["mlflow_run_id"]
    finally:
        mlflow.set_tracking_uri(None)

    # the same walk as one command: from the checkpoint to every raw input file
    lineage = subprocess.run([sys.executable, "-m", "orchestration.cli", "lineage", str(checkpoint), "--json"],
                             cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert lineage.returncode == 0, lineage.stderr[-3000:]
    tree = json.loads(lineage.stdout)
    assert tree["checkpoint"] == str(checkpoint) and tree["step"] == 6
    node, chain = tree["lineage"], []
    while node:
        chain.append(node.get("stage") or node["kind"])
        assert node["code_version"] and node["status"] == "FINISHED"
        node = next((i["produced_by"] for i in node["inputs"] if "produced_by" in i and i["name"] != "tokenizer"), None)
    assert chain == ["train", "tokenize", "extract", "ingest"]
    raw = json.loads((tmp_path / "qs" / "raw_files.json").read_text())["files"]
    assert sorted(f["path"] for f in raw_files(tree)) == sorted(f["path"] for f in raw) and len(raw) == 99
    text = subprocess.run([sys.executable, "-m", "orchestration.cli", "lineage", str(checkpoint)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300).stdout
    assert f"run {summary['run_id']}" in text and "<- raw_input tokenizer" in text and "python-docs/faq/" in text
    print(text)  # the tree, for the record

    # --verify: everything verifies; then a changed byte in a token shard and a missing checkpoint file are named
    def verify() -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "orchestration.cli", "lineage", str(checkpoint), "--verify"],
                              cwd=REPO, env=env, capture_output=True, text=True, timeout=300)

    clean = verify()
    assert clean.returncode == 0 and "everything verifies" in clean.stdout, clean.stdout + clean.stderr[-2000:]
    assert "token shards verify" in clean.stdout and "checkpoint " in clean.stdout
    shard = sorted((tmp_path / "qs" / "tokens").rglob("*.bin"))[0]
    data = bytearray(shard.read_bytes())
    data[10] ^= 1
    shard.write_bytes(bytes(data))
    gone = sorted(checkpoint.glob("*.distcp"))[0]
    gone.unlink()
    broken = verify()
    assert broken.returncode == 1 and "2 problem(s)" in broken.stdout, broken.stdout
    assert shard.name in broken.stdout and f"{gone.name} is missing" in broken.stdout

    # --step: the documents of one step's batch; --doc on one of them: kept, and read at that step
    step = subprocess.run([sys.executable, "-m", "orchestration.cli", "lineage", "--run", summary["run_id"],
                           "--step", "3", "--json"], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert step.returncode == 0, step.stderr[-2000:]
    batch = json.loads(step.stdout)
    docs = batch["documents"]
    assert {d["rank"] for d in docs} == {0, 1} and all(d["source"] == "python-docs" for d in docs)
    assert sum(d["tokens"] for d in docs) == batch["global_batch_windows"] * (batch["seq_len"] + 1)
    one = docs[0]
    fate = subprocess.run([sys.executable, "-m", "orchestration.cli", "lineage", "--doc", one["doc_id"], "--json"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert fate.returncode == 0, fate.stderr[-2000:]
    (where,) = json.loads(fate.stdout)["pipelines"]
    assert where["fate"] == "kept" and where["n_tokens"] > 0
    (reads,) = where["training"]
    assert reads["run_id"] == summary["run_id"] and {"step": 3, "rank": one["rank"]} in reads["steps"]
    missing = subprocess.run([sys.executable, "-m", "orchestration.cli", "lineage", "--doc", "no/such#1"],
                             cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert missing.returncode == 1 and "not found in any pipeline workdir" in missing.stdout
