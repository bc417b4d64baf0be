"""Ingest on Ray Data: one read task per raw file (or a Hugging Face dataset), one row per record."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pyarrow as pa
import ray

from orchestration.pipeline_config import InputConfig
from orchestration.stage_runner import StagePlan
from pipelines.readers import list_inputs, read_file
from pipelines.records import STAGE_SCHEMA
from pipelines.stage_files import sha256_file


def _read(batch: dict, input_cfg: dict, batch_docs: int):
    for path, relpath in zip(batch["path"], batch["relpath"]):
        for cols in read_file(
            str(path),
            str(relpath),
            input_cfg["format"],
            input_cfg["name"],
            text_field=input_cfg["text_field"],
            id_field=input_cfg["id_field"],
            url_field=input_cfg["url_field"],
            batch_size=batch_docs,
        ):
            yield pa.Table.from_pydict(cols, schema=STAGE_SCHEMA)


def _hash_files(batch: dict) -> dict:
    paths = [Path(p) for p in batch["path"]]
    return {
        "path": batch["relpath"],
        "bytes": [p.stat().st_size for p in paths],
        "sha256": [sha256_file(p) for p in paths],
    }


def raw_files_manifest(inputs: list[InputConfig]) -> tuple[list[dict], str]:
    """(path, bytes, sha256) of every raw file, hashed by Ray tasks; and the digest of that list."""
    items = []
    for inp in inputs:
        if inp.format != "hf":
            items += [{"path": p, "relpath": f"{inp.name}/{rel}"} for p, rel in list_inputs(inp.paths)]
    files = []
    if items:
        ds = ray.data.from_items(items, override_num_blocks=min(len(items), 64))
        files = sorted(ds.map_batches(_hash_files, batch_format="numpy").take_all(), key=lambda f: f["path"])
        files = [{"path": str(f["path"]), "bytes": int(f["bytes"]), "sha256": str(f["sha256"])} for f in files]
    for inp in inputs:
        if inp.format == "hf":
            files.append({"path": f"{inp.name}/hf:{inp.hf_dataset}:{inp.hf_split}", "bytes": 0, "sha256": ""})
    digest = hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()
    return files, digest


def _hf_dataset(inp: InputConfig, batch_docs: int) -> ray.data.Dataset:
    from orchestration.hf_input import hf_records

    return hf_records(inp, batch_docs)


def plan(inputs: list[InputConfig], batch_docs: int) -> StagePlan:
    parts = []
    for inp in inputs:
        if inp.format == "hf":
            parts.append(_hf_dataset(inp, batch_docs))
            continue
        files = [{"path": p, "relpath": f"{inp.name}/{rel}"} for p, rel in list_inputs(inp.paths)]
        ds = ray.data.from_items(files, override_num_blocks=len(files))
        cfg = {k: getattr(inp, k) for k in ("name", "format", "text_field", "id_field", "url_field")}
        parts.append(ds.map_batches(_read, batch_size=1, batch_format="numpy",
                                    fn_kwargs={"input_cfg": cfg, "batch_docs": batch_docs}))
    ds = parts[0] if len(parts) == 1 else parts[0].union(*parts[1:])
    return StagePlan(ds, None)
