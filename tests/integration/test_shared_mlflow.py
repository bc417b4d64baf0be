"""Shared MLflow: `mlflow server` with its runs in PostgreSQL and its artifacts in S3, the set-up a team shares.

Real servers, on loopback only, started here and stopped afterwards: a throwaway PostgreSQL cluster (Debian's
`postgresql`, run as an unprivileged user), moto's S3 server, and `mlflow server` on both, proxying artifacts
(clients need no S3 credentials). The quickstart pipeline and its training job record their runs there; the
runs are then read in PostgreSQL, the artifacts in the bucket, and `tokenmill lineage` walks back through the
server from the checkpoint to the raw files."""

from __future__ import annotations

import glob
import json
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import mlflow
import pytest
from conftest import lineage_chain
from debian_packages import ensure
from servers import AWS, clean_env, moto_s3, stop_group, tail, wait_for
from servers import free_port

from orchestration.lineage.walk import raw_files
from repo_paths import REPO

pytestmark = pytest.mark.slow
PG_USER, PG_PASSWORD, PG_DB = "tokenmill", "tokenmill-pw", "mlflow"
BUCKET, PREFIX = "tokenmill-mlflow", "mlartifacts"


def _postgres_bin() -> Path:
    """Debian's server binaries (the newest installed major)."""
    def find() -> Path | None:
        found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                       key=lambda p: int(Path(p).parts[4]) if Path(p).parts[4].isdigit() else 0)
        return Path(found[-1]).parent if found else None

    return ensure("postgresql", find, "the shared-MLflow test")


