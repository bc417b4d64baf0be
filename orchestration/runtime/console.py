"""What a person watching a run sees, and where everything else goes.

By default the terminal shows tokenmill's own lines (where it runs, what each pass and global step did), one
progress display per pass (documents, rate, ETA) and for training (step, loss, tokens/s, ETA), and the
summary table. Everything else (the Ray workers' output, Ray Train's checkpoint reports, MLflow's and the
libraries' log lines and warnings) goes to the run's log folder: `WORKDIR/logs/` (`tokenmill.log` for this
process's log records; `ray/` for a copy of the local Ray session's logs, taken when the command ends). A
workdir on object storage keeps its logs on this machine, under the object cache
(`~/.cache/tokenmill/logs/<hash of the URI>/`): the first line a run prints says where. `--verbose` (or
TOKENMILL_VERBOSE=1) shows all of it live, as Ray prints it.

Progress displays need a terminal; in a pipe or a CI log each pass and the training job end with their line.
"""

from __future__ import annotations

import atexit
import logging
import os
import shutil
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from pipelines import storage

_state = {"verbose": os.environ.get("TOKENMILL_VERBOSE", "") not in ("", "0"), "log_dir": None, "handler": None}
# the loggers whose records go to the log file instead of the terminal (each library installs its own handler)
QUIET_LOGGERS = ("ray", "ray.data", "ray.train", "ray.tune", "mlflow", "alembic", "py.warnings", "urllib3",
                 "botocore", "datatrove", "filelock", "fsspec", "httpx")


def log_dir_for(workdir) -> Path:
    workdir = storage.path(workdir)
    return storage.local_dir("logs", workdir) if storage.is_uri(workdir) else workdir / "logs"


def configure(workdir, verbose: bool | None = None) -> Path:
    """Send this process's library logs and warnings to the workdir's log folder (unless verbose); its path."""
    if verbose is not None:
        _state["verbose"] = verbose or _state["verbose"]
    folder = log_dir_for(storage.path(workdir).resolve())
    _state["log_dir"] = folder
    if not _state["verbose"]:
        if not storage.is_uri(workdir):
            storage.path(workdir).mkdir(parents=True, exist_ok=True)  # an unusable workdir is named as given
        folder.mkdir(parents=True, exist_ok=True)
        handler = _LogFile(folder / "tokenmill.log")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        _state["handler"] = handler
        logging.captureWarnings(True)
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # its tqdm bars while logging a model
        quiet_libraries()
    return folder


class _LogFile(logging.FileHandler):
    """The log file; when writing to it fails (a full disk), one line says so and later records are dropped.
    (logging's own handler prints a "--- Logging error ---" traceback for every record: 378 of them on a
    full disk while a classifier trained.)"""

    failed = False

    def handleError(self, record: logging.LogRecord) -> None:
        if self.failed:
            return
        self.failed = True
        import sys

        exc = sys.exc_info()[1]
        print(f"tokenmill: cannot write the log file {self.baseFilename} ({exc}); library log lines are dropped "
              "from here on", file=sys.stderr)


def quiet_libraries() -> None:
    """Point the libraries' loggers at the log file (again: Ray and MLflow install their handlers on import
    and on ray.init)."""
    handler = _state["handler"]
    if handler is None:
        return
    for name in QUIET_LOGGERS:
        log = logging.getLogger(name)
        log.handlers = [handler]
        log.propagate = False


def log_folder() -> Path | None:
    """This run's log folder, once `configure` has named it (where a failure's traceback goes too)."""
    return _state["log_dir"]


def where_logs() -> str:
    """For the line a run prints when Ray starts: where the rest of the output is."""
    if _state["verbose"] or _state["log_dir"] is None:
        return ""
    return f"; Ray's and the libraries' logs in {_state['log_dir']} (--verbose shows them here)"


def worker_log_to_driver() -> bool:
    """Whether Ray forwards the workers' output to this terminal (ray.init(log_to_driver=...))."""
    return _state["verbose"]


