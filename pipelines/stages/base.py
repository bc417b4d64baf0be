"""The one shape of a corpus stage, and the shard context it runs in.

A stage sees its documents one batch at a time (a pyarrow Table with the record columns of
`pipelines.records` plus REASON, "" for a document still alive), inside one task per shard:

- `apply(batch, ctx) -> batch`: the same rows in the same order, each kept (REASON "") or given a drop
  reason. Rows already dropped upstream never reach a stage. A stage that needs nothing cluster-wide is
  one-to-one and fuses with its neighbours into one read and one write of the surviving documents.
- `collect(batch) -> {name: rows}` (optional): small rows computed from the stage's *input* documents
  (dedup keys, score histograms, sample candidates) for a cluster-wide step that must finish before the
  stage can `apply` (see `needs_global`). The orchestration runs that step (`orchestration.global_steps`)
  and hands its outcome back through `ShardContext.state[stage name]`.

Nothing here imports Ray or MLflow: every stage runs (and is unit-tested) on plain tables.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import pyarrow as pa


@dataclass
class ShardContext:
    """What a stage may know about the shard it is processing."""

    shard: str  # the shard's name (stable: derived from the raw file and the position in it)
    state: dict[str, Any] = field(default_factory=dict)  # per stage: the outcome of its global step
    rows_before: int = 0  # rows of this shard passed to collect() before the current batch


class Stage:
    name: ClassVar[str]
    # apply() needs a cluster-wide step over what collect() saw of this stage's input
    needs_global: ClassVar[bool] = False
    # collect() may run in the same pass as these earlier global stages' collect(); the global step
    # then removes what those stages drop (MinHash keys are hoisted over exact dedup)
    collect_with: ClassVar[tuple[str, ...]] = ()
    # writes its own outputs (token shards) instead of passing documents on
    sink: ClassVar[bool] = False

    def __init__(self, cfg: Any):
        self.cfg = cfg

    def params(self) -> dict:
        """Everything that changes this stage's output: logged to MLflow, part of the resume key and of the
        stage's digest. Models are named by their sha256, not their path: a digest names content, so the
        same run in another workdir has the same digests."""
        import dataclasses

        from pipelines.stage_files import content_params

        return content_params(dataclasses.asdict(self.cfg) if dataclasses.is_dataclass(self.cfg) else dict(self.cfg))

    def global_needed(self) -> bool:
        return self.needs_global

    def open_shard(self, ctx: ShardContext) -> None:
        """Called before the first batch of each shard (load that shard's drop list, ...)."""

    def apply(self, batch: pa.Table, ctx: ShardContext) -> pa.Table:
        return batch

    def collect(self, batch: pa.Table, ctx: ShardContext) -> dict[str, pa.Table]:
        return {}

    def close_shard(self, ctx: ShardContext) -> dict:
        """Called after the last batch of a shard: small per-shard results (histograms, counts); a "keys"
        table in it is written with the rows collect() returned (a shard's sample candidates)."""
        return {}


def set_column(batch: pa.Table, name: str, values: list | pa.Array, type_=pa.string()) -> pa.Table:
    arr = values if isinstance(values, (pa.Array, pa.ChunkedArray)) else pa.array(values, type_)
    i = batch.schema.get_field_index(name)
    return batch.set_column(i, name, arr) if i >= 0 else batch.append_column(name, arr)
