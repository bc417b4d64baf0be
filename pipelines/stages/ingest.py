"""Ingest: raw files (or index ranges of a Hugging Face dataset) read as record batches and cut into
shards, with no shuffle. A shard is closed after the document that brings its text to `target_bytes`,
so shard boundaries depend only on the file's documents (never on batch sizes or workers), and 100k raw
files are 100k+ independent tasks. Shard names are the file's input-relative path plus a counter
(`crawl/CC-MAIN-...warc.gz/00003`); every later stage writes its output under the same name.
Malformed records arrive already quarantined (REASON "quarantine:..."); this stage counts them.
"""

from __future__ import annotations

from typing import Iterator

import pyarrow as pa
import pyarrow.compute as pc

from pipelines.readers import read_file, read_hf
from pipelines.records import STAGE_SCHEMA
from pipelines.stages.base import Stage


class IngestStage(Stage):
    name = "ingest"

    @classmethod
    def from_config(cls, pipeline) -> "IngestStage":
        return cls({"inputs": [i.name for i in pipeline.inputs]})  # always on; what it reads is the inputs'

    def apply(self, batch, ctx):
        return batch  # the readers already marked unusable records


def source_batches(task: dict, batch_docs: int) -> Iterator[pa.Table]:
    inp = task["input"]
    if inp["format"] == "hf":
        it = read_hf(inp["hf_dataset"], inp["hf_split"], inp["name"], task["start"], task["stop"],
                     text_field=inp["text_field"], id_field=inp["id_field"], url_field=inp["url_field"],
                     batch_size=batch_docs)
    else:
        it = read_file(task["path"], task["relpath"], inp["format"], inp["name"], text_field=inp["text_field"],
                       id_field=inp["id_field"], url_field=inp["url_field"], batch_size=batch_docs,
                       max_doc_bytes=int(inp.get("max_doc_mb", 32.0) * 2**20))
    for cols in it:
        yield pa.Table.from_pydict(cols, schema=STAGE_SCHEMA)


def cut_into_shards(batches: Iterator[pa.Table], prefix: str, target_bytes: int) -> Iterator[tuple[str, pa.Table]]:
    """(shard name, batch) pairs: each batch cut where a shard reaches target_bytes of text."""
    k, size = 0, 0
    for batch in batches:
        lengths = pc.binary_length(batch.column("text")).to_numpy(zero_copy_only=False)
        start = 0
        for i, n in enumerate(lengths.tolist()):
            size += n
            if size >= target_bytes:
                yield f"{prefix}/{k:05d}", batch.slice(start, i + 1 - start)
                k, size, start = k + 1, 0, i + 1
        if start < batch.num_rows:
            yield f"{prefix}/{k:05d}", batch.slice(start)
