"""The pipeline recipe (YAML): inputs, stage settings, outputs, Ray and MLflow options."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from orchestration.config_schema import (ConfigError, Fraction, PathStr, PositiveFloat, PositiveInt, Range,
                                         from_dict, load_yaml_config)

InputFormat = Literal["jsonl", "parquet", "warc", "wet", "text", "html", "hf"]
STAGES = ("ingest", "extract", "filter", "exact_dedup", "minhash")


@dataclass
class InputConfig:
    name: str
    format: InputFormat
    paths: list[PathStr] = field(default_factory=list)  # globs; `**` recurses
    text_field: str = "text"
    id_field: str | None = None  # use the source's own id instead of file + record index
    url_field: str | None = "url"
    hf_dataset: str | None = None  # hub name or local path (datasets.load_from_disk / load_dataset)
    hf_split: str = "train"
    # a record (JSON line, text or HTML file) over this size is quarantined "too_large" without being read
    # whole (pipelines/readers/rows.py MAX_DOC_BYTES says why 32)
    max_doc_mb: PositiveFloat = 32.0

    def validate(self, key: str) -> None:
        if not self.name or "/" in self.name:
            raise ConfigError(f"{key}.name: a non-empty name without '/' (it starts every shard name), got {self.name!r}")
        if self.format == "hf" and not self.hf_dataset:
            raise ConfigError(f"{key}.hf_dataset: required when format is 'hf'")
        if self.format != "hf" and not self.paths:
            raise ConfigError(f"{key}.paths: at least one path or glob is required")


@dataclass
class OutputConfig:
    format: Literal["parquet", "jsonl.zst"] = "parquet"
    # ingest cuts each raw file into shards of about this much text; every later stage keeps the shards
    # (one task per shard: the unit of parallelism, of resume and of memory is a batch within it)
    shard_mb: PositiveFloat = 64.0
    write_intermediate: bool = False  # also write every fused stage's kept documents (debugging)


@dataclass
class RayConfig:
    num_cpus: PositiveInt | None = None  # local Ray only; default (null): this machine's CPUs
    batch_size: PositiveInt = 256  # documents per batch through a shard task's stages (its memory: a batch, not a shard)
    shuffle_partitions: PositiveInt = 8  # key partitions of the dedup steps: memory per task ~ keys / partitions


@dataclass
class ExtractConfig:
    enabled: bool = True
    timeout_s: PositiveFloat = 5.0
    favor_precision: bool = True


@dataclass
class LanguageConfig:
    model_path: PathStr | None = None  # fastText LID model (lid.176.bin, GlotLID, or one trained here); null = off
    languages: list[str] | None = None  # keep these labels (e.g. [en] or [eng_Latn]); null = any
    min_score: Fraction = 0.65


@dataclass
class PiiConfig:
    emails: bool = True
    ips: bool = True


@dataclass
class FilterConfig:
    enabled: bool = True
    word_splitter: Literal["fast", "spacy"] = "fast"  # spacy: datatrove's own
    # datatrove filter keyword arguments; null disables a filter. The defaults are FineWeb's published recipe
    # (datatrove examples/fineweb.py): datatrove's defaults, but C4's line filter keeps lines without terminal
    # punctuation (with it, hard-wrapped prose lost 93%: 3.5 MB of Gutenberg left the filter as 0.26 MB)
    gopher_quality: dict[str, Any] | None = field(default_factory=dict)
    gopher_repetition: dict[str, Any] | None = field(default_factory=dict)
    c4: dict[str, Any] | None = field(default_factory=lambda: {"filter_no_terminal_punct": False})
    fineweb: dict[str, Any] | None = field(default_factory=dict)
    language: LanguageConfig = field(default_factory=LanguageConfig)
    pii: PiiConfig = field(default_factory=PiiConfig)


@dataclass
class ExactDedupConfig:
    enabled: bool = True
    # whitespace: collapse runs, strip ends; lower: also NFKC and lowercase
    normalize: Literal["none", "whitespace", "lower"] = "whitespace"


@dataclass
class MinHashStageConfig:
    enabled: bool = True
    ngram: PositiveInt = 5
    bands: PositiveInt = 14
    rows: PositiveInt = 8
    seed: int = 1


@dataclass
class DedupIndexConfig:
    # write this run's dedup index (dedup/index/: the kept documents' exact hashes and MinHash band keys),
    # so that a later run can dedup a new crawl against this one without reprocessing it
    write: bool = True
    # earlier runs' workdirs (or index directories): documents duplicating one they kept are dropped, with
    # the earlier document's id and MLflow run in the drop record
    previous: list[PathStr] = field(default_factory=list)


@dataclass
class QualityConfig:
    enabled: bool = False
    model_path: PathStr | None = None  # a fastText classifier (trained by `tokenmill quality train`, or DCLM's)
    # ... or a `tokenmill quality train` YAML: without model_path, the pipeline trains it first, into
    # WORKDIR/quality/ (again only when that YAML changes), and uses it
    train: PathStr | None = None
    positive_label: str = "hq"
    threshold: Fraction | None = None  # keep documents scoring >= threshold ...
    # ... or keep this global top fraction (cut-off over the whole corpus)
    keep_fraction: Annotated[float, Range(lo=0, hi=1, lo_open=True)] | None = None

    def validate(self, key: str) -> None:
        if self.enabled and not (self.model_path or self.train):
            raise ConfigError(f"{key}.model_path: required when quality is enabled (or {key}.train: a quality "
                              "training YAML the pipeline trains first)")
        if self.enabled and (self.threshold is None) == (self.keep_fraction is None):
            raise ConfigError(f"{key}: give exactly one of threshold and keep_fraction")


@dataclass
class TokenizerStageConfig:
    enabled: bool = False
    vocab_size: Annotated[int, Range(lo=300)] = 8000
    sample_docs: PositiveInt = 20000  # documents sampled (deterministically, by id hash) to train on
    # lower it for many scripts with a small vocabulary (rare chars -> bytes)
    character_coverage: Annotated[float, Range(lo=0, hi=1, lo_open=True)] = 0.9995
    seed: int = 0
    model_path: PathStr | None = None  # use this SentencePiece model instead of training one


@dataclass
class TokenizeConfig:
    enabled: bool = False
    target_shard_tokens: PositiveInt = 50_000_000  # shards hold about this many tokens (a document is never split)


@dataclass
class MlflowConfig:
    experiment: str = "tokenmill"


@dataclass
class PipelineConfig:
    name: str
    inputs: list[InputConfig]
    output: OutputConfig = field(default_factory=OutputConfig)
    ray: RayConfig = field(default_factory=RayConfig)
    extract: ExtractConfig = field(default_factory=ExtractConfig)
    filter: FilterConfig = field(default_factory=FilterConfig)
    exact_dedup: ExactDedupConfig = field(default_factory=ExactDedupConfig)
    minhash: MinHashStageConfig = field(default_factory=MinHashStageConfig)
    dedup_index: DedupIndexConfig = field(default_factory=DedupIndexConfig)
    quality: QualityConfig = field(default_factory=QualityConfig)
    tokenizer: TokenizerStageConfig = field(default_factory=TokenizerStageConfig)
    tokenize: TokenizeConfig = field(default_factory=TokenizeConfig)
    mlflow: MlflowConfig = field(default_factory=MlflowConfig)
    train: PathStr | None = None  # training job YAML (relative to this file) that `tokenmill run` runs afterwards

    def validate(self, key: str) -> None:
        if not self.inputs:
            raise ConfigError("inputs: at least one input is required")
        if self.tokenize.enabled and not (self.tokenizer.enabled or self.tokenizer.model_path):
            raise ConfigError("tokenize: needs a tokenizer (tokenizer.enabled or tokenizer.model_path)")
        if self.tokenizer.enabled and not self.tokenize.enabled:
            raise ConfigError("tokenizer.enabled: the tokenizer is trained for the tokenize stage; enable tokenize too")
        if self.dedup_index.previous and not (self.exact_dedup.enabled or self.minhash.enabled):
            raise ConfigError("dedup_index.previous: needs exact_dedup or minhash enabled")
        names = [i.name for i in self.inputs]
        if len(set(names)) != len(names):
            raise ConfigError(f"inputs: names must be unique, got {names}")


def load_pipeline_config(path: str | Path, overrides: list[str] = ()) -> PipelineConfig:
    return from_dict(PipelineConfig, load_yaml_config(path, overrides, PipelineConfig))
