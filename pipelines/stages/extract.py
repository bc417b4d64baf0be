"""HTML extraction: documents whose metadata says HTML get their main text (trafilatura); others pass."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import pyarrow as pa

from pipelines.extract import HtmlExtractor
from pipelines.records import REASON, dump_metadata, load_metadata
from pipelines.stages.base import ShardContext, Stage, set_column
from pipelines.typed_config import PositiveFloat

HTML_TYPES = ("text/html", "application/xhtml+xml")


@lru_cache(maxsize=4)
def _extractor(timeout_s: float, favor_precision: bool) -> HtmlExtractor:
    return HtmlExtractor(timeout_s=timeout_s, favor_precision=favor_precision)


@dataclass(frozen=True)
class ExtractConfig:
    enabled: bool = True
    timeout_s: PositiveFloat = 5.0
    favor_precision: bool = True


class ExtractStage(Stage):
    name = "extract"
    Config = ExtractConfig

    def apply(self, batch: pa.Table, ctx: ShardContext) -> pa.Table:
        extractor = _extractor(self.cfg.timeout_s, self.cfg.favor_precision)
        texts, metas = batch.column("text").to_pylist(), batch.column("metadata").to_pylist()
        reasons = batch.column(REASON).to_pylist()
        for i, (text, meta_s) in enumerate(zip(texts, metas)):
            meta = load_metadata(meta_s)
            if meta.get("content_type") not in HTML_TYPES:
                continue
            extracted, reason = extractor.extract(text, meta)
            meta["html_bytes"] = len(text.encode("utf-8"))
            if reason:
                reasons[i] = reason
            else:
                texts[i] = extracted
                meta["content_type"] = "text/plain"
            metas[i] = dump_metadata(meta)
        batch = set_column(batch, "text", texts)
        batch = set_column(batch, "metadata", metas)
        return set_column(batch, REASON, reasons)
