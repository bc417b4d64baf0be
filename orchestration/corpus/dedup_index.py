"""A run's dedup index, and the earlier runs' indexes a run dedups against (incremental dedup).

Layout (`WORKDIR/dedup/index/`, paths in the manifest relative to it):

    exact_dedup/pPPPP/SHARD.parquet   hash (string), id (string), doc (int64)      one row per kept document
    minhash/pPPPP/SHARD.parquet       key (uint64), id, doc[, fp (uint64)]         one row per band
    manifest.json                     format, partitions, the dedup parameters, files (sha256, rows),
                                      documents, previous (the indexes this run deduped against),
                                      mlflow_run_id (the pipeline run that wrote it), digest

The rows are the key rows the dedup steps collected, for the documents that survived both dedup steps,
partitioned exactly like the keys (`ray.shuffle_partitions`), so a later run's partition p reads only
partition p of each earlier index. `doc` is the document's key in its own run (shard rank << 32 | row);
a later run gives index i (in the order named, earlier indexes' own `previous` first) the run bits i,
so an earlier run's document always survives (`pipelines.stages.dedup_common`).

A later run names earlier workdirs (or index directories) in `dedup_index.previous`; their parameters
must match this run's (other bands or another normalization would make the keys incomparable).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import ray

from pipelines.hashing import canonical_sha256
from pipelines import storage
from pipelines.stage_files import read_parquet
from pipelines.hashing import sha256_file
from pipelines.stages import REGISTRY, Stage, build
from pipelines.stages.dedup_common import ROW_COL, RUN_SHIFT, doc_keys, load_drops, shard_ranks

INDEX_DIR = Path("dedup") / "index"
FORMAT = 1
SHARDS_PER_TASK = 32


class DedupIndexError(ValueError):
    """An earlier run's dedup index is missing, unfinished or incompatible with this run."""


def dedup_stages(cfg) -> dict[str, Stage | None]:
    """Every stage kind that keeps keys in a dedup index ({name: the stage, None where it is off}), in chain order."""
    on = {s.name: s for s in build(cfg) if s.dedup_index}
    return {cls.name: on.get(cls.name) for cls in REGISTRY.values() if cls.dedup_index}


def index_params(cfg) -> dict:
    """What must match between runs for their keys to be comparable."""
    return {"partitions": cfg.ray.shuffle_partitions,
            **{name: st.index_params() if st else None for name, st in dedup_stages(cfg).items()}}


def _manifest_path(path) -> storage.StoragePath:
    p = storage.path(path).expanduser().resolve()
    for cand in (p, p / "manifest.json", p / INDEX_DIR / "manifest.json"):
        if cand.is_file():
            return cand
    raise DedupIndexError(f"dedup_index.previous: no dedup index at {path} (looked for {p / INDEX_DIR / 'manifest.json'}; "
                          "an index is written by a run with dedup_index.write: true)")


def load_previous(cfg) -> list[dict]:
    """The earlier indexes, each earlier one's own `previous` first (deduplicated), validated against
    this run's parameters. Each: its manifest plus `root` (the index directory) and `manifest_path`."""
    out: list[dict] = []
    seen: set[str] = set()
    want = index_params(cfg)

    def add(path, named_as: str) -> None:
        mpath = _manifest_path(path)
        if str(mpath) in seen:
            return
        man = json.loads(mpath.read_text())
        if man.get("format") != FORMAT:
            raise DedupIndexError(f"{mpath}: dedup index format {man.get('format')}, this tokenmill reads {FORMAT}")
        if not man.get("mlflow_run_id"):
            raise DedupIndexError(f"{mpath}: that run did not finish (its index has no MLflow run id); finish it first")
        if man.get("digest") != canonical_sha256({k: man.get(k) for k in ("format", "params", "files")}):
            raise DedupIndexError(f"{mpath}: the index manifest does not match its digest (edited or truncated?)")
        for prev in man.get("previous", []):
            add(prev["manifest_path"], named_as)
        for key in want:
            mine, theirs = want[key], man["params"].get(key)
            if key == "partitions" and mine != theirs:
                raise DedupIndexError(f"{mpath}: written with ray.shuffle_partitions={theirs}, this run has {mine}: "
                                      "use the same number of key partitions")
            if key != "partitions" and mine is not None and mine != theirs:
                raise DedupIndexError(f"{mpath}: its {key} parameters {theirs} differ from this run's {mine}; "
                                      "keys made with other parameters cannot be compared")
        _check_files_present(man, mpath, [k for k in want if k != "partitions" and want[k] is not None])
        seen.add(str(mpath))
        out.append({**man, "root": str(mpath.parent), "manifest_path": str(mpath)})

    for path in cfg.dedup_index.previous:
        add(path, path)
    if len(out) >= 127:
        raise DedupIndexError(f"dedup_index.previous: {len(out)} indexes (with their own previous); at most 126")
    return out


def _check_files_present(man: dict, mpath, stages: list[str]) -> None:
    """Every index file of the stages this run reads is there (before Ray starts; their sha256 is checked as
    each is read, read_previous)."""
    root = storage.path(mpath).parent
    missing = [f["path"] for st in stages for part in man["files"].get(st, {}).values() for f in part
               if not (root / f["path"]).is_file()]
    if missing:
        raise DedupIndexError(f"{mpath}: {len(missing)} index file(s) missing, e.g. {root / missing[0]}; that index "
                              "cannot be deduplicated against (re-run its pipeline to rewrite it, or leave it out of "
                              "dedup_index.previous)")


