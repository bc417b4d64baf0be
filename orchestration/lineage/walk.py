"""`tokenmill lineage START`: the lineage of a training run, checkpoint or manifest, walked back through MLflow.

Each run is linked to what it read by dataset inputs whose digest is the producing run's
`tokenmill.output_digest` tag: training run -> token manifest -> tokenize run (and the tokenizer run)
-> quality, MinHash, exact dedup, filter, extract, ingest runs -> the raw files (raw_files.json: path,
bytes, sha256). The walk uses MLflow and the files the runs name, nothing else; a run reached twice
(the tokenizer and tokenize both read the last stage) is expanded once and referred to after.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
from pathlib import Path

import mlflow

from orchestration.runtime import tracking
from pipelines import storage
from pipelines.errors import UsageError
from pipelines.stage_files import read_parquet

TRAINED_BY_TAG = "tokenmill.training_run_id"  # on an evaluation run: the run that trained the model it scored

# the parameters worth a line per kind of run (stage runs show all of theirs: they are few)
TRAIN_PARAMS = ("model.d_model", "model.n_layers", "train.steps", "optim.lr", "train.global_batch_tokens",
                "data.seq_len", "world_size", "params_total")
METRICS = ("docs_in", "docs_kept", "docs_dropped", "docs_quarantined", "documents", "tokens", "vocab_size",
           "loss", "val_loss", "records_lost_to_corruption", "eval.mean_bpb")


def _checkpoint_state_file() -> str:
    from model.checkpoint import STATE_FILE  # only for a folder: importing torch cost every pipeline 1.7 s

    return STATE_FILE


def resolve(start: str) -> tuple[str, dict]:
    """(run id, what the start was) for a run id, a checkpoint folder or a manifest path."""
    path = storage.path(start)
    if path.is_dir() and (path / _checkpoint_state_file()).is_file():
        state = json.loads((path / _checkpoint_state_file()).read_text())
        return state["mlflow_run_id"], {"checkpoint": str(path.resolve()), "step": state.get("step")}
    if path.is_file():
        manifest, problem = _read_manifest(path)
        origin = {"manifest": str(path.resolve()), **({"problems": [problem]} if problem else {})}
        if manifest.get("mlflow_run_id"):
            return manifest["mlflow_run_id"], origin
        runs = tracking.producer_of(manifest["digest"])
        if not runs:
            raise UsageError(f"{path}: no finished MLflow run has output digest {manifest['digest'][:12]}... in "
                             f"the store {mlflow.get_tracking_uri()}")
        return runs[0].info.run_id, origin
    return start, {}


def _read_manifest(path) -> tuple[dict, str | None]:
    """A token or stage manifest, and what is wrong with it if its content no longer matches its digest (an
    entry edited after it was written). One that cannot be read at all is a UsageError naming it."""
    from pipelines.manifest import manifest_digest
    from pipelines.token_shards import token_manifest_digest

    try:
        manifest = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path}: not a readable manifest (truncated, or not JSON: {exc})") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("digest"), str):
        raise UsageError(f"{path}: not a tokenmill manifest (no digest)")
    expected = token_manifest_digest(manifest) if "shards" in manifest else manifest_digest(manifest)
    if expected != manifest["digest"]:
        return manifest, (f"{path}: its content does not match its digest {manifest['digest'][:12]}... (edited after "
                          "it was written?): what it lists is not what the runs below recorded")
    return manifest, None


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
            "start_time": _iso(run.info.start_time), "end_time": _iso(run.info.end_time),
            "parent_run_id": tags.get("mlflow.parentRunId"), "parent_name": _run_name(tags.get("mlflow.parentRunId")),
            "pipeline_run_id": tags.get("mlflow.parentRunId") or tags.get("tokenmill.pipeline_run_id"),
            "experiment_id": run.info.experiment_id,
            "code_version": tags.get(tracking.CODE_VERSION_TAG) or params.get("code_version"),
            "params": shown, "metrics": {k: run.data.metrics[k] for k in METRICS if k in run.data.metrics},
            "output_digest": tags.get(tracking.OUTPUT_SHA256_TAG) or tags.get(tracking.OUTPUT_DIGEST_TAG),
            "inputs": []}
    if kind == "train":  # what a training run made: its checkpoints and the consolidated export
        node["outputs"] = [{"name": name, "source": tags[tag], "sha256": tags.get(f"{tag}_sha256")} for name, tag in (
            ("checkpoint", "tokenmill.checkpoint.latest"), ("export", "tokenmill.export")) if tag in tags]
    seen[rid] = node
    if kind == "ablation":  # each variant's data lineage, through its first seed's training run
        from orchestration.ablation.run import ABLATION_TAG, SEED_TAG, VARIANT_TAG

        try:  # the verdict names every variant's runs (a variant equal to another shares that one's runs)
            firsts = [(v, mlflow.get_run(ids[0])) for v, ids in json.loads(
                mlflow.artifacts.load_text(f"runs:/{rid}/verdict.json"))["runs"].items() if ids]
        except Exception:  # noqa: BLE001  (no verdict yet: the training runs tagged with the ablation so far)
            firsts = [(r.data.tags.get(VARIANT_TAG), r) for r in mlflow.search_runs(
                search_all_experiments=True, output_format="list", order_by=["start_time ASC"],
                filter_string=f"tags.`{ABLATION_TAG}` = '{rid}' and tags.`{tracking.KIND_TAG}` = 'train'"
                              f" and tags.`{SEED_TAG}` = '0'")]
        for variant, r in firsts:
            node["inputs"].append({"name": f"variant:{variant}", "digest": "", "context": "ablation_variant",
                                   "source": None, "produced_by": _node(r, seen)})
    for inp in run.inputs.dataset_inputs:
        ds = inp.dataset
        context = next((t.value for t in inp.tags if t.key == "mlflow.data.context"), "")
        entry = {"name": ds.name, "digest": ds.digest, "context": context, "source": _source(ds.source)}
        producers = tracking.producer_of(ds.digest)
        if not producers and ds.name.startswith("model:") and tags.get(TRAINED_BY_TAG):  # an evaluation's model
            producers = [mlflow.get_run(tags[TRAINED_BY_TAG])]
        if producers:
            entry["produced_by"] = _node(producers[0], seen)
        elif context == "raw_input" and entry["source"] and storage.path(entry["source"]).is_file():
            entry["files"] = _raw_files(storage.path(entry["source"]))
        node["inputs"].append(entry)
    return node


@functools.lru_cache(maxsize=64)
def _run_name(run_id: str | None) -> str | None:
    return mlflow.get_run(run_id).info.run_name if run_id else None


def _iso(ms: int | None) -> str | None:
    return dt.datetime.fromtimestamp(ms / 1000, dt.timezone.utc).isoformat(timespec="seconds") if ms else None


def _source(raw: str) -> str | None:
    try:
        return json.loads(raw).get("uri")
    except (ValueError, AttributeError):
        return None


def _raw_files(path: Path) -> list[dict]:
    if path.suffix != ".json":  # a raw input that is one file (the tokenizer model, an evaluation set)
        return []
    try:
        data = json.loads(path.read_text())
    except ValueError:
        return []
    return data.get("files", []) if isinstance(data, dict) else []


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
    lines = [f"WARNING: {p}" for p in tree.get("problems", [])]
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
        out.append(f"{indent}  <- {inp['context'] or 'input'} {inp['name']}"
                   + (f" (digest {inp['digest'][:12]})" if inp["digest"] else ""))
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
    from pipelines.manifest import ShardIntegrityError
    from pipelines.shard_reader import ShardSet
    from pipelines.hashing import sha256_file
    out, stack, done = [], [tree["lineage"]], set()
    if tree.get("checkpoint"):
        out += _verify_checkpoint(storage.path(tree["checkpoint"]))
    while stack:
        node = stack.pop()
        for inp in node.get("inputs", []):
            stack += [inp["produced_by"]] if "produced_by" in inp else []
            src = inp.get("source")
            if not src or src in done or inp.get("files") is not None:  # a list of raw files: its files are outside
                continue
            done.add(src)
            path = storage.path(src)
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
                    files = (f"{len(manifest['files'])} files verify" if manifest["files"] else
                             "its digest verifies (no files of its own: the stage ran fused into the next one's pass)")
                    out.append((ok, f"{path}: {files}" if ok else
                                f"{path}: its digest is not the one run {node['run_id']} read"))
                else:  # a single file recorded by its sha256 (the tokenizer model)
                    ok = mlflow_digest(sha256_file(path)) == inp["digest"]
                    out.append((ok, f"{path}: sha256 matches" if ok else
                                f"{path}: changed since run {node['run_id']} read it (sha256 differs)"))
            except (ShardIntegrityError, ValueError, OSError) as exc:
                out.append((False, f"{path}: {exc}"))
    return out


def _verify_checkpoint(path) -> list[tuple[bool, str]]:
    from model.checkpoint import verify
    if not path.is_dir():
        return [(False, f"checkpoint {path}: missing")]
    if not any(path.glob("files_rank*.json")):
        return [(True, f"checkpoint {path}: no file lists to check (written before they existed)")]
    problem = verify(path)  # one process checks every rank's list
    return [(problem is None, f"checkpoint {path}: {problem or 'every file verifies'}")]


# ------------------------------------------------------------------ documents: a step's batch, a document's fate


def _training_data(run):
    """The training job's loader, rebuilt from its run: the shards it read (every source of a mixture, by the
    names its input datasets carry) and its data parameters. (data, {source: ShardSet}, batch, world, steps)."""
    from model.data import TrainingData
    from pipelines.shard_reader import ShardSet

    p = run.data.params
    inputs = [(i.dataset.name, _source(i.dataset.source)) for i in run.inputs.dataset_inputs
              if any(t.value == "training" for t in i.tags)]
    for _, source in inputs or [("tokens", None)]:
        if not source or not storage.path(source).is_file():
            raise UsageError(f"run {run.info.run_id}: its token manifest {source} is not on this machine")
    shards = {name: ShardSet(source, verify=False) for name, source in inputs}
    split_seed = p.get("data.split_seed", "null")  # absent from runs before it existed; None is logged as null
    args = (int(p["data.seq_len"]), int(p["data.seed"]), float(p["data.val_fraction"]),
            None if split_seed in ("null", "None", "") else int(split_seed))
    batch, world, steps = int(p["global_batch_seqs"]), int(p["world_size"]), int(p["train.steps"])
    from orchestration.config.train import MIXTURE_TAG

    mixture = json.loads(run.data.tags.get(MIXTURE_TAG) or "{}")
    sources = mixture.get("sources", [])
    if not sources:
        (only,) = shards.values()
        return TrainingData(only, *args), shards, batch, world, steps
    from model.mixture import MixtureData
    from orchestration.config.train import DataConfig
    from pipelines.typed_config import from_dict

    cfg = from_dict(DataConfig, {"sources": sources, "schedule": mixture.get("schedule", [])})
    names = [s.name for s in cfg.sources]
    data = MixtureData(names, [TrainingData(shards[n], *args) for n in names], cfg.phases(), batch, int(p["data.seed"]))
    return data, shards, batch, world, steps


def _source_name(doc_id: str) -> str:
    return doc_id.split("#", 1)[0].split("/", 1)[0]


def step_batch(run_id: str, step: int, loaded=None) -> dict:
    """The documents of step `step`'s global batch in a training run: id, source, rank, tokens."""
    data, shards, batch, world, steps = loaded or _training_data(mlflow.get_run(run_id))
    if not 1 <= step <= steps:
        raise UsageError(f"run {run_id} trains steps 1..{steps}, not {step}")
    docs = []
    for d in data.step_documents(step, batch, world):
        mixed = d.get("source", "tokens")  # a mixture's source (its name in the job), or the one manifest
        ss = shards[mixed] if mixed in shards else next(iter(shards.values()))
        doc_id = ss.index(d["shard"])["doc_id"][d["row"]]
        docs.append({"doc_id": doc_id, "source": _source_name(doc_id), "rank": d["rank"], "tokens": d["tokens"],
                     "shard": ss.shards_meta[d["shard"]]["path"], **({"mixture_source": mixed} if "source" in d else {})})
    return {"run_id": run_id, "step": step, "global_batch_windows": batch, "seq_len": data.seq_len,
            "documents": docs}


