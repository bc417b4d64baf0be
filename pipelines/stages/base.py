"""The one shape of a corpus stage, and the shard context it runs in.

A stage sees its documents one batch at a time (a pyarrow Table with the record columns of
`pipelines.records` plus REASON, "" for a document still alive), inside one task per shard:

- `apply(batch, ctx) -> batch`: the same rows in the same order, each kept (REASON "") or given a drop
  reason. Rows already dropped upstream never reach a stage. A stage that needs nothing cluster-wide is
  one-to-one and fuses with its neighbours into one read and one write of the surviving documents.
- `collect(batch) -> {name: rows}` (optional): small rows computed from the stage's *input* documents
  (dedup keys, score histograms, sample candidates) for a cluster-wide step that must finish before the
  stage can `apply` (see `needs_global`). That step is the stage's own `reduce` (on the driver, over what
  every shard's `close_shard` returned in the collecting pass) or, for the dedup and tokenizer steps that
  need the cluster, the step of the same stage in `orchestration.corpus.steps`; its outcome comes back
  through `ShardContext.state[stage name]`.

Around the shard, a stage owns its parts: `Config` (its section of the pipeline config), `from_config`
(how it is built from the pipeline config, None when off) and `report` (its run's metrics and plots, as
data that one recorder logs). `pipelines.stages.REGISTRY` lists the stages in chain order.

Nothing here imports Ray or MLflow: every stage runs (and is unit-tested) on plain tables.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import pyarrow as pa


@dataclass
class Plot:
    """A plot of a stage's MLflow run, as data: bars over `edges` (bin edges, one more than `counts`) or, with
    `edges` None, one bar per key of `counts` ({value: count}); `marker` draws a vertical line (a cut-off)."""

    file: str  # the artifact's name, e.g. "plots/cluster_sizes.png"
    title: str
    xlabel: str
    counts: list | dict
    edges: list | None = None
    marker: float | None = None


@dataclass
class Report:
    """What a stage's MLflow run shows beyond what every stage's has (counts, drop reasons, text lengths)."""

    metrics: dict[str, float] = field(default_factory=dict)
    plots: list[Plot] = field(default_factory=list)
    models: list[tuple[str, str, str]] = field(default_factory=list)  # (name, path, sha256): lineage inputs
    # tags on its run and on the pipeline's run: what a consumer of the corpus checks without walking the stages
    # (the evaluation suite the corpus was decontaminated against)
    tags: dict[str, str] = field(default_factory=dict)


@dataclass
class ShardContext:
    """What a stage may know about the shard it is processing."""

    shard: str  # the shard's name (stable: derived from the raw file and the position in it)
    state: dict[str, Any] = field(default_factory=dict)  # per stage: the outcome of its global step
    rows_before: int = 0  # rows of this shard passed to collect() before the current batch


class Stage:
    name: ClassVar[str]
    Config: ClassVar[type | None] = None  # the dataclass of its pipeline-config section (None: it has none)
    # apply() needs a cluster-wide step over what collect() saw of this stage's input
    needs_global: ClassVar[bool] = False
    # collect() may run in the same pass as these earlier global stages' collect(); the global step
    # then removes what those stages drop (MinHash keys are hoisted over exact dedup)
    collect_with: ClassVar[tuple[str, ...]] = ()
    # writes its own outputs (token shards) instead of passing documents on
    sink: ClassVar[bool] = False
    # its global step deduplicates against earlier runs' dedup indexes, and this run's index holds its keys
    dedup_index: ClassVar[bool] = False

    def __init__(self, cfg: Any):
        self.cfg = cfg

    @classmethod
    def sections(cls) -> dict[str, type]:
        """Its sections of the pipeline config: {section name: dataclass}; by default `Config` under its name."""
        return {cls.name: cls.Config} if cls.Config is not None else {}

    @classmethod
    def check_config(cls, pipeline: Any) -> None:
        """Rules between its sections and the rest of the pipeline config (ConfigError naming the key)."""

    @classmethod
    def files(cls, pipeline: Any) -> list[tuple[str, str, str]]:
        """(config key, path, kind) of every file its sections name, for `--check` to open before a run starts.
        kind: "fasttext" or "sentencepiece" (a model), "quality_train" (a classifier's training config)."""
        return []

    @classmethod
    def from_config(cls, pipeline: Any) -> "Stage | None":
        """This stage as a pipeline config (orchestration.config.pipeline.PipelineConfig) sets it up, or None
        when it is off. By default: the config's section named after the stage, on when `enabled` is."""
        section = getattr(pipeline, cls.name)
        return cls(section) if getattr(section, "enabled", True) else None

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

    def modules(self) -> list[str]:
        """Files or package folders the Ray workers must import this stage's code from, besides tokenmill's own
        (a user stage's module)."""
        return []

    def reduce(self, collected: list[dict]) -> dict:
        """The global step of a stage that needs no cluster for it (on the driver): from every shard's
        close_shard() outcome in the collecting pass to the state apply() reads in `ctx.state[name]`."""
        raise NotImplementedError(f"stage {self.name} has no reduce()")

    def report(self, extras: list[dict], state: dict) -> Report:
        """Its MLflow run's own metrics and plots: from every shard's close_shard() outcome in the applying
        pass (`extras`) and its global step's outcome (`state`)."""
        return Report()


def set_column(batch: pa.Table, name: str, values: list | pa.Array, type_=pa.string()) -> pa.Table:
    arr = values if isinstance(values, (pa.Array, pa.ChunkedArray)) else pa.array(values, type_)
    i = batch.schema.get_field_index(name)
    return batch.set_column(i, name, arr) if i >= 0 else batch.append_column(name, arr)
