"""`tokenmill lineage START`: the lineage of a training run, checkpoint or manifest, walked back through MLflow.

Each run is linked to what it read by dataset inputs whose digest is the producing run's
`tokenmill.output_digest` tag: training run -> token manifest -> tokenize run (and the tokenizer run)
-> quality, MinHash, exact dedup, filter, extract, ingest runs -> the raw files (raw_files.json: path,
bytes, sha256). The walk uses MLflow and the files the runs name, nothing else; a run reached twice
(the tokenizer and tokenize both read the last stage) is expanded once and referred to after.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import mlflow

from orchestration import tracking
from orchestration.sampling import STATE_FILE

# the parameters worth a line per kind of run (stage runs show all of theirs: they are few)
TRAIN_PARAMS = ("model.d_model", "model.n_layers", "train.steps", "optim.lr", "train.global_batch_tokens",
                "data.seq_len", "world_size", "params_total")
METRICS = ("docs_in", "docs_kept", "docs_dropped", "docs_quarantined", "documents", "tokens", "vocab_size",
           "loss", "val_loss", "records_lost_to_corruption")


def resolve(start: str) -> tuple[str, dict]:
    """(run id, what the start was) for a run id, a checkpoint folder or a manifest path."""
    path = Path(start)
    if path.is_dir() and (path / STATE_FILE).is_file():
        state = json.loads((path / STATE_FILE).read_text())
        return state["mlflow_run_id"], {"checkpoint": str(path.resolve()), "step": state.get("step")}
    if path.is_file():
        manifest = json.loads(path.read_text())
        if manifest.get("mlflow_run_id"):
            return manifest["mlflow_run_id"], {"manifest": str(path.resolve())}
        runs = tracking.producer_of(manifest["digest"])
        if not runs:
            raise LookupError(f"{path}: no finished MLflow run has output digest {manifest['digest'][:12]}... in "
                              f"the store {mlflow.get_tracking_uri()}")
        return runs[0].info.run_id, {"manifest": str(path.resolve())}
    return start, {}


def build(start: str) -> dict:
    run_id, origin = resolve(start)
    tree = _node(mlflow.get_run(run_id), {})
    return {**origin, "lineage": tree}


def _node(run, seen: dict) -> dict:
    rid = run.info.run_id
    if rid in seen:
        return {"run_id": rid, "name": run.info.run_name, "see_above": True}
    tags, params = run.data.tags, run.data.params
    kind = tags.get(tracking.KIND_TAG, "")
    shown = ({k: params[k] for k in TRAIN_PARAMS if k in params} if kind == "train"
             else dict(sorted(params.items())[:12]))
    node = {"run_id": rid, "name": run.info.run_name, "kind": kind, "stage": tags.get("tokenmill.stage"),
            "status": run.info.status,
            "start_time": dt.datetime.fromtimestamp(run.info.start_time / 1000, dt.timezone.utc).isoformat(
                timespec="seconds"),
            "code_version": tags.get(tracking.CODE_VERSION_TAG) or params.get("code_version"),
            "params": shown, "metrics": {k: run.data.metrics[k] for k in METRICS if k in run.data.metrics},
            "output_digest": tags.get(tracking.OUTPUT_SHA256_TAG) or tags.get(tracking.OUTPUT_DIGEST_TAG),
            "inputs": []}
    seen[rid] = node
    for inp in run.inputs.dataset_inputs:
        ds = inp.dataset
        context = next((t.value for t in inp.tags if t.key == "mlflow.data.context"), "")
        entry = {"name": ds.name, "digest": ds.digest, "context": context, "source": _source(ds.source)}
        producers = tracking.producer_of(ds.digest)
        if producers:
            entry["produced_by"] = _node(producers[0], seen)
        elif context == "raw_input" and entry["source"] and Path(entry["source"]).is_file():
            entry["files"] = _raw_files(Path(entry["source"]))
        node["inputs"].append(entry)
    return node


def _source(raw: str) -> str | None:
    try:
        return json.loads(raw).get("uri")
    except (ValueError, AttributeError):
        return None


def _raw_files(path: Path) -> list[dict]:
    if path.suffix != ".json":  # a raw input that is one file (the tokenizer model)
        return []
    data = json.loads(path.read_text())
    return data.get("files", [])


def raw_files(tree: dict) -> list[dict]:
    """Every raw file the lineage reaches."""
    out, stack = [], [tree["lineage"]]
    while stack:
        node = stack.pop()
        for inp in node.get("inputs", []):
            out += inp.get("files", [])
            if "produced_by" in inp:
                stack.append(inp["produced_by"])
    return out


def format_tree(tree: dict, max_files: int = 20) -> str:
    lines = []
    if tree.get("checkpoint"):
        lines.append(f"checkpoint {tree['checkpoint']} (step {tree.get('step')})")
    if tree.get("manifest"):
        lines.append(f"manifest {tree['manifest']}")
    _lines(tree["lineage"], "", lines, max_files)
    return "\n".join(lines)


def _lines(node: dict, indent: str, out: list[str], max_files: int) -> None:
    if node.get("see_above"):
        out.append(f"{indent}{node['name']}  run {node['run_id']}  (see above)")
        return
    what = node["stage"] or node["name"]
    out.append(f"{indent}{what}  run {node['run_id']}  {node['status']}  {node['start_time']}  "
               f"code {str(node['code_version'] or '?')[:12]}")
    if node["params"]:
        out.append(f"{indent}  params: " + " ".join(f"{k}={v}" for k, v in node["params"].items()))
    if node["metrics"]:
        out.append(f"{indent}  counts: " + " ".join(f"{k}={v:g}" for k, v in node["metrics"].items()))
    for inp in node["inputs"]:
        out.append(f"{indent}  <- {inp['context'] or 'input'} {inp['name']} (digest {inp['digest'][:12]})")
        if "produced_by" in inp:
            _lines(inp["produced_by"], indent + "     ", out, max_files)
        for f in inp.get("files", [])[:max_files]:
            out.append(f"{indent}       {f['path']}  {f['bytes']:,} B  sha256 {f['sha256'][:16]}")
        if len(inp.get("files", [])) > max_files:
            out.append(f"{indent}       ... and {len(inp['files']) - max_files} more raw files (all of them in --json)")


def verify(tree: dict) -> list[tuple[bool, str]]:
    """(ok, line) for every file the lineage names that can be re-hashed here: token shards (against their
    manifest), stage manifests and their files, the tokenizer, and the checkpoint (against its file lists)."""
    from pipelines.manifest import load_manifest, mlflow_digest, verify_files
    from pipelines.shard_reader import ShardIntegrityError, ShardSet
    from pipelines.stage_files import sha256_file

    out, stack, done = [], [tree["lineage"]], set()
    if tree.get("checkpoint"):
        out += _verify_checkpoint(Path(tree["checkpoint"]))
    while stack:
        node = stack.pop()
        for inp in node.get("inputs", []):
            stack += [inp["produced_by"]] if "produced_by" in inp else []
            src = inp.get("source")
            if not src or src in done or inp.get("files") is not None and src.endswith("raw_files.json"):
                continue
            done.add(src)
            path = Path(src)
            if not path.exists():
                out.append((False, f"{path} is missing (named by run {node['run_id']} as its {inp['name']} input)"))
                continue
            try:
                if path.name == "manifest.json" and "shards" in json.loads(path.read_text()):
                    shards = ShardSet(path, verify=True)
                    ok = mlflow_digest(shards.manifest["digest"]) == inp["digest"]
                    out.append((ok, f"{path}: {shards.num_shards} token shards verify" if ok else
                                f"{path}: verifies, but it is not the manifest run {node['run_id']} read (digest changed)"))
                elif path.name == "manifest.json":
                    manifest = load_manifest(path)
                    verify_files(manifest, path.parents[2])  # stage manifests list files relative to the workdir
                    ok = mlflow_digest(manifest["digest"]) == inp["digest"]
                    out.append((ok, f"{path}: {len(manifest['files'])} files verify" if ok else
                                f"{path}: its digest is not the one run {node['run_id']} read"))
                else:  # a single file recorded by its sha256 (the tokenizer model)
                    ok = mlflow_digest(sha256_file(path)) == inp["digest"]
                    out.append((ok, f"{path}: sha256 matches" if ok else
                                f"{path}: changed since run {node['run_id']} read it (sha256 differs)"))
            except (ShardIntegrityError, ValueError, OSError) as exc:
                out.append((False, f"{path}: {exc}"))
    return out


def _verify_checkpoint(path: Path) -> list[tuple[bool, str]]:
    from pipelines.stage_files import sha256_file

    lists = sorted(path.glob("files_rank*.json"))
    if not lists:
        return [(path.is_dir(), f"checkpoint {path}: " + ("no file lists to check (written before they existed)"
                                                          if path.is_dir() else "missing"))]
    problems = []
    for listing in lists:
        for name, digest in json.loads(listing.read_text()).items():
            f = path / name
            if not f.is_file():
                problems.append(f"{name} is missing")
            elif sha256_file(f) != digest:
                problems.append(f"{name} changed (sha256 differs)")
    if problems:
        return [(False, f"checkpoint {path}: " + "; ".join(problems))]
    return [(True, f"checkpoint {path}: every file verifies")]