def loss_spikes(run_id: str) -> dict:
    """The steps a training run flagged as loss spikes (the `loss_spike` metric its job logs, model/spikes.py),
    each with its loss, what the trend of the steps before it predicted, and its batch's documents and sources."""
    run = mlflow.get_run(run_id)
    client = mlflow.MlflowClient()
    flagged = sorted({m.step: m.value for m in client.get_metric_history(run_id, "loss_spike")}.items())
    expected = {m.step: m.value for m in client.get_metric_history(run_id, "loss_spike_expected")}
    loaded = _training_data(run) if flagged else None
    out = []
    for step, loss in flagged:
        batch = step_batch(run_id, step, loaded)
        sources: dict[str, int] = {}
        for d in batch["documents"]:
            sources[d["source"]] = sources.get(d["source"], 0) + d["tokens"]
        out.append({"step": step, "loss": loss, "expected": expected.get(step),
                    "sources": dict(sorted(sources.items(), key=lambda kv: -kv[1])), "documents": batch["documents"]})
    return {"run_id": run_id, "tag": run.data.tags.get("tokenmill.loss_spikes"), "spikes": out}


def doc_fate(doc_id: str, workdirs: list[Path] | None = None) -> dict:
    """A document's fate in every pipeline workdir of the store (or those given): dropped at which stage, why
    and with which metadata (duplicate_of, scores), or kept: its token shard, offset and length, and the
    (step, rank) pairs of every training run on those shards whose batches held its tokens."""
    from orchestration.runtime.tracking import WORKDIR_TAG

    if workdirs is None:
        runs = mlflow.search_runs(search_all_experiments=True, output_format="list",
                                  filter_string=f"tags.`{tracking.KIND_TAG}` = 'pipeline' and attributes.status = 'FINISHED'")
        workdirs = sorted({storage.path(r.data.tags[WORKDIR_TAG]) for r in runs if WORKDIR_TAG in r.data.tags}, key=str)
    out = {"doc_id": doc_id, "pipelines": [], "unreadable": []}
    for wd in workdirs:
        # a store outlives its workdirs (deleted, moved, on an endpoint that is gone): each one that cannot be
        # read is named with the reason, and the others still answer
        try:
            fate = _fate_in(wd, doc_id)
        except Exception as exc:  # noqa: BLE001  (any failure to read one workdir: named, not fatal)
            out["unreadable"].append({"workdir": str(wd), "reason": _why_unreadable(exc)})
            continue
        if fate is None:
            out["unreadable"].append({"workdir": str(wd), "reason": "no such folder (deleted or moved?)"})
        elif "fate" in fate:
            out["pipelines"].append(fate)
    return out


