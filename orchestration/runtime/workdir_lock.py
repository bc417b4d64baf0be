"""One tokenmill process per workdir: a lock held for the whole run, and the runs a dead holder left open.

The lock is `WORKDIR/.tokenmill.lock`, held with flock(2) by the running process and naming it (host,
pid, start time, command). The kernel drops a flock when its process dies, however it dies (SIGKILL,
OOM, a lost node), so a lock that can be taken while the file still names a holder is stale: it is
taken over with a message. The file is emptied on a clean release, never unlinked (unlinking lets two
processes hold locks on two different inodes). flock on NFS is only as good as the NFS client's locks:
give every host its own workdir, or one shared filesystem with working locks.

A workdir on object storage (`s3://...`) has nothing to flock: its lock is a local file named by the
URI's hash in the object cache (`storage.cache_dir()`), which keeps two runs on one machine apart but not
two drivers on different machines: submit a workdir's runs from one place (a Ray job's driver runs on the
head node).

A run whose process died leaves its MLflow runs RUNNING; `close_dead_runs` (orchestration.runtime.tracking)
marks them KILLED when the next process takes the workdir.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import os
import socket
import sys
from pathlib import Path

from pipelines import storage

LOCK_NAME = ".tokenmill.lock"


class WorkdirBusy(RuntimeError):
    """Another live process holds the workdir."""


def lock_path(workdir) -> Path:
    workdir = storage.path(workdir)
    if storage.is_uri(workdir):
        return storage.local_dir("locks", workdir) / LOCK_NAME
    return workdir / LOCK_NAME


class WorkdirLock:
    def __init__(self, workdir, what: str):
        self.workdir = workdir
        self.path = lock_path(workdir)
        self.what = what
        self.stale: dict | None = None  # the dead holder's record, when this lock was taken over
        self._fd: int | None = None

    def __enter__(self) -> "WorkdirLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read(fd)
            os.close(fd)
            raise WorkdirBusy(f"{self.workdir} is in use by {describe(holder)}; wait for it to finish or stop "
                              f"it (two runs on one workdir would delete each other's files)") from None
        self.stale = _read(fd) or None  # a record left in an unlocked file: its writer died
        record = {"host": socket.gethostname(), "pid": os.getpid(), "what": self.what,
                  "started": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                  "command": " ".join(sys.argv)[:500]}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(record).encode(), 0)
        os.fsync(fd)
        self._fd = fd
        return self

    def __exit__(self, *exc) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)  # released cleanly: nothing stale to report next time
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


def _read(fd: int) -> dict:
    raw = os.pread(fd, 1 << 16, 0)
    try:
        return json.loads(raw) if raw.strip() else {}
    except ValueError:
        return {"what": "an unknown process (unreadable lock record)"}


def describe(holder: dict) -> str:
    if not holder:
        return "another process (no record yet)"
    return (f"{holder.get('what', 'tokenmill')} (pid {holder.get('pid')} on {holder.get('host')}, "
            f"started {holder.get('started')})")


def inspect(workdir) -> tuple[str, dict]:
    """("free" | "held" | "stale", holder record) without taking the lock (for `tokenmill doctor`)."""
    path = lock_path(workdir)
    if not path.is_file():
        return "free", {}
    fd = os.open(path, os.O_RDONLY)
    try:
        holder = _read(fd)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return "held", holder
        fcntl.flock(fd, fcntl.LOCK_UN)
        return ("stale" if holder else "free"), holder
    finally:
        os.close(fd)