def keep_ray_logs(logs_dir: str | None) -> None:
    """Copy the local Ray session's logs into the log folder when this process ends."""
    folder = _state["log_dir"]
    if not logs_dir or folder is None:
        return

    def copy() -> None:
        try:
            shutil.copytree(logs_dir, folder / "ray", dirs_exist_ok=True,
                            ignore=shutil.ignore_patterns("*.sock", "events"))
        except (OSError, shutil.Error):
            pass  # a log file rotated away while copying: the rest is there

    atexit.register(copy)


# ------------------------------------------------------------------------------ progress displays


def _rich_console():
    from rich.console import Console

    return Console(stderr=True)


@contextmanager
def progress(description: str, total: float, unit: str) -> Iterator["Progress"]:
    """A progress display: advance(amount, docs=...) as work finishes; gone when the block ends (the
    caller prints the line that says what was done)."""
    bar = Progress(description, total, unit)
    try:
        yield bar
    finally:
        bar.stop()


class Progress:
    def __init__(self, description: str, total: float, unit: str):
        self.unit, self.total, self.docs, self.done, self.start = unit, total, 0, 0.0, time.monotonic()
        console = _rich_console()
        self._rich = None
        if console.is_terminal and not _state["verbose"]:
            from rich.progress import (BarColumn, Progress as RichProgress, TaskProgressColumn, TextColumn,
                                       TimeRemainingColumn)

            self._rich = RichProgress(TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(),
                                      TextColumn("{task.fields[detail]}"), TimeRemainingColumn(),
                                      console=console, transient=True)
            self._task = self._rich.add_task(description, total=total or None, detail="")
            self._rich.start()

    def advance(self, amount: float = 0, docs: int = 0) -> None:
        """`amount` more of the total done (MB or documents), `docs` more documents read."""
        self.docs += docs
        self.done += amount
        if self._rich is None:
            return
        rate = f"{self.docs / max(time.monotonic() - self.start, 1e-9):,.0f} docs/s"
        if self.unit == "docs":
            text = f"{self.done:,.0f}/{self.total:,.0f} docs · {rate}"
        else:
            text = f"{self.docs:,} docs · {self.done:,.1f}/{self.total:,.1f} {self.unit} · {rate}"
        self._rich.update(self._task, advance=amount, detail=text)

    @property
    def live(self) -> bool:
        """Whether it draws (on a terminal, not --verbose); else callers print their progress lines."""
        return self._rich is not None

    def set(self, completed: float, detail: str) -> None:
        if self._rich is not None:
            self._rich.update(self._task, completed=completed, detail=detail)

    def stop(self) -> None:
        if self._rich is not None:
            self._rich.stop()
            self._rich = None


class Board:
    """Where a training job's workers post what the driver shows (run as a Ray actor, num_cpus=0): notes
    (resumed, a spike, an unusable checkpoint) and the latest step line; and where they read a stop request."""

    def __init__(self):
        self.notes: list[str] = []
        self.latest: tuple[int, int, str, str] = (0, 0, "", "")  # step, of, its line, the line in short
        self.stop = False  # the driver got SIGTERM/SIGINT: checkpoint at the next step boundary and return

    def request_stop(self) -> None:
        self.stop = True

    def stop_requested(self) -> bool:
        return self.stop

    def note(self, text: str) -> None:
        self.notes.append(text)

    def step(self, step: int, total: int, text: str, short: str) -> None:
        self.latest = (step, total, text, short)

    def take(self) -> tuple[list[str], tuple[int, int, str, str]]:
        notes, self.notes = self.notes, []
        return notes, self.latest


class Poller:
    """Calls `fn` every `every` seconds on a thread until stopped (a training job's driver waits in
    trainer.fit(); its progress comes from the workers through a Ray actor)."""

    def __init__(self, fn, every: float = 0.5):
        self._fn, self._every, self._stop = fn, every, threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self._stop.wait(self._every):
            try:
                self._fn()
            except Exception:  # noqa: BLE001  (a display must never fail the job)
                logging.getLogger("tokenmill").debug("progress poll failed", exc_info=True)

    def __enter__(self) -> "Poller":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        try:
            self._fn()  # the last word
        except Exception:  # noqa: BLE001
            pass