def _why_unreadable(exc: BaseException) -> str:
    fault = storage.connection_fault(exc)
    return fault or " ".join(f"{type(exc).__name__}: {exc}".split())[:300]


def _fate_in(wd, doc_id: str) -> dict | None:
    """The document's fate in one pipeline workdir ({"workdir"} alone when the document is not in it), None when the
    workdir itself is gone."""
    import pyarrow.compute as pc

    if not wd.is_dir():
        return None
    prefix = doc_id.split("#", 1)[0]  # the raw file's path: shards of a file are named after it
    fate: dict = {"workdir": str(wd)}
    for f in sorted((wd / "stages").glob(f"*/dropped/{prefix}/*.parquet")) + \
            sorted((wd / "stages").glob(f"*/dropped/{_source_name(doc_id)}/**/*.parquet")):
        t = read_parquet(f, filters=[("id", "=", doc_id)])
        if t.num_rows:
            row = t.to_pylist()[0]
            fate.update(fate="dropped", stage=f.relative_to(wd / "stages").parts[0], reason=row["reason"],
                        metadata=json.loads(row["metadata"] or "{}"), file=str(f.relative_to(wd)))
            break
    if "fate" not in fate:
        for idx in sorted((wd / "tokens").glob(f"{prefix}/*.idx.parquet")):
            t = read_parquet(idx)
            hit = pc.index(t.column("doc_id"), doc_id).as_py()
            if hit >= 0:
                row = t.slice(hit, 1).to_pylist()[0]
                fate.update(fate="kept", token_file=str(idx.relative_to(wd)), offset=row["offset"],
                            n_tokens=row["n_tokens"], training=_training_reads(wd, idx, hit))
                break
    return fate


