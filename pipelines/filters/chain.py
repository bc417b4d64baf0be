"""Heuristic quality filters: datatrove 0.10's own filter classes, run in sequence on one text.

The heuristics are datatrove's (GopherQualityFilter, GopherRepetitionFilter, C4QualityFilter,
FineWebQualityFilter), instantiated with the thresholds from the config and called through their
`filter(doc)` method. The only thing changed is the word splitter they use (see words.py): datatrove
resolves it with `load_word_tokenizer(self.language)`, which returns a `WordTokenizer` instance
unchanged ("for custom tokenizers"), so passing our tokenizer as `language=` is the hook (the
filters use `language` for nothing else).

Nothing here downloads: C4BadWordsFilter (which fetches word lists) is deliberately not offered.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from datatrove.data import Document
from datatrove.pipeline.filters import (
    C4QualityFilter,
    FineWebQualityFilter,
    GopherQualityFilter,
    GopherRepetitionFilter,
)
from datatrove.pipeline.filters.base_filter import BaseFilter, get_filter_result

from pipelines.filters.explain import describe, explain
from pipelines.filters.fused import FusedFilters
from pipelines.filters.words import fast_tokenizer_for

# the order of FineWeb's recipe: repetition, quality, C4, FineWeb
FILTER_CLASSES: dict[str, type[BaseFilter]] = {
    "gopher_repetition": GopherRepetitionFilter,
    "gopher_quality": GopherQualityFilter,
    "c4": C4QualityFilter,
    "fineweb": FineWebQualityFilter,
}
WORD_SPLITTERS = ("fast", "spacy")


def check_arguments(name: str, kwargs, key: str) -> None:
    """A filter's keyword arguments against its datatrove class's signature (ConfigError naming `key`)."""
    import inspect

    from pipelines.typed_config import ConfigError

    if kwargs is None or isinstance(kwargs, bool):
        return
    if not isinstance(kwargs, dict):
        raise ConfigError(f"{key}: a mapping of {FILTER_CLASSES[name].__name__}'s keyword arguments, or null; got {kwargs!r}")
    try:
        inspect.signature(FILTER_CLASSES[name]).bind(**{k: v for k, v in kwargs.items() if k != "exclusion_writer"})
    except TypeError as exc:
        params = [p for p in inspect.signature(FILTER_CLASSES[name]).parameters if p != "exclusion_writer"]
        raise ConfigError(f"{key}: {exc} (the arguments of {FILTER_CLASSES[name].__name__}: {', '.join(params)})") from None


def _line_counters(flt: BaseFilter) -> dict[str, int]:
    """datatrove's per-line drop counters of a line-editing filter (C4's "line-filter-*")."""
    return {k: v.total for k, v in flt.stats.stats.items() if k.startswith("line-filter-")}


class FilterChain:
    """Run the enabled datatrove filters in order; the first one that fails decides the drop reason.

    cfg keys:
      word_splitter: "fast" (default, words.py: spaCy's tokens without spaCy's Doc machinery) or
          "spacy" (datatrove's own tokenizer, unchanged)
      gopher_repetition / gopher_quality / c4 / fineweb: a dict of the datatrove class's keyword
          arguments ({} or true = datatrove defaults); absent, null or false = filter disabled.
          A "language" kwarg (default "en") picks datatrove's tokenizer for that language.
    engine: "fused" (fused.py: the same decisions in one pass on integer word ids, where every filter's
        language has the fast splitter) or "datatrove" (the classes' own filter() calls, the reference).
    """

    def __init__(self, cfg: dict[str, Any], engine: str = "fused"):
        splitter = cfg.get("word_splitter", "fast")
        if splitter not in WORD_SPLITTERS:
            raise ValueError(f"word_splitter must be one of {WORD_SPLITTERS}, got {splitter!r}")
        unknown = set(cfg) - set(FILTER_CLASSES) - {"word_splitter"}
        if unknown:
            raise ValueError(f"unknown filter config keys {sorted(unknown)}; known: {list(FILTER_CLASSES)}")

        self.word_splitter: str = splitter
        # what filters cut out of the documents they keep: "<filter>.docs", "<filter>.bytes" (UTF-8),
        # "<filter>.lines" and "<filter>.lines.<reason>" (datatrove's per-line counters, e.g.
        # c4.lines.no_terminal_punc); the caller resets it per shard
        self.trimmed: Counter = Counter()
        self.names: list[str] = []
        self._filters: list[BaseFilter] = []
        for name in FILTER_CLASSES:
            kwargs = cfg.get(name)
            if kwargs is None or kwargs is False:
                continue
            kwargs = {} if kwargs is True else dict(kwargs)
            kwargs.pop("exclusion_writer", None)  # the stage writer handles dropped rows
            if splitter == "fast":
                # None where datatrove uses no plain spaCy tokenizer (zh, ja, th, ...): keep its own
                fast = fast_tokenizer_for(kwargs.get("language", "en"))
                if fast is not None:
                    kwargs["language"] = fast
            self._filters.append(FILTER_CLASSES[name](**kwargs))
            self.names.append(name)
        if engine not in ("fused", "datatrove"):
            raise ValueError(f"engine must be 'fused' or 'datatrove', got {engine!r}")
        self._fused = None
        if engine == "fused":
            try:
                self._fused = FusedFilters(self._filters)
            except ValueError:  # a language without the fast splitter: datatrove's own classes
                pass
        self.engine = "fused" if self._fused else "datatrove"

    def apply(self, text: str, metadata: dict[str, Any]) -> tuple[str, str]:
        """Return (text, reason). reason "" = kept, else "<filter>:<datatrove reason>".

        The text comes back as the filters left it: C4QualityFilter drops lines (and strips the
        others) of documents it keeps. `metadata` is updated in place with any key a filter sets, and for
        a dropped document with "filter_value", "filter_threshold" and "filter_rule" (explain.py).
        """
        if self._fused is not None:
            return self._apply_fused(text, metadata)
        doc = Document(text=text, id="", metadata=dict(metadata))
        reason = ""
        for name, flt in zip(self.names, self._filters):
            before = doc.text
            edits = isinstance(flt, C4QualityFilter)  # the one filter that edits what it keeps
            lines_before = _line_counters(flt) if edits else {}
            try:
                keep, why = get_filter_result(flt.filter(doc))
            except ZeroDivisionError:  # ratios over zero words/lines: only for empty text
                keep, why = False, "empty"
            if not keep:
                reason = f"{name}:{why or 'filtered'}"
                found = explain(flt, why, before) if why else None  # the value that failed it, and the threshold
                if found:
                    for key in ("value", "threshold", "rule"):
                        doc.metadata[f"filter_{key}"] = found[key]
                break
            if edits and doc.text != before:
                self._count_trim(name, before, doc.text, lines_before, _line_counters(flt))
        for key, value in doc.metadata.items():
            if metadata.get(key, object()) != value:
                metadata[key] = value
        return doc.text, reason

    def _apply_fused(self, text: str, metadata: dict[str, Any]) -> tuple[str, str]:
        out, failed, why, value, edit = self._fused.apply(text)
        if edit is not None:  # counted where C4 cut lines, whatever a later filter decides (as filter())
            self._count_trim("c4", edit[0], edit[1], {}, edit[2])
        if failed >= 0:
            found = describe(self._filters[failed], why, value)
            if found:
                for key in ("value", "threshold", "rule"):
                    metadata[f"filter_{key}"] = found[key]
            return out, f"{self.names[failed]}:{why}"
        return out, ""

    def _count_trim(self, name: str, before: str, after: str, lines_before: dict, lines_after: dict) -> None:
        t = self.trimmed
        t[f"{name}.docs"] += 1
        t[f"{name}.bytes"] += len(before.encode("utf-8", "surrogatepass")) - len(after.encode("utf-8", "surrogatepass"))
        t[f"{name}.lines"] += max(0, len(before.splitlines()) - len(after.splitlines()))
        for key, n in lines_after.items():
            if n > lines_before.get(key, 0):
                t[f"{name}.lines.{key.removeprefix('line-filter-')}"] += n - lines_before.get(key, 0)

    def __repr__(self) -> str:
        return f"FilterChain({self.names}, word_splitter={self.word_splitter!r})"
