"""HTML -> main text with trafilatura, each page bounded in time.

trafilatura (lxml underneath) can spend minutes on a pathological page, and a Python thread cannot
be interrupted inside C code; signal.alarm would only work in the main thread (Ray does not promise
that map functions run there). So, like datatrove's ExtractorSandbox, pages are extracted in a
long-lived worker process: the caller waits on a pipe for at most timeout_s, and on timeout kills
the worker (SIGKILL always works) and starts a new one (~0.5 s) for the next page. Unlike
datatrove (multiprocessing fork) the worker is a fresh interpreter, see _Worker.

trafilatura's own `deduplicate` is off by default: its cache is per process, so a page's text would
depend on which pages the same worker saw before, and outputs would change with the worker count.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import weakref
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

from pipelines.reasons import EXTRACT_EMPTY, EXTRACT_ERROR, EXTRACT_TIMEOUT


@dataclass(frozen=True)
class Extraction:
    text: str
    reason: str  # "" when text was extracted, else one of the EXTRACT_* reasons
    title: str | None = None


def extract_page(html: str, options: dict[str, Any]) -> tuple[str | None, str | None]:
    """trafilatura in this process, unbounded: (main text or None, title or None)."""
    from trafilatura import extract
    from trafilatura.metadata import extract_title
    from trafilatura.utils import load_html

    tree = load_html(html)
    if tree is None:
        return None, None
    title = extract_title(tree)  # cheap (h1/meta/<title>); with_metadata=True would also run htmldate
    return extract(tree, **options), title  # extract() works on a copy of the tree


def _serve(read_fd: int, write_fd: int, options: dict[str, Any]) -> None:
    """The worker process: extract pages received on read_fd until the parent goes away."""
    try:  # if memory runs out, let the kernel kill this worker rather than its parent
        with open("/proc/self/oom_score_adj", "w") as f:
            f.write("1000\n")
    except OSError:
        pass
    inbox, outbox = Connection(read_fd, writable=False), Connection(write_fd, readable=False)
    extract_page("<html><body><p>warm up</p></body></html>", options)  # imports trafilatura
    outbox.send("ready")
    while True:
        try:
            html = inbox.recv()
        except (EOFError, OSError):  # the parent closed the pipe or died
            return
        try:
            result = ("ok", *extract_page(html, options))
        except Exception as e:  # noqa: BLE001 - reported to the parent as extract_error
            result = ("error", f"{type(e).__name__}: {e}", None)
        outbox.send(result)


class _Worker:
    """One extraction process (`python -m pipelines.extract`) and its two pipes.

    A fresh interpreter rather than multiprocessing: fork would copy a threaded Ray worker with
    locks held by other threads, and spawn/forkserver re-run the caller's __main__ script in the
    child. The child sees the parent's sys.path through PYTHONPATH.
    """

    def __init__(self, options: dict[str, Any], start_timeout_s: float):
        to_child_r, to_child_w = os.pipe()
        from_child_r, from_child_w = os.pipe()
        self.outbox = Connection(to_child_w, readable=False)
        self.inbox = Connection(from_child_r, writable=False)
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
        cmd = [sys.executable, "-m", "pipelines.extract", str(to_child_r), str(from_child_w), json.dumps(options)]
        try:
            self.proc = subprocess.Popen(cmd, pass_fds=(to_child_r, from_child_w), env=env, stdin=subprocess.DEVNULL)
        except BaseException:
            self.outbox.close()
            self.inbox.close()
            raise
        finally:
            os.close(to_child_r)  # the child's ends: held by the child only
            os.close(from_child_w)
        try:
            ready = self.inbox.poll(start_timeout_s) and self.inbox.recv() == "ready"
        except EOFError:  # it exited: an import error, printed on its stderr
            ready = False
        if not ready:
            try:
                code = self.proc.wait(timeout=1)
            except subprocess.TimeoutExpired:
                code = None
            self.stop()
            raise RuntimeError(f"HTML extraction worker did not start (waited up to {start_timeout_s}s, "
                               f"exit code {code}; its stderr says why)")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        self.outbox.close()
        self.inbox.close()
        if self.alive():
            self.proc.kill()
        self.proc.wait(timeout=10)


class HtmlExtractor:
    """extract(html) -> (text, reason); reason "" ok, "extract_empty", "extract_timeout", "extract_error".

    timeout_s bounds each page (wall time of trafilatura in the worker); timeout_s <= 0 extracts
    in this process with no bound (for debugging). One instance is not meant to be shared across
    processes; pickling it carries only its settings.
    """

    def __init__(
        self,
        timeout_s: float = 5.0,
        favor_precision: bool = True,
        include_comments: bool = False,
        include_tables: bool = True,
        deduplicate: bool = False,
        start_timeout_s: float = 60.0,
    ):
        self.timeout_s = timeout_s
        self.start_timeout_s = start_timeout_s
        self.options: dict[str, Any] = {
            "favor_precision": favor_precision,
            "include_comments": include_comments,
            "include_tables": include_tables,
            "deduplicate": deduplicate,
            "output_format": "txt",
        }
        self.restarts = 0  # workers killed after a timeout or a crash
        self._worker: _Worker | None = None
        self._lock = threading.Lock()
        self._finalizer: weakref.finalize | None = None

    def extract(self, html: str, meta: dict[str, Any] | None = None) -> tuple[str, str]:
        """(text, reason); when meta is given and trafilatura found a title, meta["title"] is set."""
        result = self.extract_full(html)
        if meta is not None and result.title:
            meta["title"] = result.title
        return result.text, result.reason

    def extract_full(self, html: str) -> Extraction:
        if not html or not html.strip():
            return Extraction("", EXTRACT_EMPTY)
        if self.timeout_s is None or self.timeout_s <= 0:
            try:
                text, title = extract_page(html, self.options)
            except Exception:  # noqa: BLE001
                return Extraction("", EXTRACT_ERROR)
            return _result(text, title)
        with self._lock:
            return self._extract_bounded(html)

    def _extract_bounded(self, html: str) -> Extraction:
        worker = self._ensure_worker()
        try:
            worker.outbox.send(html)
            if not worker.inbox.poll(self.timeout_s):
                self._restart()  # killing the worker is the only way to stop lxml mid-parse
                return Extraction("", EXTRACT_TIMEOUT)
            status, text, title = worker.inbox.recv()
        except (EOFError, OSError):  # the worker died on this page (e.g. killed for memory)
            self._restart()
            return Extraction("", EXTRACT_ERROR)
        if status != "ok":
            return Extraction("", EXTRACT_ERROR)
        return _result(text, title)

    def _ensure_worker(self) -> _Worker:
        if self._worker is not None and not self._worker.alive():
            self._restart()
        if self._worker is None:
            self._worker = _Worker(self.options, self.start_timeout_s)
            # stops the worker when this extractor is garbage collected (or at exit)
            self._finalizer = weakref.finalize(self, self._worker.stop)
        return self._worker

    def _stop_worker(self) -> None:
        if self._finalizer is not None:
            self._finalizer()  # runs _Worker.stop once
        self._worker, self._finalizer = None, None

    def _restart(self) -> None:
        self._stop_worker()  # the next page starts a fresh worker
        self.restarts += 1

    def close(self) -> None:
        with self._lock:
            self._stop_worker()

    def __enter__(self) -> HtmlExtractor:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.update(_worker=None, _lock=None, _finalizer=None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()


def _result(text: str | None, title: str | None) -> Extraction:
    text = (text or "").strip()
    return Extraction(text, "" if text else EXTRACT_EMPTY, title or None)


if __name__ == "__main__":  # the worker process started by _Worker
    _serve(int(sys.argv[1]), int(sys.argv[2]), json.loads(sys.argv[3]))
