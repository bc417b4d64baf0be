"""Tokenization into token shards, per input shard: the surviving documents of each shard are encoded a
batch at a time and appended to that shard's own token files (`TokenShardWriter`), so no task ever holds
more than a batch, and the bytes depend only on the shard's documents.

When the tokenizer is trained here, collect() gathers, per shard, the `sample_docs` documents with the
smallest `sample_key(id, seed)`; the global step keeps the smallest of those (the global sample is among
every shard's local one) and trains SentencePiece on their texts in key order.
"""

from __future__ import annotations

import dataclasses
import heapq
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipelines.stages.base import Plot, Report, ShardContext, Stage
from pipelines.stages.dedup_common import PART_COL
from pipelines.token_shards import TokenShardWriter
from pipelines.tokenizer import Tokenizer, TokenizerConfig, sample_key
from pipelines.typed_config import PathStr, PositiveInt

TOKENS_PER_DOC_BINS = np.array([0] + [2**k for k in range(2, 24)], dtype=np.int64)


@dataclass(frozen=True)
class TokenizeConfig:
    enabled: bool = False
    target_shard_tokens: PositiveInt = 50_000_000  # shards hold about this many tokens (a document is never split)


@dataclass(frozen=True)
class TokenizerStageConfig(TokenizerConfig):
    """The pipeline config's `tokenizer:` section: SentencePiece training on the global sample (or a given model)."""
    enabled: bool = False
    model_path: PathStr | None = None  # use this SentencePiece model instead of training one

    def training(self) -> TokenizerConfig:
        return TokenizerConfig(**{f.name: getattr(self, f.name) for f in dataclasses.fields(TokenizerConfig)})


@lru_cache(maxsize=2)
def _tokenizer(model_path: str) -> Tokenizer:
    return Tokenizer(model_path)


class TokenizeStage(Stage):
    name = "tokenize"
    Config = TokenizeConfig
    sink = True

    def __init__(self, cfg, tokenizer_cfg):
        super().__init__(cfg)
        self.tokenizer_cfg = tokenizer_cfg

    @classmethod
    def sections(cls) -> dict[str, type]:
        return {"tokenizer": TokenizerStageConfig, "tokenize": TokenizeConfig}

    @classmethod
    def check_config(cls, pipeline) -> None:
        from pipelines.typed_config import ConfigError

        if pipeline.tokenize.enabled and not (pipeline.tokenizer.enabled or pipeline.tokenizer.model_path):
            raise ConfigError("tokenize: needs a tokenizer (tokenizer.enabled or tokenizer.model_path)")
        if pipeline.tokenizer.enabled and not pipeline.tokenize.enabled:
            raise ConfigError("tokenizer.enabled: the tokenizer is trained for the tokenize stage; enable tokenize too")

    @classmethod
    def files(cls, pipeline) -> list[tuple[str, str, str]]:
        path = pipeline.tokenizer.model_path
        return [("tokenizer.model_path", path, "sentencepiece")] if path else []

    @classmethod
    def from_config(cls, pipeline) -> "TokenizeStage | None":
        return cls(pipeline.tokenize, pipeline.tokenizer) if pipeline.tokenize.enabled else None

    def report(self, extras: list[dict], state: dict) -> Report:
        hist = np.zeros(len(TOKENS_PER_DOC_BINS), dtype=np.int64)
        for e in extras:
            if "tokens_per_doc_hist" in e:
                hist += np.array(e["tokens_per_doc_hist"])
        edges = np.log2(np.maximum(np.append(TOKENS_PER_DOC_BINS, 2**24), 1))
        return Report(plots=[Plot("plots/tokens_per_document.png", "tokenize: tokens per document (incl. eos)",
                                  "tokens (log2 bins)", hist.tolist(), edges.tolist())])

    def params(self) -> dict:
        return {"target_shard_tokens": self.cfg.target_shard_tokens}

    def global_needed(self) -> bool:
        return True  # the tokenizer (trained on a sample, or given) must be known before encoding

    def open_shard(self, ctx: ShardContext) -> None:
        self._heap: list[tuple[int, str]] = []  # max-heap by negated key: the n smallest keys seen
        self._writer = None
        self._hist = np.zeros(len(TOKENS_PER_DOC_BINS), dtype=np.int64)
        self._text_bytes = 0

    def collect(self, batch: pa.Table, ctx: ShardContext) -> dict:
        n, seed = self.tokenizer_cfg.sample_docs, self.tokenizer_cfg.seed
        for doc_id in batch.column("id").to_pylist():
            item = (-sample_key(doc_id, seed), doc_id)
            if len(self._heap) < n:
                heapq.heappush(self._heap, item)
            elif item > self._heap[0]:
                heapq.heapreplace(self._heap, item)
        return {}

    def apply(self, batch: pa.Table, ctx: ShardContext) -> pa.Table:
        state = ctx.state["tokenize"]
        tok = _tokenizer(state["model_path"])
        if self._writer is None:
            self._writer = TokenShardWriter(state["out_dir"], ctx.shard, self.cfg.target_shard_tokens,
                                            tok.eos_id, tok.dtype)
        texts = batch.column("text").to_pylist()
        arrays = tok.encode_batch(texts)
        self._writer.add(batch.column("id").to_pylist(), arrays)
        n = np.fromiter((a.size + 1 for a in arrays), np.int64, len(arrays))
        self._hist += np.bincount(np.searchsorted(TOKENS_PER_DOC_BINS, n, side="right") - 1,
                                  minlength=len(TOKENS_PER_DOC_BINS))
        self._text_bytes += int(pc.sum(pc.binary_length(batch.column("text"))).as_py() or 0)
        return batch

    def close_shard(self, ctx: ShardContext) -> dict:
        out = {}
        if self._heap:  # written as a key file (not returned): 100k shards x sample_docs would not fit a driver
            pairs = sorted((-k, i) for k, i in self._heap)
            out["keys"] = pa.table({"key": pa.array([k for k, _ in pairs], pa.uint64()),
                                    "id": pa.array([i for _, i in pairs], pa.string()),
                                    "shard": pa.array([ctx.shard] * len(pairs), pa.string()),
                                    PART_COL: pa.array(np.zeros(len(pairs), dtype=np.int64))})
        if self._writer is not None:
            out.update(token_files=self._writer.close(), tokens_per_doc_hist=self._hist.tolist(),
                       text_bytes=self._text_bytes)
        return out
