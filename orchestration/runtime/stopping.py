"""Stopping on SIGINT and SIGTERM: Ctrl-C, and what Kubernetes, Slurm and `ray job stop` send on preemption.

`install()` (at the start of every command, and again once Ray is up: `ray.init` puts its own SIGTERM handler
in place, which exits with a C++ stack dump and code 15) routes both signals here. The first one:

- mutes this process's standard error (file descriptor 2) into the run's log file: what Ray's C++ core and the
  libraries print while the process winds down ("Failed to push error to driver", stack dumps) is kept there,
  not shown;
- then either raises `Interrupted` in the main thread (a pipeline: the `with` blocks unwind, so the workdir
  lock is released and open MLflow runs are ended KILLED by `tracking.run`), or, inside `graceful(callback)`,
  calls the callback instead (a training job: its workers checkpoint at the next step boundary and return).

The exception is never raised inside a database write: a signal that lands while the main thread is in
SQLAlchemy (MLflow's SQL stores) is delivered again 20 ms later, until the write has finished. (Raised inside
SQLite's executemany, it left that connection holding the database's write lock, and the run could not be
ended KILLED: "database is locked" five seconds later, 1 stop in 11 in a stress run.)

Later signals are ignored while the first is handled. The command then prints one line through `say` (to the
terminal, past the mute), naming the signal, what had finished (`note`) and how to resume, and exits 128 + the
signal's number: 130 for SIGINT, 143 for SIGTERM.
"""

from __future__ import annotations

import os
import signal
import threading
from contextlib import contextmanager
from typing import Callable, Iterator

SIGNALS = (signal.SIGINT, signal.SIGTERM)
_state: dict = {"signum": None, "deferred": None, "terminal_fd": None, "graceful": None, "note": ""}


class Interrupted(KeyboardInterrupt):
    """A command stopped by a signal; a KeyboardInterrupt, so that `except Exception` does not swallow it."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


def install() -> None:
    """Route SIGINT and SIGTERM to this module (main thread only: Python delivers signals there)."""
    if threading.current_thread() is not threading.main_thread():
        return
    for sig in SIGNALS:
        signal.signal(sig, _handler)


# the packages a raised exception must not interrupt (a half-done write keeps its lock); checked by module name
UNSAFE = ("sqlalchemy", "sqlite3", "psycopg2", "mlflow.store")
RETRY_S = 0.02


def _handler(signum: int, frame) -> None:
    if _state["signum"] is not None and signum != _state["deferred"]:
        return  # already stopping: the first signal's clean-up is under way
    _state["signum"] = signum
    if _state["graceful"] is not None:
        _mute_stderr()
        _state["graceful"](signum)
        return
    if _in_unsafe(frame):
        _state["deferred"] = signum
        threading.Timer(RETRY_S, os.kill, (os.getpid(), signum)).start()
        return
    _state["deferred"] = None
    _mute_stderr()
    raise Interrupted(signum)


def _in_unsafe(frame) -> bool:
    while frame is not None:
        name = frame.f_globals.get("__name__", "")
        if any(name == u or name.startswith(u + ".") for u in UNSAFE):
            return True
        frame = frame.f_back
    return False


def requested() -> int | None:
    """The signal received, if any."""
    return _state["signum"]


@contextmanager
def graceful(callback: Callable[[int], None]) -> Iterator[None]:
    """Within the block a signal calls `callback(signum)` instead of raising: the work stops itself at its
    next safe point. (The callback runs inside the signal handler: it should only set a flag.)"""
    _state["graceful"] = callback
    try:
        yield
    finally:
        _state["graceful"] = None


def note(text: str) -> None:
    """What has finished so far, for the line a stopped command prints."""
    _state["note"] = text


def progress_note() -> str:
    return _state["note"]


def say(line: str) -> None:
    """A line on the terminal's standard error, also when it has been muted."""
    fd = _state["terminal_fd"] if _state["terminal_fd"] is not None else 2
    os.write(fd, (line.rstrip("\n") + "\n").encode("utf-8", "replace"))


def _mute_stderr() -> None:
    from orchestration.runtime import console

    folder = console.log_folder()
    try:
        target = os.open(folder / "tokenmill.log" if folder else os.devnull, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    except OSError:
        target = os.open(os.devnull, os.O_WRONLY)
    _state["terminal_fd"] = os.dup(2)
    os.dup2(target, 2)
    os.close(target)
