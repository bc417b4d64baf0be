"""Language ID, then the heuristic filter chain, then PII masking, in that order, on each document.

Language ID runs first because it is the cheapest way to drop a document; PII masking runs last so that
only kept documents are rewritten. The first failing check names the drop reason.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Literal

import numpy as np
import pyarrow as pa

from pipelines.filters import FilterChain
from pipelines.langid import LanguageIdentifier
from pipelines.pii import mask_pii
from pipelines.records import REASON, dump_metadata, load_metadata
from pipelines.stages.base import Plot, Report, ShardContext, Stage, set_column
from pipelines.typed_config import Fraction, PathStr

SCORE_BINS = np.linspace(0.0, 1.0, 41)  # language ID score histogram (for the stage's plot)
CHAIN_KEYS = ("word_splitter", "gopher_quality", "gopher_repetition", "c4", "fineweb")


@dataclass(frozen=True)
class LanguageConfig:
    model_path: PathStr | None = None  # fastText LID model (lid.176.bin, GlotLID, or one trained here); null = off
    languages: list[str] | None = None  # keep these labels (e.g. [en] or [eng_Latn]); null = any
    min_score: Fraction = 0.65


@dataclass(frozen=True)
class PiiConfig:
    emails: bool = True
    ips: bool = True


@dataclass(frozen=True)
class FilterConfig:
    enabled: bool = True
    word_splitter: Literal["fast", "spacy"] = "fast"  # spacy: datatrove's own
    # fused: pipelines/filters/fused.py, datatrove's decisions in one pass (~2.5-4x faster); datatrove: the
    # classes' own filter() calls, the reference. Same output either way, so not a parameter of the stage.
    engine: Literal["fused", "datatrove"] = "fused"
    # datatrove filter keyword arguments; null disables a filter. The defaults are FineWeb's published recipe
    # (datatrove examples/fineweb.py): datatrove's defaults, but C4's line filter keeps lines without terminal
    # punctuation (with it, hard-wrapped prose lost 93%: 3.5 MB of Gutenberg left the filter as 0.26 MB).
    # The keywords are checked against each class's signature when the config loads.
    gopher_quality: dict[str, Any] | None = field(default_factory=dict)
    gopher_repetition: dict[str, Any] | None = field(default_factory=dict)
    c4: dict[str, Any] | None = field(default_factory=lambda: {"filter_no_terminal_punct": False})
    fineweb: dict[str, Any] | None = field(default_factory=dict)
    language: LanguageConfig = field(default_factory=LanguageConfig)
    pii: PiiConfig = field(default_factory=PiiConfig)

    def validate(self, key: str) -> None:
        from pipelines.filters.chain import check_arguments

        for name in CHAIN_KEYS[1:]:
            check_arguments(name, getattr(self, name), f"{key}.{name}" if key else name)


@lru_cache(maxsize=2)
def _langid(model_path: str, languages: tuple | None, min_score: float) -> LanguageIdentifier:
    return LanguageIdentifier(model_path, list(languages) if languages else None, min_score)


class FilterStage(Stage):
    name = "filter"
    Config = FilterConfig

    @classmethod
    def files(cls, pipeline) -> list[tuple[str, str, str]]:
        f = pipeline.filter
        return [("filter.language.model_path", f.language.model_path, "fasttext")] \
            if f.enabled and f.language.model_path else []

    def __init__(self, cfg):
        super().__init__(cfg)
        d = dataclasses.asdict(cfg)
        self.chain = FilterChain({k: d[k] for k in CHAIN_KEYS}, engine=cfg.engine)

    def params(self) -> dict:
        params = super().params()
        del params["engine"]  # decides nothing (tests/test_filter_kernels.py): a resume and a digest ignore it
        return params

    def open_shard(self, ctx: ShardContext) -> None:
        self._hist = np.zeros(len(SCORE_BINS) - 1, dtype=np.int64)
        self.chain.trimmed.clear()

    def apply(self, batch: pa.Table, ctx: ShardContext) -> pa.Table:
        lang, pii = self.cfg.language, self.cfg.pii
        texts = batch.column("text").to_pylist()
        metas = [load_metadata(m) for m in batch.column("metadata").to_pylist()]
        reasons = batch.column(REASON).to_pylist()
        if lang.model_path:
            langid = _langid(lang.model_path, tuple(lang.languages) if lang.languages else None, lang.min_score)
            labels, scores, lang_reasons = langid.classify(texts)
            for i, (label, score, reason) in enumerate(zip(labels, scores, lang_reasons)):
                metas[i]["language"], metas[i]["language_score"] = label, round(float(score), 4)
                reasons[i] = reason
                if reason:  # why, in the document's own record (tokenmill lineage --doc shows it)
                    wrong = not (label and langid.accepts(label))
                    metas[i].update(filter_value=round(float(score), 4), filter_threshold=lang.min_score,
                                    filter_rule=f"language {label or '?'} is not one of {sorted(lang.languages or [])}"
                                    if wrong else f"language score {score:.4f} < min_score {lang.min_score}")
            self._hist += np.histogram(np.asarray(scores, dtype=float), bins=SCORE_BINS)[0]
        for i, text in enumerate(texts):
            if reasons[i]:
                continue
            text, reasons[i] = self.chain.apply(text, metas[i])
            if not reasons[i] and (pii.emails or pii.ips):
                text, counts = mask_pii(text, emails=pii.emails, ips=pii.ips)
                if any(counts.values()):
                    metas[i]["pii_masked"] = counts
            texts[i] = text
        batch = set_column(batch, "text", texts)
        batch = set_column(batch, "metadata", [dump_metadata(m) for m in metas])
        return set_column(batch, REASON, reasons)

    def close_shard(self, ctx: ShardContext) -> dict:
        out = {"trimmed": dict(self.chain.trimmed)}  # text cut from kept documents (C4's line filter)
        if self.cfg.language.model_path:
            out["language_score_hist"] = self._hist.tolist()
        return out

    def report(self, extras: list[dict], state: dict) -> Report:
        hists = [e["language_score_hist"] for e in extras if "language_score_hist" in e]
        if not hists:
            return Report()
        return Report(plots=[Plot("plots/language_scores.png", "filter: language ID score of the top label",
                                  "fastText score", np.sum(hists, axis=0).tolist(), SCORE_BINS.tolist())])
