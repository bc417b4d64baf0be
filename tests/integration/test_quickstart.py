"""`tokenmill run` on the quickstart: the pipeline, then training on its shards, and the lineage between them:
the tree, OpenLineage events, the graph on the pipeline run, the MLflow UI in a browser, --step/--doc and
--verify (last: it breaks files). One run feeds every test of the module."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import mlflow
import pytest
from conftest import lineage_chain
from test_console import NOISE
from debian_packages import ensure
from servers import free_port

from orchestration.lineage.walk import raw_files
from orchestration.runtime.tracking import producer_of
from repo_paths import REPO

pytestmark = pytest.mark.slow


def cli(*args: str, env: dict, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "orchestration.cli", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=timeout)


# the filters and dedup stages are covered elsewhere (test_pipeline_integration); here: the chain
PIPELINE = ("ray.num_cpus=2", "filter.enabled=false", "exact_dedup.enabled=false", "minhash.enabled=false")


@pytest.fixture(scope="module")
def qs(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("quickstart")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_") and k != "RAY_ADDRESS"}
    env["MLFLOW_TRACKING_URI"] = uri
    out = cli("run", "configs/quickstart.yaml", "--workdir", str(tmp_path / "qs"), *PIPELINE,
              "train.train.steps=6", "train.train.eval_every=3", "train.checkpoint.every=3", env=env, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    summary = json.loads((tmp_path / "qs" / "train" / "train_summary.json").read_text())
    pipeline = json.loads((tmp_path / "qs" / "summary.json").read_text())
    mlflow.set_tracking_uri(uri)
    try:
        checkpoint = Path(mlflow.get_run(summary["run_id"]).data.tags["tokenmill.checkpoint.latest"])
    finally:
        mlflow.set_tracking_uri(None)
    return {"tmp": tmp_path, "uri": uri, "env": env, "stdout": out.stdout, "stderr": out.stderr, "summary": summary,
            "pipeline": pipeline,
            "checkpoint": checkpoint}


def test_the_run_shows_its_own_lines_and_keeps_rays_in_the_workdir(qs):
    for noise in NOISE:
        assert noise not in qs["stdout"] + qs["stderr"], noise
    assert not qs["stderr"].strip(), qs["stderr"][-2000:]
    assert "[train] step 6/6" in qs["stdout"]  # no terminal: the step lines stand in for the progress display
    ray_logs = qs["tmp"] / "qs" / "logs" / "ray"
    kept = "".join(p.read_text(errors="replace") for p in ray_logs.glob("*") if p.suffix in (".out", ".err"))
    assert "[train] step 6/6" in kept and "Checkpoint successfully created" in kept  # Ray Train's reports


def test_quickstart_run_trains_on_its_shards_and_the_lineage_walks_back(qs):
    tmp_path, uri, env, summary, checkpoint = qs["tmp"], qs["uri"], qs["env"], qs["summary"], qs["checkpoint"]
    assert qs["stdout"].count("tokenmill: sample ") == 3  # the config's three prompts
    assert summary["step"] == 6
    tokens = qs["pipeline"]["tokens"]

    # lineage: checkpoint -> training run -> token manifest -> tokenize stage run -> ... -> raw files
    mlflow.set_tracking_uri(uri)
    try:
        train_run = mlflow.get_run(summary["run_id"])
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
            inputs = [i for i in run.inputs.dataset_inputs if i.dataset.name not in ("tokenizer", "quality_model")]
            producers = [p for i in inputs for p in producer_of(i.dataset.digest)]
            if not producers:
                break
            run = producers[0]
        assert stages == ["tokenize", "quality", "extract", "ingest"]
        assert any(t.value == "raw_input" for i in run.inputs.dataset_inputs for t in i.tags)
        assert train_run.data.tags["tokenmill.pipeline_run_id"] == json.loads(
            (tmp_path / "qs" / "summary.json").read_text())["mlflow_run_id"]
    finally:
        mlflow.set_tracking_uri(None)

    # the same walk as one command: from the checkpoint to every raw input file
    lineage = cli("lineage", str(checkpoint), "--json", env=env)
    assert lineage.returncode == 0, lineage.stderr[-3000:]
    tree = json.loads(lineage.stdout)
    assert tree["checkpoint"] == str(checkpoint) and tree["step"] == 6
    assert [n.get("stage") or n["kind"] for n in lineage_chain(tree)] == \
        ["train", "tokenize", "quality", "extract", "ingest"]
    raw = json.loads((tmp_path / "qs" / "raw_files.json").read_text())["files"]
    reached = {f["path"] for f in raw_files(tree)}
    assert len(raw) == 99 and {f["path"] for f in raw} <= reached  # the pipeline's inputs ...
    assert "spam/spam.jsonl" in reached  # ... and what the quality classifier learned from
    text = cli("lineage", str(checkpoint), env=env).stdout
    assert f"run {summary['run_id']}" in text and "<- raw_input tokenizer" in text and "python-docs/faq/" in text
    print(text)  # the tree, for the record



def _rebuild(event: dict):
    """An emitted event rebuilt with the openlineage client's classes: their validators check the run id is a
    UUID and the times are ISO date-times; the round trip must give back exactly what was emitted."""
    from openlineage.client.event_v2 import InputDataset, Job, OutputDataset, Run, RunEvent, RunState
    from openlineage.client.serde import Serde

    rebuilt = RunEvent(eventType=RunState(event["eventType"]), eventTime=event["eventTime"],
                       run=Run(runId=event["run"]["runId"]), job=Job(namespace=event["job"]["namespace"],
                                                                      name=event["job"]["name"]),
                       inputs=[InputDataset(namespace=d["namespace"], name=d["name"]) for d in event["inputs"]],
                       outputs=[OutputDataset(namespace=d["namespace"], name=d["name"]) for d in event["outputs"]],
                       producer=event["producer"])
    plain = Serde.to_dict(rebuilt)
    strip = {k: v for k, v in event.items() if k not in ("run", "job", "inputs", "outputs")}
    assert {k: v for k, v in plain.items() if k not in ("run", "job", "inputs", "outputs")} == strip
    return rebuilt


def test_openlineage_events_name_every_runs_inputs_and_outputs(qs):
    env, checkpoint = qs["env"], qs["checkpoint"]
    tree = json.loads(cli("lineage", str(checkpoint), "--json", env=env).stdout)
    out = cli("lineage", str(checkpoint), "--format", "openlineage", env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    events = [json.loads(line) for line in out.stdout.splitlines()]
    for e in events:
        _rebuild(e)
    runs, stack = {}, [tree["lineage"]]
    while stack:
        node = stack.pop()
        if not node.get("see_above"):
            runs[node["run_id"]] = node
            stack += [i["produced_by"] for i in node["inputs"] if "produced_by" in i]
    by_run: dict[str, list[dict]] = {}
    for e in events:
        by_run.setdefault(e["run"]["runId"].replace("-", ""), []).append(e)
    assert set(by_run) == set(runs)  # one START and one COMPLETE per run of the lineage, nothing else
    assert all([e["eventType"] for e in evs] == ["START", "COMPLETE"] for evs in by_run.values())
    order = [e["run"]["runId"].replace("-", "") for e in events if e["eventType"] == "START"]
    names = {rid: {(d["namespace"], d["name"]) for e in evs for d in e["outputs"]} for rid, evs in by_run.items()}
    for rid, node in runs.items():
        ins = {(d["namespace"], d["name"]) for d in by_run[rid][-1]["inputs"]}
        for inp in node["inputs"]:
            if "produced_by" in inp:  # a stage's input is its producer's output, and the producer comes first
                producer = inp["produced_by"]["run_id"]
                assert ("file", inp["source"]) in ins and ("file", inp["source"]) in names[producer]
                assert order.index(producer) < order.index(rid)
            elif inp.get("files"):  # raw files: one dataset each, by absolute path, with sha256 and size
                assert {("file", f["location"]) for f in inp["files"]} <= ins
                assert all(Path(f["location"]).is_absolute() for f in inp["files"])
            else:
                assert ("file", inp["source"]) in ins
        if node["stage"]:  # stage runs name their pipeline run as parent
            parent = by_run[rid][0]["run"]["facets"]["parent"]
            assert parent["run"]["runId"].replace("-", "") == qs["pipeline"]["mlflow_run_id"]
            assert by_run[rid][0]["job"]["name"] == f"{parent['job']['name']}.{node['stage']}"
    ingest = next(evs for rid, evs in by_run.items() if runs[rid]["stage"] == "ingest")[-1]
    raw = [d for d in ingest["inputs"]]
    assert len(raw) == 99 and all(d["facets"]["version"]["datasetVersion"] for d in raw)
    assert all(d["inputFacets"]["inputStatistics"]["size"] > 0 for d in raw)
    train = by_run[qs["summary"]["run_id"]][-1]
    assert ("file", str(checkpoint)) in {(d["namespace"], d["name"]) for d in train["outputs"]}


def test_the_pipeline_run_carries_its_lineage_graph(qs):
    """lineage/lineage.png and a self-contained lineage/lineage.html on the pipeline's parent run."""
    mlflow.set_tracking_uri(qs["uri"])
    try:
        parent = qs["pipeline"]["mlflow_run_id"]
        names = {a.path for a in mlflow.MlflowClient().list_artifacts(parent, "lineage")}
        assert names == {"lineage/lineage.png", "lineage/lineage.html"}
        folder = Path(mlflow.artifacts.download_artifacts(run_id=parent, artifact_path="lineage"))
    finally:
        mlflow.set_tracking_uri(None)
    assert (folder / "lineage.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = (folder / "lineage.html").read_text()
    assert "<script" not in page and "src=" not in page and "<svg" in page  # nothing fetched, nothing run
    stages = {s["run_id"] for s in qs["pipeline"]["stages"]} | {qs["pipeline"]["tokens"]["run_id"],
                                                               qs["pipeline"]["tokenizer"]["run_id"]}
    assert all(rid in page for rid in stages)
    raw = json.loads((qs["tmp"] / "qs" / "raw_files.json").read_text())["files"]
    assert all(f["sha256"] in page for f in raw)


def _chromium() -> str:
    return ensure("chromium", lambda: shutil.which("chromium"), "the browser test")


def _browse(chromium: str, url: str, profile: Path, *mode: str) -> subprocess.CompletedProcess:
    # the flags keep headless Chromium off the network (a closed network refuses its background fetches)
    return subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                           "--disable-background-networking", "--disable-component-update", "--disable-sync",
                           f"--user-data-dir={profile}", "--window-size=1500,1000", "--virtual-time-budget=30000",
                           *mode, url], capture_output=True, text=True, timeout=300)


