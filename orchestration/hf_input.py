"""A Hugging Face dataset as a Ray Dataset of records: index ranges read by parallel tasks."""

from __future__ import annotations

import pyarrow as pa
import ray

from orchestration.pipeline_config import InputConfig
from pipelines.hf_source import open_dataset, read_range
from pipelines.records import STAGE_SCHEMA


def _read(batch: dict, inp: dict, batch_docs: int):
    for start, stop in zip(batch["start"], batch["stop"]):
        for cols in read_range(inp["hf_dataset"], inp["hf_split"], inp["name"], int(start), int(stop),
                               text_field=inp["text_field"], id_field=inp["id_field"],
                               url_field=inp["url_field"], batch_size=batch_docs):
            yield pa.Table.from_pydict(cols, schema=STAGE_SCHEMA)


def hf_records(inp: InputConfig, batch_docs: int, rows_per_task: int = 50_000) -> ray.data.Dataset:
    n = len(open_dataset(inp.hf_dataset, inp.hf_split))
    ranges = [{"start": s, "stop": min(n, s + rows_per_task)} for s in range(0, n, rows_per_task)]
    cfg = {k: getattr(inp, k) for k in ("name", "hf_dataset", "hf_split", "text_field", "id_field", "url_field")}
    ds = ray.data.from_items(ranges or [{"start": 0, "stop": 0}], override_num_blocks=max(1, len(ranges)))
    return ds.map_batches(_read, batch_size=1, batch_format="numpy", fn_kwargs={"inp": cfg, "batch_docs": batch_docs})
