"""`tokenmill doctor [WORKDIR]`: checks an installation and a workdir and says what is wrong, in plain
words, with the fix. Each check returns Findings; the command prints them and exits 1 if any is a problem.

Installation: Python and package versions (the torch pin), Ray reachable (RAY_ADDRESS) or startable,
the MLflow store readable and its folder writable. Workdir: the lock (free, held, or stale from a dead
process), MLflow runs of the workdir left RUNNING, every stage manifest and its files, the token shards
and their tokenizer, the dedup index, the model export, and free disk against the largest stage output.
"""

from __future__ import annotations

import importlib.metadata as md
import json
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from pipelines import storage
from pipelines.errors import MachineFault

TORCH_PIN = "2.13.0"


@dataclass
class Finding:
    ok: bool
    what: str
    fix: str = ""

    def line(self) -> str:
        return f"  {'ok' if self.ok else 'PROBLEM'}: {self.what}" + ("" if self.ok else f"\n      fix: {self.fix}")


def installation() -> list[Finding]:
    out = [Finding(sys.version_info >= (3, 10), f"Python {sys.version.split()[0]}", "use Python 3.10 or newer")]
    versions = {}
    for dist in ("tokenmill", "torch", "ray", "mlflow", "datatrove", "fasttext-numpy2-wheel", "sentencepiece",
                 "zstandard", "warcio"):
        try:
            versions[dist] = md.version(dist)
        except md.PackageNotFoundError:
            versions[dist] = None
    missing = [d for d, v in versions.items() if v is None and d != "fasttext-numpy2-wheel"]
    out.append(Finding(not missing, "packages: " + ", ".join(f"{d} {v}" for d, v in versions.items() if v),
                       f"missing {', '.join(missing)}: run `make install` (pip install -e .)"))
    torch_v = (versions.get("torch") or "").split("+")[0]
    out.append(Finding(torch_v == TORCH_PIN, f"torch {versions.get('torch')} (pinned {TORCH_PIN})",
                       f"pip install torch=={TORCH_PIN} (the CPU build; an unpinned torch pulls CUDA)"))
    return out


def ray_check() -> list[Finding]:
    import ray

    address = os.environ.get("RAY_ADDRESS")
    try:
        if address:
            ray.init(address=address, logging_level="ERROR")
        else:
            ray.init(address="local", num_cpus=1, include_dashboard=False, logging_level="ERROR")
        cpus = ray.cluster_resources().get("CPU", 0)
        where = f"the cluster at RAY_ADDRESS={address}" if address else "a local Ray (started and stopped)"
        return [Finding(True, f"Ray {ray.__version__}: {where}, {cpus:g} CPUs")]
    except Exception as exc:  # noqa: BLE001
        fix = ("check that the cluster runs (`ray status` on its head) and the address is right" if address else
               "see /tmp/ray/session_latest/logs; another process may hold the ports, or /tmp is full")
        return [Finding(False, f"Ray could not {'connect' if address else 'start'}: {type(exc).__name__}: "
                               f"{str(exc).splitlines()[0] if str(exc) else ''}", fix)]
    finally:
        if ray.is_initialized():
            ray.shutdown()


def mlflow_check() -> list[Finding]:
    import mlflow

    from orchestration.runtime import tracking

    uri = os.environ.get("MLFLOW_TRACKING_URI") or mlflow.get_tracking_uri()
    fix = "set MLFLOW_TRACKING_URI to a store you can reach (sqlite:///path/mlflow.db, http://...)"
    try:
        tracking.setup_uri()  # seconds, not MLflow's 4 minutes of retries, for a server that is not there
    except MachineFault as exc:
        return [Finding(False, str(exc), fix)]
    except Exception as exc:  # noqa: BLE001
        return [Finding(False, f"MLflow store {tracking.shown_uri(uri)} unreadable: {type(exc).__name__}: "
                        f"{str(exc).splitlines()[0]}", fix)]
    if uri.startswith("sqlite:///"):
        folder = Path(uri.removeprefix("sqlite:///")).resolve().parent
        if not os.access(folder, os.W_OK):
            return [Finding(False, f"MLflow store {uri}: its folder {folder} is not writable",
                            "make it writable or point MLFLOW_TRACKING_URI elsewhere")]
    return [Finding(True, f"MLflow store {uri} reachable")]


def workdir_check(workdir: Path) -> list[Finding]:
    from orchestration.runtime.workdir_lock import describe, inspect

    workdir = storage.path(workdir).resolve()
    if not workdir.is_dir():
        return [Finding(False, f"{workdir} does not exist", "give the --workdir of a run")]
    out = []
    state, holder = inspect(workdir)
    if state == "held":
        out.append(Finding(True, f"workdir in use by {describe(holder)} (checks of its files may race it)"))
    elif state == "stale":
        out.append(Finding(False, f"a stale lock: {describe(holder)} died without finishing",
                           "run the same command again: it takes the lock over and resumes"))
    else:
        out.append(Finding(True, "workdir lock free"))
    out += _running_runs(workdir, state)
    out += _manifests(workdir)
    out += _disk(workdir)
    return out