def previous_files(previous: list[dict], stage: str, part: int) -> list[tuple[int, list[tuple[str, str]]]]:
    """(run bits, [(absolute path, sha256)]) of every earlier index's partition `part` of `stage`."""
    return [(i, [(str(storage.path(m["root"]) / f["path"]), f["sha256"])
                 for f in m["files"].get(stage, {}).get(str(part), [])])
            for i, m in enumerate(previous)]


def _read_verified(path: str, sha256: str) -> pa.Table:
    """An index file, read once: its bytes are hashed and must match the index manifest (a file swapped for
    another valid parquet file would let duplicates through)."""
    import hashlib

    try:
        data = storage.path(path).read_bytes()
    except FileNotFoundError:
        raise DedupIndexError(f"dedup index file {path} is missing") from None
    actual = hashlib.sha256(data).hexdigest()
    if actual != sha256:
        raise DedupIndexError(f"dedup index file {path}: sha256 {actual[:12]}... does not match its index manifest "
                              f"({sha256[:12]}...): changed since that run wrote it")
    return pq.read_table(pa.BufferReader(data))


def read_previous(entries: list[tuple[int, list[tuple[str, str]]]], columns: list[str]) -> pa.Table | None:
    """An earlier index's rows with `doc` turned into this run's key (run bits = the index's position), each
    file verified against its sha256."""
    tables = []
    for run, files in entries:
        for f, sha256 in files:
            t = _read_verified(f, sha256)
            key = t.column("doc").to_numpy() | (np.int64(run) << RUN_SHIFT)
            cols = {c: t.column(c) for c in columns if c in t.column_names}
            tables.append(pa.table({**cols, "doc": pa.array(key)}))
    return pa.concat_tables(tables) if tables else None


@ray.remote(num_cpus=1, max_retries=3)
def _index_shards(root: str, shards: list[dict], ranks: dict[str, int], drop_files: dict[str, list[str]],
                  columns: dict[str, list[str]]) -> list[dict]:
    """For each shard: its key rows minus the documents either dedup step dropped, re-written per partition."""
    out = []
    root_p = storage.path(root)
    for s in shards:
        dropped = set()
        for files in drop_files.values():
            t = load_drops(files, s["shard"])
            if t is not None:
                dropped.update(t.column("id").to_pylist())
        for stage, parts in s["keys"].items():
            for part, path in parts.items():
                t = read_parquet(root_p / path)
                if dropped:
                    t = t.filter(pc.invert(pc.is_in(t.column("id"), pa.array(list(dropped), pa.string()))))
                doc = doc_keys(t.column("shard"), t.column(ROW_COL).to_numpy(), ranks, 0)
                cols = {c: t.column(c) for c in columns[stage] if c in t.column_names}
                rel = Path(stage) / f"p{int(part):04d}" / f"{s['shard']}.parquet"
                dest = root_p / INDEX_DIR / rel
                tmp = storage.scratch_for(dest)
                pq.write_table(pa.table({**cols, "doc": pa.array(doc)}), tmp, compression="zstd")
                sha256 = sha256_file(tmp)
                storage.publish(tmp, dest)
                out.append({"stage": stage, "part": int(part), "path": str(rel), "rows": t.num_rows,
                            "sha256": sha256})
    return out


def write_index(workdir: storage.StoragePath, results: list[dict], state: dict, cfg, previous: list[dict]) -> dict:
    """Index this run's dedup survivors (one task per SHARDS_PER_TASK shards); returns its manifest."""
    on = [st for st in dedup_stages(cfg).values() if st is not None]
    stages = [st.name for st in on]
    columns = {st.name: list(st.index_columns) for st in on}
    ranks = shard_ranks([r["shard"] for task in results for r in task["shards"]])
    shards = []
    for task in results:
        for r in task["shards"]:
            keys = {st: {p: e["path"] for p, e in r["collect"].get(st, {}).get("keys", {}).items()} for st in stages}
            if any(keys.values()):
                shards.append({"shard": r["shard"], "keys": keys})
    shards.sort(key=lambda s: s["shard"])
    drops = {st: state.get(st, {}).get("drop_files", []) for st in stages}
    ranks_ref = ray.put(ranks)
    outs = ray.get([_index_shards.remote(str(workdir), shards[i:i + SHARDS_PER_TASK], ranks_ref, drops, columns)
                    for i in range(0, len(shards), SHARDS_PER_TASK)])
    files: dict[str, dict[str, list]] = {st: {} for st in stages}
    for entries in outs:
        for e in entries:
            files[e["stage"]].setdefault(str(e["part"]), []).append({k: e[k] for k in ("path", "rows", "sha256")})
    for st in files.values():
        for part in st.values():
            part.sort(key=lambda e: e["path"])
    per_doc = next((st.name for st in on if st.index_rows_per_document == 1), None)  # a stage with a row per document
    manifest = {"format": FORMAT, "params": index_params(cfg), "files": files,
                "documents": sum(e["rows"] for p in files.get(per_doc, {}).values() for e in p) if per_doc else None,
                "previous": [{"manifest_path": m["manifest_path"], "mlflow_run_id": m["mlflow_run_id"],
                              "digest": m["digest"]} for m in previous]}
    manifest["digest"] = canonical_sha256({k: manifest[k] for k in ("format", "params", "files")})
    path = workdir / INDEX_DIR / "manifest.json"
    storage.write_atomic(path, json.dumps(manifest, indent=1))
    return {"index_manifest": str(path), "index_digest": manifest["digest"], "files": [str(path)]}


def finish_index(manifest_path: str, run_id: str) -> None:
    """Name the pipeline run that wrote the index (a later run refuses an index without one)."""
    path = storage.path(manifest_path)
    man = json.loads(path.read_text())
    man["mlflow_run_id"] = run_id
    storage.write_atomic(path, json.dumps(man, indent=1))