@pytest.fixture(scope="module")
def postgres():
    """A throwaway cluster on 127.0.0.1:<free port>, run by an unprivileged user (as root: the `postgres`
    system user Debian's package creates), with a database and a password-authenticated owner for MLflow."""
    import psycopg2

    bindir = _postgres_bin()
    if os.geteuid() == 0:  # initdb and postgres refuse to run as root
        try:
            user = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root, and there is no unprivileged `postgres` user to run PostgreSQL as")
        as_user = (["runuser", "-u", "postgres", "--"] if shutil.which("runuser") else
                   ["setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--clear-groups", "--"])
    else:
        user, as_user = None, []
    base = Path(tempfile.mkdtemp(prefix="tokenmill-pg-"))  # under /tmp: pytest's tmp dirs are root-only
    if user is not None:
        os.chown(base, user.pw_uid, user.pw_gid)
    data, log, port = base / "data", base / "postgres.log", free_port()
    env = clean_env()

    def pg(*cmd: str, timeout: int = 120) -> subprocess.CompletedProcess:
        done = subprocess.run([*as_user, *cmd], cwd=base, env=env, capture_output=True, text=True, timeout=timeout)
        assert done.returncode == 0, f"{cmd[0]}: {done.stdout[-1500:]}{done.stderr[-1500:]}\n{tail(log)}"
        return done

    # local (socket) connections: trust, for the set-up below; TCP connections: password (SCRAM)
    pg(str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "--auth-local=trust",
       "--auth-host=scram-sha-256", "-E", "UTF8", "--no-locale", "--no-sync")
    pg(str(bindir / "pg_ctl"), "-D", str(data), "-l", str(log), "-w", "-t", "90", "-o",
       f"-c listen_addresses=127.0.0.1 -p {port} -c unix_socket_directories={base} -c fsync=off", "start")
    try:
        admin = psycopg2.connect(host=str(base), port=port, user="postgres", dbname="postgres")
        admin.autocommit = True
        with admin.cursor() as cur:
            cur.execute(f"CREATE ROLE {PG_USER} LOGIN PASSWORD %s", (PG_PASSWORD,))
            cur.execute(f"CREATE DATABASE {PG_DB} OWNER {PG_USER}")
        admin.close()
        dsn = {"host": "127.0.0.1", "port": port, "user": PG_USER, "password": PG_PASSWORD, "dbname": PG_DB}
        psycopg2.connect(**dsn).close()  # over TCP, with the password
        yield {"dsn": dsn, "uri": f"postgresql://{PG_USER}:{PG_PASSWORD}@127.0.0.1:{port}/{PG_DB}"}
    finally:
        subprocess.run([*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"], cwd=base,
                       env=env, capture_output=True, timeout=120)
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """moto's S3 server on 127.0.0.1:<free port>, with an empty bucket."""
    with moto_s3(tmp_path_factory.mktemp("s3"), BUCKET) as server:
        yield server


@pytest.fixture(scope="module")
def mlflow_server(postgres, s3, tmp_path_factory):
    """`mlflow server` on 127.0.0.1:<free port>: runs in PostgreSQL, artifacts proxied to the bucket."""
    cwd = tmp_path_factory.mktemp("mlflow_server")  # nothing of the server's lands in the repository
    log, port = cwd / "mlflow_server.log", free_port()
    env = clean_env(**AWS, MLFLOW_S3_ENDPOINT_URL=s3["endpoint"])
    with open(log, "wb") as out:
        proc = subprocess.Popen([str(Path(sys.executable).with_name("mlflow")), "server",
                                 "--backend-store-uri", postgres["uri"],
                                 "--artifacts-destination", f"s3://{BUCKET}/{PREFIX}", "--serve-artifacts",
                                 "--host", "127.0.0.1", "--port", str(port), "--workers", "2"],
                                cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_for(lambda: urllib.request.urlopen(f"{url}/health", timeout=5).close(), "mlflow server", proc, log,
              timeout=300)  # the schema migrations on a fresh database come first
        yield {"url": url, "cwd": cwd, "log": log}
    finally:
        stop_group(proc)


def cli(*args: str, env: dict, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "orchestration.cli", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture(scope="module")
def shared(mlflow_server, tmp_path_factory):
    """The quickstart pipeline, then training on its shards, recorded on the shared server (one run for the
    module). The client has the tracking URL only: no database password, no S3 credentials."""
    tmp_path = tmp_path_factory.mktemp("shared_qs")
    env = clean_env(MLFLOW_TRACKING_URI=mlflow_server["url"])
    start = time.monotonic()
    out = cli("run", "configs/quickstart.yaml", "--workdir", str(tmp_path / "qs"),
              "ray.num_cpus=2", "filter.enabled=false", "exact_dedup.enabled=false", "minhash.enabled=false",
              "train.train.steps=4", "train.train.eval_every=2", "train.checkpoint.every=2", env=env, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:] + "\n--- mlflow server ---\n" + tail(mlflow_server["log"])
    print(f"tokenmill run against the shared server: {time.monotonic() - start:.0f}s")
    summary = json.loads((tmp_path / "qs" / "train" / "train_summary.json").read_text())
    pipeline = json.loads((tmp_path / "qs" / "summary.json").read_text())
    mlflow.set_tracking_uri(mlflow_server["url"])
    try:
        tags = mlflow.get_run(summary["run_id"]).data.tags
    finally:
        mlflow.set_tracking_uri(None)
    return {"tmp": tmp_path, "env": env, "summary": summary, "pipeline": pipeline,
            "checkpoint": Path(tags["tokenmill.checkpoint.latest"]), "export": Path(tags["tokenmill.export"])}


def test_the_runs_are_rows_in_postgresql(shared, postgres):
    import psycopg2

    pipeline, train_id = shared["pipeline"], shared["summary"]["run_id"]
    parent = pipeline["mlflow_run_id"]
    stages = {s["stage"]: s["run_id"] for s in pipeline["stages"]} | {
        "tokenizer": pipeline["tokenizer"]["run_id"], "tokenize": pipeline["tokens"]["run_id"]}
    assert set(stages) == {"ingest", "extract", "quality", "tokenizer", "tokenize"}
    conn = psycopg2.connect(**postgres["dsn"])
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT run_uuid, status, artifact_uri, experiment_id FROM runs")
            runs = {r[0]: r[1:] for r in cur.fetchall()}
            cur.execute("SELECT run_uuid, value FROM tags WHERE key = 'mlflow.parentRunId'")
            parents = dict(cur.fetchall())
            cur.execute("SELECT run_uuid, value FROM tags WHERE key = 'tokenmill.pipeline_run_id'")
            pipeline_of = dict(cur.fetchall())
            cur.execute("SELECT DISTINCT run_uuid FROM metrics WHERE key = 'loss'")
            with_loss = {r[0] for r in cur.fetchall()}
    finally:
        conn.close()
    for run_id in (parent, train_id, *stages.values()):
        status, artifact_uri, _ = runs[run_id]
        assert status == "FINISHED"
        assert artifact_uri.startswith("mlflow-artifacts:/"), artifact_uri  # proxied by the server, not local
    assert all(parents[rid] == parent for rid in stages.values())  # the stage runs are the pipeline's children
    assert parent not in parents and train_id not in parents
    assert pipeline_of[train_id] == parent and train_id in with_loss


def test_the_artifacts_are_objects_in_s3(shared, s3, mlflow_server):
    pipeline, train_id = shared["pipeline"], shared["summary"]["run_id"]
    parent = pipeline["mlflow_run_id"]
    keys = [o["Key"] for page in s3["client"].get_paginator("list_objects_v2").paginate(Bucket=BUCKET)
            for o in page.get("Contents", [])]
    assert keys and all(k.startswith(f"{PREFIX}/") for k in keys)

    def of(run_id: str) -> dict[str, str]:  # artifact path -> object key
        mark = f"/{run_id}/artifacts/"
        return {k.split(mark, 1)[1]: k for k in keys if mark in k}

    parent_art, train_art = of(parent), of(train_id)
    assert {"summary.json", "lineage/lineage.html", "lineage/lineage.png", "config.json"} <= set(parent_art)
    assert {"loss_curve.png", "train_config.json", "checkpoints.json", "samples.txt"} <= set(train_art)
    export = {p for p in train_art if p.startswith("export/")}
    assert export == {f"export/{f.relative_to(shared['export'])}" for f in shared["export"].rglob("*")
                      if f.is_file()} and any(p.endswith(".safetensors") for p in export), export
    assert of(pipeline["tokens"]["run_id"]) and of(pipeline["tokenizer"]["run_id"])

    # the objects are the files: read straight from the bucket, and through the server
    body = s3["client"].get_object(Bucket=BUCKET, Key=parent_art["summary.json"])["Body"].read()
    assert json.loads(body) == pipeline
    page = s3["client"].get_object(Bucket=BUCKET, Key=parent_art["lineage/lineage.html"])["Body"].read().decode()
    assert "<svg" in page and pipeline["tokens"]["run_id"] in page
    png = s3["client"].get_object(Bucket=BUCKET, Key=train_art["loss_curve.png"])["Body"].read()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    mlflow.set_tracking_uri(mlflow_server["url"])
    try:
        local = Path(mlflow.artifacts.download_artifacts(run_id=parent, artifact_path="summary.json"))
    finally:
        mlflow.set_tracking_uri(None)
    assert local.read_bytes() == body
    # nothing went to a local artifact store next to the server
    assert not (mlflow_server["cwd"] / "mlartifacts").exists() and not (mlflow_server["cwd"] / "mlruns").exists()


def test_lineage_reads_back_through_the_server_to_the_raw_files(shared):
    env, checkpoint, summary = shared["env"], shared["checkpoint"], shared["summary"]
    assert checkpoint.name == "checkpoint_step00000004" and summary["step"] == 4
    lineage = cli("lineage", str(checkpoint), "--json", env=env)
    assert lineage.returncode == 0, lineage.stderr[-3000:]
    tree = json.loads(lineage.stdout)
    assert tree["checkpoint"] == str(checkpoint) and tree["step"] == 4
    assert [n.get("stage") or n["kind"] for n in lineage_chain(tree)] == \
        ["train", "tokenize", "quality", "extract", "ingest"]
    raw = json.loads((shared["tmp"] / "qs" / "raw_files.json").read_text())["files"]
    assert len(raw) == 99 and {f["path"] for f in raw} <= {f["path"] for f in raw_files(tree)}

    verify = cli("lineage", str(checkpoint), "--verify", env=env)
    assert verify.returncode == 0 and "everything verifies" in verify.stdout, verify.stdout + verify.stderr[-2000:]
