"""The quickstart with everything on S3 (a real S3 protocol server on loopback: moto's, from PyPI): the raw
inputs, the workdir (stage outputs, completion records, dedup keys and drop lists, token shards, manifests),
the tokenizer and the quality classifier, and the training job's checkpoints and export. One `tokenmill run`
for the module, beside a local `tokenmill pipeline` of the same config: the shards' bytes must not depend
on where they were written."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import lineage_chain
from servers import clean_env, moto_s3

from orchestration.lineage.walk import raw_files
from model.checkpoint import checkpoint_digest
from pipelines import storage
from pipelines.shard_reader import ShardSet
from pipelines.hashing import sha256_file
from repo_paths import REPO
pytestmark = pytest.mark.slow
BUCKET = "tokenmill-e2e"
WORKDIR = f"s3://{BUCKET}/runs/qs"
RAW = f"s3://{BUCKET}/raw/python3.11-doc"
STEPS = ["ray.num_cpus=2", "train.train.steps=4", "train.train.eval_every=2", "train.checkpoint.every=2"]


def cli(*args: str, env: dict, cwd: Path, timeout: int = 900) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "orchestration.cli", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    with moto_s3(tmp_path_factory.mktemp("moto"), BUCKET, export_env=True) as server:
        yield server  # this process reads the bucket too (pyarrow takes the endpoint from the environment)


@pytest.fixture(scope="module")
def runs(s3, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("object_store")
    docs = REPO / "configs" / "data" / "python3.11-doc"
    for f in sorted(docs.rglob("*.html")):
        s3["client"].upload_file(str(f), BUCKET, f"raw/python3.11-doc/{f.relative_to(docs).as_posix()}")
    cwd = tmp / "cwd"  # the runs' working directory: nothing of the S3 run may land here
    cwd.mkdir()
    env = clean_env(**s3["env"], PYTHONPATH=str(REPO), MLFLOW_TRACKING_URI=f"sqlite:///{tmp / 'mlflow.db'}",
                    TOKENMILL_CACHE=str(tmp / "cache"))
    config = str(REPO / "configs" / "quickstart.yaml")
    start = time.monotonic()
    remote = cli("run", config, "--workdir", WORKDIR, f'inputs.0.paths=["{RAW}/**/*.html"]', *STEPS, env=env, cwd=cwd)
    assert remote.returncode == 0, remote.stdout[-2000:] + remote.stderr[-3000:]
    print(f"tokenmill run on S3: {time.monotonic() - start:.0f}s")
    start = time.monotonic()
    local = cli("pipeline", config, "--workdir", str(tmp / "local"), "ray.num_cpus=2", env=env, cwd=tmp)
    assert local.returncode == 0, local.stderr[-3000:]
    print(f"tokenmill pipeline, local: {time.monotonic() - start:.0f}s")
    return {"tmp": tmp, "cwd": cwd, "env": env, "config": config, "stdout": remote.stdout,
            "summary": json.loads(storage.path(f"{WORKDIR}/summary.json").read_text()),
            "train": json.loads(storage.path(f"{WORKDIR}/train/train_summary.json").read_text()),
            "local": json.loads((tmp / "local" / "summary.json").read_text())}


def objects(s3, prefix: str) -> set[str]:
    pages = s3["client"].get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
    return {o["Key"][len(prefix):] for page in pages for o in page.get("Contents", []) if not o["Key"].endswith("/")}


def test_the_workdir_is_written_to_s3_only(runs, s3):
    written = objects(s3, "runs/qs/")
    assert {"summary.json", "raw_files.json", "quality/quality.bin", "tokenizer/tokenizer.model",
            "tokens/manifest.json", "dedup/index/manifest.json", "train/train_summary.json",
            "train/model/model.safetensors", "train/model/config.json"} <= written
    for stage in ("ingest", "extract", "filter", "exact_dedup", "minhash", "quality"):
        assert f"stages/{stage}/manifest.json" in written
    assert any(k.startswith("stages/filter/dropped/") for k in written)  # what each stage dropped, beside it
    assert any(k.startswith("keys/minhash/") for k in written) and any(k.startswith("_done/pass") for k in written)
    assert any(k.startswith("train/ray/quickstart/checkpoint_step00000004/") for k in written)
    assert not any(k.endswith(".tmp") for k in written)  # objects are uploaded whole, never renamed into place
    # in the working directory only MLflow's: a SQLite store keeps its artifacts in ./mlruns (a shared server
    # keeps them in its own store, test_shared_mlflow.py); no "s3:" folder anywhere
    assert [p.name for p in runs["cwd"].iterdir()] == ["mlruns"]
    assert not (REPO / "s3:").exists() and not (runs["tmp"] / "s3:").exists()
    assert runs["summary"]["workdir"] == WORKDIR and runs["summary"]["final_manifest"] == f"{WORKDIR}/tokens/manifest.json"
    raw = json.loads(storage.path(f"{WORKDIR}/raw_files.json").read_text())
    assert len(raw["files"]) == 99 and all(f["location"].startswith(f"{RAW}/") for f in raw["files"])


def test_the_shards_on_s3_are_the_bytes_a_local_run_writes(runs):
    remote, local = runs["summary"], runs["local"]
    assert remote["raw_files_digest"] == local["raw_files_digest"]  # the same files, wherever they are read from
    assert remote["tokenizer"]["sha256"] == local["tokenizer"]["sha256"]
    assert [(s["stage"], s["docs_in"], s["kept"], s["dropped"]) for s in remote["stages"]] == \
        [(s["stage"], s["docs_in"], s["kept"], s["dropped"]) for s in local["stages"]]
    s3_set = ShardSet(f"{WORKDIR}/tokens/manifest.json", tokenizer_path=f"{WORKDIR}/tokenizer/tokenizer.model")
    local_set = ShardSet(local["tokens"]["manifest_path"], tokenizer_path=local["tokenizer"]["model_path"])
    strip = lambda shards: [{k: s[k] for k in ("path", "index_path", "tokens", "documents", "sha256", "index_sha256")}
                            for s in shards]  # noqa: E731
    assert strip(s3_set.shards_meta) == strip(local_set.shards_meta) and s3_set.num_shards > 10
    for i in range(s3_set.num_shards):  # read back through the cache: the same tokens, the same documents
        assert np.array_equal(s3_set.shard(i), local_set.shard(i))
        assert s3_set.index(i)["doc_id"] == local_set.index(i)["doc_id"]
    assert sha256_file(f"{WORKDIR}/quality/quality.bin") == sha256_file(Path(local["workdir"]) / "quality" / "quality.bin")


def test_training_checkpoints_and_its_export_are_on_s3(runs):
    summary = runs["train"]
    assert summary["step"] == 4 and [c["path"] for c in summary["checkpoints"]] == \
        [f"{WORKDIR}/train/ray/quickstart/checkpoint_step0000000{s}" for s in (2, 4)]
    for ckpt in summary["checkpoints"]:
        assert checkpoint_digest(ckpt["path"]) == ckpt["sha256"]
    assert summary["export"] == f"{WORKDIR}/train/model"
    assert sha256_file(f"{WORKDIR}/train/model/model.safetensors") == summary["export_sha256"]
    assert runs["stdout"].count("tokenmill: sample ") == 3


def test_training_read_the_s3_shards_by_ranges_through_its_block_cache(runs):
    """Each worker kept verified 64 KiB blocks (named by the shard's sha256 and the block number), each the bytes
    of that range of the S3 object; the whole shards were never downloaded for training."""
    manifest = json.loads(storage.path(f"{WORKDIR}/tokens/manifest.json").read_text())
    by_key = {s["sha256"][:40]: s for s in manifest["shards"]}
    kept = sorted((runs["tmp"] / "blocks").glob("quickstart-rank*/*"))
    assert kept and {p.parent.name for p in kept} <= {"quickstart-rank0", "quickstart-rank1"}
    for p in kept:
        key, block = p.name.split(".")
        meta = by_key[key]
        with storage.path(f"{WORKDIR}/tokens/{meta['path']}").open("rb") as f:
            f.seek(int(block) * meta["block_bytes"])
            assert p.read_bytes() == f.read(meta["block_bytes"])
    assert "(indexes and block checksums: blocks are verified as training fetches them)" in runs["stdout"]


def test_lineage_walks_back_from_the_s3_checkpoint_and_verifies(runs):
    ckpt = runs["train"]["checkpoints"][-1]["path"]
    out = cli("lineage", ckpt, "--json", env=runs["env"], cwd=runs["tmp"], timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    tree = json.loads(out.stdout)
    assert tree["checkpoint"] == ckpt and tree["step"] == 4
    assert [n.get("stage") or n["kind"] for n in lineage_chain(tree)] == \
        ["train", "tokenize", "quality", "minhash", "exact_dedup", "filter", "extract", "ingest"]
    assert {f["path"] for f in json.loads(storage.path(f"{WORKDIR}/raw_files.json").read_text())["files"]} <= \
        {f["path"] for f in raw_files(tree)}
    verify = cli("lineage", ckpt, "--verify", env=runs["env"], cwd=runs["tmp"], timeout=300)
    assert verify.returncode == 0 and "everything verifies" in verify.stdout, verify.stdout + verify.stderr[-2000:]
    assert f"{WORKDIR}/tokens/manifest.json: {runs['summary']['tokens']['shards']} token shards verify" in verify.stdout
    dropped = next(s for s in runs["summary"]["stages"] if s["stage"] == "filter")
    assert dropped["dropped"]
    fate = cli("lineage", "--doc", "python-docs/faq/general.html#0000000000", "--json", env=runs["env"],
               cwd=runs["tmp"], timeout=300)
    assert fate.returncode == 0, fate.stderr[-2000:]
    found = json.loads(fate.stdout)["pipelines"]
    assert any(p["workdir"] == WORKDIR and p["fate"] in ("kept", "dropped") for p in found), found


def test_a_second_run_finds_its_work_on_s3(runs):
    again = cli("run", runs["config"], "--workdir", WORKDIR, f'inputs.0.paths=["{RAW}/**/*.html"]', *STEPS,
                env=runs["env"], cwd=runs["cwd"])
    assert again.returncode == 0, again.stderr[-3000:]
    assert "already trained" in again.stdout and "pipeline already complete" in again.stdout
    assert "resuming job 'quickstart'" in again.stdout
    assert json.loads(storage.path(f"{WORKDIR}/train/train_summary.json").read_text())["step"] == 4


def test_export_shards_from_s3_to_s3(runs):
    out = cli("export-shards", f"{WORKDIR}/tokens/manifest.json", "--format", "datatrove", "--out",
              f"s3://{BUCKET}/exports/datatrove", env=runs["env"], cwd=runs["tmp"], timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    record = json.loads(storage.path(f"s3://{BUCKET}/exports/datatrove/export.json").read_text())
    assert record["documents"] == runs["summary"]["tokens"]["documents"]
    for f in record["files"]:
        assert sha256_file(f"s3://{BUCKET}/exports/datatrove/{f['path']}") == f["sha256"]
    again = cli("export-shards", f"{WORKDIR}/tokens/manifest.json", "--format", "datatrove", "--out",
                f"s3://{BUCKET}/exports/datatrove", env=runs["env"], cwd=runs["tmp"], timeout=300)
    assert again.returncode != 0 and "not empty" in again.stderr


def _wait_objects(s3, prefix: str, n: int, proc: subprocess.Popen, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None and len(objects(s3, prefix)) < n:
        time.sleep(0.2)
    assert proc.poll() is None, "the pipeline ended first: " + proc.stderr.read()[-2000:]


def test_an_endpoint_that_is_gone_is_one_line_then_a_resume_and_a_blip_costs_nothing(runs, s3, tmp_path):
    """The S3 endpoint goes away mid-pass (a proxy in front of moto's server, stopped): gone for good, the run
    stops with one line naming the endpoint, exit 2 (was: "internal error: TaskFailed ... OSError ... Could not
    connect", the traceback in /tmp), its traceback in the announced log folder; once it is back, the same
    command resumes, and a 4 s outage in the middle of that run costs nothing (6 attempts per request, ~17 s
    of back-off)."""
    from servers import TcpProxy

    proxy = TcpProxy(int(s3["endpoint"].rsplit(":", 1)[1])).start()
    env = {**runs["env"], "AWS_ENDPOINT_URL": f"http://127.0.0.1:{proxy.port}"}
    small = [f'inputs.0.paths=["{RAW}/*o*/*.html"]', "ray.num_cpus=2",  # howto/ and tutorial/: 37 pages
             "filter.enabled=false", "quality.enabled=false", "tokenizer.enabled=false", "tokenize.enabled=false"]

    def start(workdir: str, **extra: str) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-m", "orchestration.cli", "pipeline", runs["config"], "--workdir",
                                 workdir, *small], cwd=runs["cwd"], env={**env, **extra}, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
    workdir = f"s3://{BUCKET}/runs/faults"
    try:
        lost = start(workdir, TOKENMILL_S3_ATTEMPTS="2")  # gives up in ~1 s, not ~17 s
        _wait_objects(s3, "runs/faults/_done/pass0-", 5, lost)
        proxy.stop()
        out, err = lost.communicate(timeout=900)
        assert lost.returncode == 2, err[-3000:]
        (line,) = err.strip().splitlines()
        assert line.startswith("tokenmill: ") and "error: an endpoint could not be reached" in line, line
        assert "internal" not in line and "re-run to resume once it is back" in line, line
        assert f"127.0.0.1:{proxy.port}" in line or "Could not connect" in line, line
        log = Path(line.split("(traceback in ")[1].rstrip(")"))
        announced = next(x for x in out.splitlines() if "logs in " in x).split("logs in ")[1].split(" (")[0]
        assert log.parent == Path(announced) and "Traceback" in log.read_text()

        # back: the same command resumes; and a blip of 4 s in the middle of it costs nothing
        proxy.start()
        done_before = len(objects(s3, "runs/faults/_done/"))
        resumed = start(workdir)
        _wait_objects(s3, "runs/faults/_done/", done_before + 3, resumed)
        proxy.stop()
        time.sleep(4)
        proxy.start()
        out, err = resumed.communicate(timeout=900)
        assert resumed.returncode == 0, err[-3000:]
        assert "(0 already done)" not in out.split("pass 0")[1].splitlines()[0], out
        assert "summary.json" in objects(s3, "runs/faults/")
    finally:
        proxy.stop()