def _running_runs(workdir: Path, lock_state: str) -> list[Finding]:
    import mlflow

    from orchestration.runtime.tracking import WORKDIR_TAG

    try:
        runs = mlflow.search_runs(search_all_experiments=True, output_format="list",
                                  filter_string=f"tags.`{WORKDIR_TAG}` = '{workdir}' and attributes.status = 'RUNNING'")
    except Exception:  # noqa: BLE001  (the MLflow check reports an unreachable store)
        return []
    if not runs or lock_state == "held":
        return [Finding(True, f"{len(runs)} MLflow runs of this workdir RUNNING")] if runs else []
    return [Finding(False, f"{len(runs)} MLflow run(s) of this workdir left RUNNING by a dead process: "
                           + ", ".join(r.info.run_id for r in runs),
                    "run the same command again (it marks them KILLED), or `mlflow runs` to end them")]


def _manifests(workdir: Path) -> list[Finding]:
    from pipelines.manifest import load_manifest, verify_files
    from pipelines.shard_reader import ShardSet

    out = []
    for path in sorted(workdir.glob("stages/*/manifest.json")):
        try:
            manifest = load_manifest(path)
            verify_files(manifest, workdir)
            out.append(Finding(True, f"{path.relative_to(workdir)}: {len(manifest['files'])} files verify"))
        except (ValueError, OSError) as exc:
            out.append(Finding(False, f"{path.relative_to(workdir)}: {exc}",
                               "re-run the pipeline: a stage whose files do not verify is redone"))
    tokens = workdir / "tokens" / "manifest.json"
    if tokens.is_file():
        tok = workdir / "tokenizer" / "tokenizer.model"
        try:
            shards = ShardSet(tokens, tokenizer_path=str(tok) if tok.is_file() else None, verify=True)
            out.append(Finding(True, f"tokens: {shards.num_shards} shards, {shards.total_tokens:,} tokens verify"
                                     + (" with their tokenizer" if tok.is_file() else "")))
        except (ValueError, OSError) as exc:
            out.append(Finding(False, f"tokens/manifest.json: {exc}", "re-run the pipeline to rewrite the shards"))
    index = workdir / "dedup" / "index" / "manifest.json"
    if index.is_file():
        man = json.loads(index.read_text())
        done = bool(man.get("mlflow_run_id"))
        out.append(Finding(done, f"dedup index: {man.get('documents', '?')} documents"
                           + ("" if done else " (unfinished: its run never recorded it)"),
                           "re-run the pipeline to finish it before a later run names it in dedup_index.previous"))
    export = workdir / "model"
    if (export / "model.safetensors").is_file():
        try:
            from model.export import load_export

            load_export(export)
            out.append(Finding(True, "model export loads"))
        except Exception as exc:  # noqa: BLE001
            out.append(Finding(False, f"model export {export}: {type(exc).__name__}: {exc}",
                               "re-run the training job: it exports again from its last checkpoint"))
    return out


def _disk(workdir: Path) -> list[Finding]:
    sizes = {}
    for stage in (workdir / "docs").glob("*"):
        sizes[stage.name] = sum(f.stat().st_size for f in stage.rglob("*") if f.is_file())
    need = 2 * max(sizes.values(), default=0)  # the next stage writes about what the largest one did, plus keys
    free = shutil.disk_usage(workdir).free
    out = [Finding(free >= need, f"free disk {_size(free)} (the largest stage output is "
                                 f"{_size(max(sizes.values(), default=0))}; the next run may need {_size(need)})",
                   f"free at least {_size(need - free)} more on {workdir}'s filesystem before the next run")]
    from orchestration.corpus.pipeline import unlisted_outputs

    stale = unlisted_outputs(workdir)
    if stale:
        shown = ", ".join(str(p.relative_to(workdir)) for p in stale[:3]) + (" ..." if len(stale) > 3 else "")
        out.append(Finding(False, f"{len(stale)} file(s) in the output folders that no manifest of the last run "
                                  f"lists: {shown}", "re-run the pipeline (it removes them), or remove them: a reader "
                                                     "of the folder would take them for this run's"))
    partial = storage.partial_files(workdir)
    if partial:
        total = sum(p.stat().st_size for p in partial if p.is_file())
        shown = ", ".join(str(p.relative_to(workdir)) for p in partial[:3]) + (" ..." if len(partial) > 3 else "")
        out.append(Finding(False, f"{len(partial)} partial file(s) left by an interrupted write ({_size(total)}): "
                                  f"{shown}", "nothing reads them; the next run on this workdir removes them"))
    return out


def _size(n: float) -> str:
    """Bytes as a person reads them: 512 KB, 20.5 MB, 3.2 GB."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n:.0f} bytes"


def run(workdir: str | None, echo=print) -> int:
    sections = [("installation", installation), ("Ray", ray_check), ("MLflow", mlflow_check)]
    if workdir:
        sections.append((f"workdir {storage.path(workdir).resolve()}", lambda: workdir_check(storage.path(workdir))))
    problems = 0
    for title, check in sections:
        echo(f"{title}:")
        for finding in check():
            echo(finding.line())
            problems += not finding.ok
    echo(f"tokenmill doctor: {'no problems found' if not problems else f'{problems} problem(s)'}")
    return 1 if problems else 0
