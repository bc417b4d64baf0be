"""HTML extraction on Ray Data: documents whose metadata says HTML get their main text; others pass."""

from __future__ import annotations

from functools import lru_cache

import pyarrow as pa

from orchestration.pipeline_config import ExtractConfig, RayConfig
from orchestration.stage_output import read_stage
from orchestration.stage_runner import StagePlan, StageResult
from pipelines.extract import HtmlExtractor
from pipelines.records import dump_metadata, load_metadata

HTML_TYPES = ("text/html", "application/xhtml+xml")


@lru_cache(maxsize=4)
def _extractor(timeout_s: float, favor_precision: bool) -> HtmlExtractor:
    return HtmlExtractor(timeout_s=timeout_s, favor_precision=favor_precision)


def _extract(batch: pa.Table, timeout_s: float, favor_precision: bool) -> pa.Table:
    extractor = _extractor(timeout_s, favor_precision)
    texts, metas = batch.column("text").to_pylist(), batch.column("metadata").to_pylist()
    reasons = [""] * batch.num_rows
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
    return pa.table({
        "id": batch.column("id"), "text": pa.array(texts, pa.string()), "source": batch.column("source"),
        "url": batch.column("url"), "metadata": pa.array(metas, pa.string()), "_reason": pa.array(reasons, pa.string()),
    })


def plan(prev: StageResult, cfg: ExtractConfig, ray_cfg: RayConfig) -> StagePlan:
    ds = read_stage(prev.kept_files, ray_cfg.read_block_docs).map_batches(
        _extract, batch_size=ray_cfg.batch_size, batch_format="pyarrow",
        fn_kwargs={"timeout_s": cfg.timeout_s, "favor_precision": cfg.favor_precision},
    )
    return StagePlan(ds, prev.counts["kept"], None, prev.stage, prev.manifest_path, prev.manifest["digest"])
