"""Servers the integration tests start on loopback and stop afterwards (moto's S3 server here; PostgreSQL and
`mlflow server` in test_shared_mlflow.py), and the helpers they share."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator



def free_port() -> int:
    """A TCP port on loopback nobody listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]

AWS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


def clean_env(**extra: str) -> dict:
    """The environment without any MLflow, AWS, PostgreSQL or Ray settings of the caller's."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("MLFLOW_", "AWS_", "PG")) and k != "RAY_ADDRESS"}
    return {**env, "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost", **extra}


def tail(path: Path) -> str:
    return path.read_text(errors="replace")[-3000:] if path.is_file() else ""


def wait_for(check, what: str, proc: subprocess.Popen | None = None, log: Path | None = None, timeout: float = 180):
    deadline = time.monotonic() + timeout
    while True:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}:\n{tail(log) if log else ''}")
        try:
            return check()
        except Exception as exc:  # noqa: BLE001  (not up yet)
            if time.monotonic() > deadline:
                raise RuntimeError(f"{what} not ready after {timeout}s ({exc}):\n{tail(log) if log else ''}")
            time.sleep(0.5)


def stop_group(proc: subprocess.Popen) -> None:
    """The whole process group: uvicorn's workers outlive a killed parent otherwise."""
    for sig, grace in ((signal.SIGTERM, 30), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            proc.poll()  # reaps the leader; the group is gone once its last member is
            try:
                os.killpg(proc.pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.2)
    proc.wait(timeout=10)


@contextmanager
def moto_s3(folder: Path, bucket: str, export_env: bool = False) -> Iterator[dict]:
    """moto's S3 server (moto[server] from PyPI) on 127.0.0.1:<free port>, with an empty `bucket`; yields its
    endpoint, a boto3 client and the environment a client process needs (credentials and AWS_ENDPOINT_URL,
    which boto3, pyarrow and Ray Train's storage all read). With `export_env` this process gets that
    environment too (restored afterwards), so the test itself reads the bucket through pipelines.storage."""
    import boto3

    log, port = folder / "moto.log", free_port()
    with open(log, "wb") as out:
        proc = subprocess.Popen([str(Path(sys.executable).with_name("moto_server")), "-H", "127.0.0.1",
                                 "-p", str(port)], env=clean_env(**AWS), stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        endpoint = f"http://127.0.0.1:{port}"
        client = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=AWS["AWS_ACCESS_KEY_ID"],
                              aws_secret_access_key=AWS["AWS_SECRET_ACCESS_KEY"], region_name="us-east-1")
        wait_for(client.list_buckets, "moto_server", proc, log, timeout=60)
        client.create_bucket(Bucket=bucket)
        env = {**AWS, "AWS_ENDPOINT_URL": endpoint}
        saved = {k: os.environ.get(k) for k in env}
        if export_env:
            os.environ.update(env)
        try:
            yield {"endpoint": endpoint, "client": client, "log": log, "env": env}
        finally:
            for k, v in saved.items() if export_env else ():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
    finally:
        stop_group(proc)


_PROXY = r"""
import asyncio, sys

listen, target, delay = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]) / 1000


async def pipe(reader, writer, wait=0.0):
    try:
        while data := await reader.read(65536):
            if wait:
                await asyncio.sleep(wait)
            writer.write(data)
            await writer.drain()
    except Exception:
        pass
    finally:
        writer.close()


async def handle(client_reader, client_writer):
    try:
        server_reader, server_writer = await asyncio.open_connection("127.0.0.1", target)
    except OSError:
        client_writer.close()
        return
    await asyncio.gather(pipe(client_reader, server_writer, delay), pipe(server_reader, client_writer))


async def main():
    server = await asyncio.start_server(handle, "127.0.0.1", listen, reuse_address=True)
    print("ready", flush=True)
    async with server:
        await server.serve_forever()


asyncio.run(main())
"""


class TcpProxy:
    """A TCP proxy on 127.0.0.1:port to a local server, in its own process: stopping it is a network outage
    for the clients (connections refused), starting it again on the same port ends it, and the server behind
    it keeps its state (moto's S3 keeps its objects in memory). `delay_ms` holds each client write (a request)
    that long: an object store's latency on loopback."""

    def __init__(self, target_port: int, delay_ms: float = 0.0):
        self.target, self.port, self.proc, self.delay_ms = target_port, free_port(), None, delay_ms

    def start(self) -> "TcpProxy":
        self.proc = subprocess.Popen([sys.executable, "-c", _PROXY, str(self.port), str(self.target), str(self.delay_ms)],
                                     stdout=subprocess.PIPE, text=True, start_new_session=True)
        assert self.proc.stdout.readline().strip() == "ready"
        return self

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(timeout=10)
            self.proc = None