def test_mlflow_ui_in_headless_chromium_shows_the_pipeline_stages_and_the_training_input(qs, tmp_path):
    chromium = _chromium()
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "orchestration.cli", "ui", "--port", str(port)], cwd=REPO,
                            env=qs["env"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True,
                            text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(240):
            try:
                urllib.request.urlopen(f"{base}/health", timeout=2).close()
                break
            except OSError:
                time.sleep(0.5)
        mlflow.set_tracking_uri(qs["uri"])
        try:
            parent = mlflow.get_run(qs["pipeline"]["mlflow_run_id"])
            train = mlflow.get_run(qs["summary"]["run_id"])
        finally:
            mlflow.set_tracking_uri(None)
        exp = parent.info.experiment_id
        # `tokenmill ui` names each tokenmill experiment's runs page (MLflow 3 opens an experiment on its GenAI
        # overview, empty here): a fresh browser pointed at it lands on the runs
        said = "".join(proc.stderr.readline() for _ in range(2))  # tokenmill's lines come before MLflow's
        runs_url = f"{base}/#/experiments/{exp}/runs"
        assert runs_url in said, said
        # the experiment's runs: the pipeline run (its stage runs folded under it) and the training run
        runs_page = _browse(chromium, runs_url, tmp_path / "fresh-profile", "--dump-dom").stdout
        shot = tmp_path / "mlflow_runs.png"
        _browse(chromium, runs_url, tmp_path / "profile", f"--screenshot={shot}")
        assert shot.is_file() and shot.stat().st_size > 10_000
        assert parent.info.run_name in runs_page and train.info.run_name in runs_page, runs_page[-3000:]
        parent_url = f"{base}/#/experiments/{exp}/runs/{parent.info.run_id}"
        run_page = _browse(chromium, parent_url, tmp_path / "profile", "--dump-dom").stdout
        _browse(chromium, parent_url, tmp_path / "profile", f"--screenshot={tmp_path / 'mlflow_pipeline_run.png'}")
        pipeline = qs["pipeline"]
        stages = {s["stage"]: s["run_id"] for s in pipeline["stages"]} | {
            "tokenizer": pipeline["tokenizer"]["run_id"], "tokenize": pipeline["tokens"]["run_id"]}
        assert set(stages) == {"ingest", "extract", "quality", "tokenizer", "tokenize"}
        assert "Child runs" in run_page, run_page[-3000:]
        for stage, run_id in stages.items():  # each stage run listed, linked to its own page
            assert f'/runs/{run_id}">{stage}</a>' in run_page, stage
        train_page = _browse(chromium, f"{base}/#/experiments/{train.info.experiment_id}/runs/{train.info.run_id}",
                             tmp_path / "profile", "--dump-dom").stdout
        dataset = train.inputs.dataset_inputs[0].dataset
        assert dataset.name in train_page and dataset.digest in train_page
        _browse(chromium, f"{base}/#/experiments/{train.info.experiment_id}/runs/{train.info.run_id}",
                tmp_path / "profile", f"--screenshot={tmp_path / 'mlflow_train_run.png'}")
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


def test_step_and_doc_answer_from_the_loader_order(qs):
    env, summary = qs["env"], qs["summary"]
    # --step: the documents of one step's batch; --doc on one of them: kept, and read at that step
    step = cli("lineage", "--run", summary["run_id"], "--step", "3", "--json", env=env)
    assert step.returncode == 0, step.stderr[-2000:]
    batch = json.loads(step.stdout)
    docs = batch["documents"]
    assert {d["rank"] for d in docs} == {0, 1} and all(d["source"] == "python-docs" for d in docs)
    assert sum(d["tokens"] for d in docs) == batch["global_batch_windows"] * (batch["seq_len"] + 1)
    one = docs[0]
    fate = cli("lineage", "--doc", one["doc_id"], "--json", env=env)
    assert fate.returncode == 0, fate.stderr[-2000:]
    (where,) = json.loads(fate.stdout)["pipelines"]
    assert where["fate"] == "kept" and where["n_tokens"] > 0
    (reads,) = where["training"]
    assert reads["run_id"] == summary["run_id"] and {"step": 3, "rank": one["rank"]} in reads["steps"]
    missing = cli("lineage", "--doc", "no/such#1", env=env)
    assert missing.returncode == 1 and "not found in any pipeline workdir" in missing.stdout

    # a store outlives its workdirs: one deleted, one on an S3 endpoint that is gone; --doc still answers from
    # the quickstart's and names both with the reason
    from mlflow import MlflowClient

    client = MlflowClient(env["MLFLOW_TRACKING_URI"])
    exp = client.get_experiment_by_name("tokenmill-quickstart").experiment_id
    gone = [str(qs["tmp"] / "deleted-workdir"), f"s3://gone/wd?endpoint_override=127.0.0.1:{free_port()}&scheme=http"]
    extra = []
    for wd in gone:
        run = client.create_run(exp, tags={"tokenmill.kind": "pipeline", "tokenmill.workdir": wd})
        client.set_terminated(run.info.run_id)
        extra.append(run.info.run_id)
    try:
        fate = cli("lineage", "--doc", one["doc_id"], env={**env, "TOKENMILL_S3_ATTEMPTS": "1"})
        assert fate.returncode == 0 and "internal error" not in fate.stderr, fate.stderr[-2000:]
        assert "kept: tokens/" in fate.stdout
        assert f"{gone[0]}: not read: no such folder" in fate.stdout
        line = next(x for x in fate.stdout.splitlines() if "s3://gone/wd" in x)
        assert "not read:" in line and "connect" in line.lower(), fate.stdout
    finally:
        for run_id in extra:
            client.delete_run(run_id)


def test_generate_checks_its_arguments_and_its_prompt(qs, capsys):
    """A user's mistake in `tokenmill generate` is one line and exit 2, never an internal error; a prompt near
    the model's context says how many new tokens still fit. (The CLI in this process: its lines are the same.)"""
    import sentencepiece as spm

    from model.export import load_export
    from orchestration.cli import main
    from pipelines.tokenizer import Tokenizer

    export = str(qs["tmp"] / "qs" / "train" / "model")

    def generate(*args: str) -> tuple[int, str]:
        code = main(["generate", export, *args])
        return code, capsys.readouterr().err

    for args, message in ((["--max-new-tokens", "-5"], "--max-new-tokens: at least 1"),
                          (["--temperature", "-0.5"], "--temperature: 0 (greedy) or more"),
                          (["--top-k", "-3"], "--top-k: 0 (no cut-off) or more")):
        code, err = generate("--prompt", "The", *args)
        assert code == 2 and message in err and "internal" not in err, (args, err)
    model, _ = load_export(export)
    tok = Tokenizer(f"{export}/tokenizer.model")
    words = ("the", "module", "returns", "a", "list", "of")
    prompt, i = "", 0
    while len(tok.encode(prompt)) < model.cfg.max_seq_len - 3:
        prompt, i = f"{prompt} {words[i % len(words)]}".strip(), i + 1
    room = model.cfg.max_seq_len - len(tok.encode(prompt))
    code, err = generate("--prompt", prompt, "--max-new-tokens", "40", "--temperature", "0")
    assert code == 0 and f"at most {room} new tokens (not 40)" in err, err[-2000:]
    code, err = generate("--prompt", prompt + " the module" * 20)
    assert code == 2 and "leaves no room to generate" in err, err
    # a SentencePiece model that is not the one the model was trained with
    other = qs["tmp"] / "other_tokenizer"
    spm.SentencePieceTrainer.train(sentence_iterator=iter(["a small corpus of words", "other words here"] * 50),
                                   model_prefix=str(other), vocab_size=20, minloglevel=2)
    code, err = generate("--prompt", "The", "--tokenizer", f"{other}.model")
    assert code == 2 and "is not the one the model was trained with" in err and len(err.strip().splitlines()) == 1, err


def _stopped(cmd: list[str], env: dict, done: Path, more: int, sig: signal.Signals) -> tuple[int, str, str]:
    """Run `cmd`, send it `sig` once `more` task records have appeared under `done` (a pass is under way)."""
    before = len(list(done.glob("pass*/*.json")))
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 600
    while time.time() < deadline and proc.poll() is None and len(list(done.glob("pass*/*.json"))) < before + more:
        time.sleep(0.05)
    assert proc.poll() is None, "the pipeline ended before the signal: " + proc.stderr.read()[-2000:]
    os.kill(proc.pid, sig)
    out, err = proc.communicate(timeout=300)
    return proc.returncode, out, err


def test_signals_stop_a_pipeline_in_one_line_and_another_workdir_gives_the_same_digests(qs):
    """SIGTERM (preemption) and SIGINT mid-pass: one tokenmill line naming the signal and what finished, exit
    143 / 130, nothing from Ray's C++ (was: a "SIGTERM received" stack dump, exit 15), the lock released. The
    resumed run, in another folder, has every stage digest and the token manifest digest of the fixture's run
    (was: the quality model's path made the quality and token digests differ). Then "complete" means the
    outputs are there: a deleted token shard and a truncated token manifest are made again."""
    from orchestration.runtime.workdir_lock import inspect

    workdir = qs["tmp"] / "elsewhere" / "qs2"
    cmd = [sys.executable, "-m", "orchestration.cli", "pipeline", "configs/quickstart.yaml", "--workdir", str(workdir),
           *PIPELINE]
    env = {**qs["env"], "TOKENMILL_PROGRESS_EVERY_S": "0"}  # a progress point per finished task
    for sig, more in ((signal.SIGTERM, 5), (signal.SIGINT, 3)):
        code, out, err = _stopped(cmd, env, workdir / "_done", more, sig)
        assert code == 128 + sig, (sig, code, err[-2000:])
        (line,) = err.strip().splitlines()
        assert line.startswith(f"tokenmill: stopped by {sig.name} (pass ") and "tasks finished and kept" in line, line
        assert line.endswith("; re-run the same command to resume"), line
        for noise in (*NOISE, "SIGTERM received", "task_manager", "internal error"):
            assert noise not in out + err, (sig, noise)
        assert inspect(workdir)[0] == "free"
    # the stopped runs are in the store as they were while running: the pipeline's run with its passes' progress so
    # far (a point per finished task here), and not one half-written stage run
    client = mlflow.MlflowClient(tracking_uri=qs["uri"])
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()],
                              filter_string=f"tags.`tokenmill.workdir` = '{workdir}'")
    assert {r.data.tags["tokenmill.kind"] for r in runs} == {"pipeline"} and len(runs) == 2
    for r in runs:
        assert r.info.status == "KILLED"
        done = client.get_metric_history(r.info.run_id, "progress.pass0.tasks_done")
        assert [m.step for m in done] == [m.value for m in done] == list(range(1, len(done) + 1)) and len(done) >= 3
        assert r.data.metrics["progress.pass0.tasks_total"] == 99 and r.data.metrics["progress.pass0.docs_in"] >= 3

    done = cli(*cmd[3:], env=qs["env"])
    assert done.returncode == 0, done.stderr[-2000:]
    one, two = qs["pipeline"], json.loads((workdir / "summary.json").read_text())
    assert [s["stage"] for s in one["stages"]] == [s["stage"] for s in two["stages"]]
    for a, b in zip(one["stages"], two["stages"]):
        assert a["output_digest"] == b["output_digest"], a["stage"]
    assert one["tokens"]["digest"] == two["tokens"]["digest"]

    shard = sorted((workdir / "tokens").rglob("*.bin"))[3]
    shard_bytes = shard.read_bytes()
    shard.unlink()
    manifest = workdir / "tokens" / "manifest.json"
    digest = json.loads(manifest.read_text())["digest"]
    manifest.write_text(manifest.read_text()[:300])
    again = cli(*cmd[3:], env=qs["env"])
    assert again.returncode == 0, again.stderr[-2000:]
    assert "not a readable token manifest" in again.stdout and "re-running the tasks whose outputs are missing" \
        in again.stdout, again.stdout
    assert shard.read_bytes() == shard_bytes and json.loads(manifest.read_text())["digest"] == digest
    last = cli(*cmd[3:], env=qs["env"])
    assert "pipeline already complete" in last.stdout, last.stdout

    # other parameters: what the earlier ones wrote and no manifest of this run lists is removed (was: 66 token
    # files beside the 60 listed, and stale parquet files under docs/quality/ for a folder reader to take)
    stricter = cli(*cmd[3:], "quality.threshold=0.99", env=qs["env"])
    assert stricter.returncode == 0, stricter.stderr[-2000:]
    assert "file(s) an earlier run with other parameters wrote that no manifest of this run lists" in stricter.stdout
    now = json.loads(manifest.read_text())
    on_disk = {p.relative_to(workdir / "tokens").as_posix() for p in (workdir / "tokens").rglob("*") if p.is_file()}
    assert on_disk == {"manifest.json"} | {s[k] for s in now["shards"] for k in ("path", "index_path")}
    quality = json.loads((workdir / "stages" / "quality" / "manifest.json").read_text())
    kept = {f["path"] for f in quality["files"] if f["kind"] == "kept"}
    assert {p.relative_to(workdir).as_posix() for p in (workdir / "docs" / "quality").rglob("*.parquet")} == kept
    assert len(now["shards"]) < len(json.loads((qs["tmp"] / "qs" / "tokens" / "manifest.json").read_text())["shards"])
    # lineage reads a damaged manifest as a problem: a truncated one is one line (exit 2, was an internal
    # JSONDecodeError), an edited one (valid JSON) is walked with a warning first (was: no warning)
    truncated = qs["tmp"] / "truncated-manifest.json"
    truncated.write_text(manifest.read_text()[:300])
    bad = cli("lineage", str(truncated), env=qs["env"])
    assert bad.returncode == 2 and "not a readable manifest (truncated, or not JSON" in bad.stderr, bad.stderr
    edited = json.loads(manifest.read_text())
    edited["shards"][0]["sha256"] = "0" * 64
    (qs["tmp"] / "edited-manifest.json").write_text(json.dumps(edited))
    warned = cli("lineage", str(qs["tmp"] / "edited-manifest.json"), env=qs["env"])
    assert warned.returncode == 0 and warned.stdout.startswith("WARNING: ") and "does not match its digest" in \
        warned.stdout.splitlines()[0], warned.stdout[:2000] + warned.stderr[-2000:]


def test_verify_names_a_changed_shard_byte_and_a_missing_checkpoint_file(qs):
    """Last in the module: it breaks files of the shared run."""
    tmp_path, env, checkpoint = qs["tmp"], qs["env"], qs["checkpoint"]

    # --verify: everything verifies; then a changed byte in a token shard and a missing checkpoint file are named
    def verify() -> subprocess.CompletedProcess:
        return cli("lineage", str(checkpoint), "--verify", env=env)

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