def _training_reads(workdir: Path, idx: Path, row: int) -> list[dict]:
    """Every finished training run of the store that read this workdir's token manifest, with the steps and
    ranks whose batches held the document."""
    from pipelines.manifest import mlflow_digest

    manifest_path = workdir / "tokens" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    runs = mlflow.search_runs(search_all_experiments=True, output_format="list",
                              filter_string=f"datasets.digest = '{mlflow_digest(manifest['digest'])}' and "
                                            "attributes.status = 'FINISHED'")
    rel = idx.relative_to(workdir / "tokens").as_posix().removesuffix(".idx.parquet") + ".bin"
    shard = next(i for i, s in enumerate(manifest["shards"]) if s["path"] == rel)
    out = []
    for run in runs:
        if run.data.tags.get(tracking.KIND_TAG) != "train":
            continue
        data, shards, batch, world, steps = _training_data(run)
        if hasattr(data, "names"):  # a mixture: the source whose manifest this is
            source = next(n for n, ss in shards.items() if ss.manifest["digest"] == manifest["digest"])
            reads = data.document_steps(source, shard, row, steps, batch, world)
            docs = data.sources[data.names.index(source)].train.stream.docs[0]
        else:
            reads = data.document_steps(shard, row, steps, batch, world)
            docs = data.train.stream.docs[0]
        held_out = not bool(((docs[:, 0] == shard) & (docs[:, 1] == row)).any())
        out.append({"run_id": run.info.run_id, "name": run.info.run_name, "steps": reads, "validation": held_out})
    return out


def format_batch(batch: dict) -> str:
    docs = batch["documents"]
    lines = [f"run {batch['run_id']} step {batch['step']}: {batch['global_batch_windows']} windows of "
             f"{batch['seq_len'] + 1} tokens, {len(docs)} document pieces"]
    lines += [f"  rank {d['rank']}  {d['tokens']:>6} tokens  {d['doc_id']}  ({d['source']}"
              + (f", mixture source {d['mixture_source']})" if "mixture_source" in d else ")") for d in docs]
    return "\n".join(lines)


def format_spikes(report: dict, max_docs: int = 10) -> str:
    spikes = report["spikes"]
    lines = [f"run {report['run_id']}: {len(spikes)} loss spike(s)"
             + ("" if report["tag"] is not None else " (the run has no spike tag: it is still running, or older than "
                "spike tagging)")]
    for sp in spikes:
        trend = f" where the trend of the steps before gives {sp['expected']:.4f}" if sp["expected"] is not None else ""
        lines.append(f"  step {sp['step']}: loss {sp['loss']:.4f}{trend}")
        lines.append("    sources: " + ", ".join(f"{src} {n:,} tokens" for src, n in sp["sources"].items()))
        docs = sorted(sp["documents"], key=lambda d: -d["tokens"])
        lines += [f"    rank {d['rank']}  {d['tokens']:>6} tokens  {d['doc_id']}" for d in docs[:max_docs]]
        if len(docs) > max_docs:
            lines.append(f"    ... and {len(docs) - max_docs} more document pieces (all of them in --json)")
    return "\n".join(lines)


def format_fate(fate: dict) -> str:
    lines = [f"document {fate['doc_id']}"]
    if not fate["pipelines"]:
        lines.append("  not found in any pipeline workdir of this MLflow store"
                     + (" that could be read" if fate.get("unreadable") else ""))
    for p in fate["pipelines"]:
        if p["fate"] == "dropped":
            meta = p["metadata"]
            lines.append(f"  {p['workdir']}: dropped at stage {p['stage']}: {p['reason']}  [{p['file']}]")
            if "filter_rule" in meta:  # the value that failed the check, against its threshold
                lines.append(f"    because {meta['filter_rule']}")
            if "decontam_match" in meta:
                lines.append(f"    because it shares {meta['decontam_words']!r} with evaluation item "
                             f"{meta['decontam_match']}")
            if "quality_cutoff" in meta:
                lines.append(f"    because its quality score {meta['quality_score']:.6f} < the cut-off "
                             f"{meta['quality_cutoff']:.6f}")
            extra = {k: v for k, v in meta.items() if k.startswith(("duplicate", "language"))}
            if extra:
                lines.append(f"    {json.dumps(extra, sort_keys=True)}")
            continue
        lines.append(f"  {p['workdir']}: kept: {p['token_file']} offset {p['offset']}, {p['n_tokens']} tokens")
        for r in p["training"]:
            if r["validation"]:
                lines.append(f"    {r['name']} (run {r['run_id']}): held out for validation")
                continue
            steps = ", ".join(f"{s['step']}/rank {s['rank']}" for s in r["steps"][:50])
            more = f" and {len(r['steps']) - 50} more" if len(r["steps"]) > 50 else ""
            lines.append(f"    {r['name']} (run {r['run_id']}): read at steps {steps or 'none yet'}{more}")
    for u in fate.get("unreadable", []):
        lines.append(f"  {u['workdir']}: not read: {u['reason']}")
    return "\n".join(lines)
