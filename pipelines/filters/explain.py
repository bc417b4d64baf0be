"""Why a datatrove filter dropped a document, with numbers: the value it measured and the threshold.

datatrove's filters return only a reason string ("gopher_enough_stop_words", "top_2_gram", ...), no
values, so "dropped for too few stop words" cannot say how few. `explain` recomputes, for the one
filter that dropped the document and on the exact text it saw, the statistic that filter compared,
the way datatrove computes it (its own helpers, `flt.language` as the word splitter), and returns
{"value", "threshold", "rule"}, e.g. rule "1 distinct stop words < min_stop_words 2". It runs only for
dropped documents; a reason it does not know, or a value that does not fail the rule, gives None.
"""

from __future__ import annotations

import operator
import re
from typing import Any, Callable

import numpy as np
from datatrove.pipeline.filters.c4_filters import CITATION_REGEX, ELLIPSIS, END_PUNCTUATION, POLICY_SUBSTRINGS
from datatrove.pipeline.filters.gopher_repetition_filter import (
    find_all_duplicate,
    find_duplicates,
    find_top_duplicate,
    get_n_grams,
)
from datatrove.utils.text import PUNCTUATION_SET, split_into_sentences, split_into_words

_OPS = {"<": operator.lt, ">": operator.gt}
_CONFIG_NAME = {"short_line_threshold": "short_line_thr"}  # FineWeb's attribute vs its keyword argument


def _words(f, t: str) -> list[str]:
    return split_into_words(t, f.language)


def _non_symbol(f, t: str) -> list[str]:
    return [w for w in _words(f, t) if any(ch not in PUNCTUATION_SET for ch in w)]


def _share(flags) -> float:
    flags = list(flags)
    return sum(flags) / len(flags)


def _fw_lines(t: str) -> list[str]:
    return [line for line in t.split("\n") if line.strip() != ""]


def _c4_walk(f, t: str) -> tuple[int, str, str]:
    """C4QualityFilter.filter's line loop, without its counters: (sentences kept, reason, offending line)."""
    lines = t.splitlines() if f.split_paragraph else split_into_sentences(t, f.language)
    n = 0
    for line in lines:
        line = line.strip()
        words = line.split()
        if f.max_word_length != -1 and any(len(w) > f.max_word_length for w in words):
            continue
        if f.remove_citations:
            line = CITATION_REGEX.sub("", line)
        if f.filter_no_terminal_punct and (not line.endswith(END_PUNCTUATION) or line.endswith(ELLIPSIS)):
            continue
        if len(words) < f.min_words_per_line:
            continue
        low = line.lower()
        if f.filter_lorem_ipsum and "lorem ipsum" in low:
            return n, "lorem_ipsum", line
        if f.filter_javascript and "javascript" in low:
            continue
        if f.filter_curly_bracket and "{" in line:
            return n, "curly_bracket", line
        if f.filter_policy and any(p in low for p in POLICY_SUBSTRINGS):
            continue
        if f.min_num_sentences != -1:
            n += len(split_into_sentences(line, f.language)) if f.split_paragraph else 1
    return n, "too_few_sentences", ""


def _c4_line(reason: str, needle: str) -> Callable:
    def compute(f, t, n):  # the words around the needle in the line that dropped the document
        _, why, line = _c4_walk(f, t)
        if why != reason:
            raise ValueError(f"C4 would drop for {why}, not {reason}")
        i = line.lower().index(needle)
        return line[max(0, i - 25) : i + 35]
    return compute


# reason -> (comparison, what the value is, filter attribute holding the threshold, compute(flt, text, n)).
# "N" in a reason stands for the n of datatrove's "top_2_gram" / "duplicated_5_n_grams"; the threshold is
# then that n's entry of the attribute's (n, fraction) pairs. Comparison "" = no number to compare.
RULES: dict[str, tuple[str, str, str | None, Callable[[Any, str, int], Any]]] = {
    # GopherQualityFilter
    "gopher_short_doc": ("<", "non-symbol words", "min_doc_words", lambda f, t, n: len(_non_symbol(f, t))),
    "gopher_long_doc": (">", "non-symbol words", "max_doc_words", lambda f, t, n: len(_non_symbol(f, t))),
    "gopher_below_avg_threshold": ("<", "mean characters per non-symbol word", "min_avg_word_length",
                                   lambda f, t, n: np.mean([len(w) for w in _non_symbol(f, t)])),
    "gopher_above_avg_threshold": (">", "mean characters per non-symbol word", "max_avg_word_length",
                                   lambda f, t, n: np.mean([len(w) for w in _non_symbol(f, t)])),
    "gopher_too_many_hashes": (">", "'#' per word", "max_symbol_word_ratio",
                               lambda f, t, n: t.count("#") / len(_words(f, t))),
    "gopher_too_many_ellipsis": (">", "ellipses per word", "max_symbol_word_ratio",
                                 lambda f, t, n: (t.count("...") + t.count("…")) / len(_words(f, t))),
    "gopher_too_many_bullets": (">", "share of lines starting with a bullet", "max_bullet_lines_ratio",
                                lambda f, t, n: _share(s.lstrip().startswith(("•", "-")) for s in t.splitlines())),
    "gopher_too_many_end_ellipsis": (">", "share of lines ending in an ellipsis", "max_ellipsis_lines_ratio",
                                     lambda f, t, n: _share(s.rstrip().endswith(("...", "…")) for s in t.splitlines())),
    "gopher_below_alpha_threshold": ("<", "share of words with a letter", "max_non_alpha_words_ratio",
                                     lambda f, t, n: _share(any(c.isalpha() for c in w) for w in _words(f, t))),
    "gopher_enough_stop_words": ("<", "distinct stop words", "min_stop_words",
                                 lambda f, t, n: len(f.stop_words.intersection(_words(f, t)))),
    # GopherRepetitionFilter
    "dup_para_frac": (">", "share of paragraphs repeating an earlier one", "dup_para_frac",
                      lambda f, t, n: (lambda p: find_duplicates(p)[0] / len(p))(f.paragraph_exp.split(t.strip()))),
    "dup_para_char_frac": (">", "share of characters in repeated paragraphs", "dup_para_char_frac",
                           lambda f, t, n: find_duplicates(f.paragraph_exp.split(t.strip()))[1] / len(t)),
    "dup_line_frac": (">", "share of lines repeating an earlier one", "dup_line_frac",
                      lambda f, t, n: (lambda ls: find_duplicates(ls)[0] / len(ls))(f._line_splitter.split(t))),
    "dup_line_char_frac": (">", "share of characters in repeated lines", "dup_line_char_frac",
                           lambda f, t, n: find_duplicates(f._line_splitter.split(t))[1] / len(t)),
    "top_N_gram": (">", "share of characters in the most frequent {n}-gram", "top_n_grams",
                   lambda f, t, n: find_top_duplicate(get_n_grams(_words(f, t), n)) / len(t)),
    "duplicated_N_n_grams": (">", "share of characters in repeated {n}-grams", "dup_n_grams",
                             lambda f, t, n: find_all_duplicate(_words(f, t), n) / len(t)),
    # C4QualityFilter
    "too_few_sentences": ("<", "sentences in kept lines", "min_num_sentences", lambda f, t, n: _c4_walk(f, t)[0]),
    "lorem_ipsum": ("", 'contains "lorem ipsum"', "filter_lorem_ipsum", _c4_line("lorem_ipsum", "lorem ipsum")),
    "curly_bracket": ("", 'contains "{"', "filter_curly_bracket", _c4_line("curly_bracket", "{")),
    # FineWebQualityFilter
    "line_punct_ratio": ("<", "share of lines ending in terminal punctuation", "line_punct_thr",
                         lambda f, t, n: _share(line.endswith(f.stop_chars) for line in _fw_lines(t))),
    "short_line_ratio": (">", "share of short lines", "short_line_threshold",
                         lambda f, t, n: _share(len(line) <= f.short_line_length for line in _fw_lines(t))),
    "char_dup_ratio": (">", "share of characters in repeated lines", "char_duplicates_ratio",
                       lambda f, t, n: find_duplicates(_fw_lines(t))[1] / len(t.replace("\n", ""))),
    "list_ratio": (">", "newlines per word", "new_line_ratio", lambda f, t, n: t.count("\n") / len(_words(f, t))),
    # any filter (or the chain, on a division by zero words/lines)
    "empty": ("", "non-whitespace characters: nothing to measure", None, lambda f, t, n: len("".join(t.split()))),
}
_N = re.compile(r"^(top|duplicated)_(\d+)_")


def explain(flt: Any, why: str, text: str) -> dict | None:
    """{"value", "threshold", "rule"} for the datatrove filter `flt` that dropped `text` with reason `why`,
    or None (unknown reason, or anything going wrong: an explanation is never worth a failure)."""
    try:
        m = _N.match(why)
        return describe(flt, why, RULES[_N.sub(r"\1_N_", why)][3](flt, text, int(m.group(2)) if m else 0))
    except Exception:
        return None


def describe(flt: Any, why: str, raw: Any) -> dict | None:
    """The explanation of `why` from the value `raw` that failed it (measured by explain, or by the fused
    kernels, which return it with the decision); None where it does not fail the rule."""
    try:
        m = _N.match(why)
        n = int(m.group(2)) if m else 0
        op, label, attr, _ = RULES[_N.sub(r"\1_N_", why)]
        threshold = getattr(flt, attr) if attr else None
        name = _CONFIG_NAME.get(attr, attr)
        if m:
            threshold, name, label = dict(threshold)[n], f"{attr}[{n}]", label.format(n=n)
        value = round(float(raw), 4) if isinstance(raw, (float, np.floating)) else raw
        if op:
            if not _OPS[op](raw, threshold):
                return None  # not the value that failed it: say nothing rather than something wrong
            rule = f"{value} {label} {op} {name} {threshold}"
        elif attr:
            rule = f"a kept line {label}: {value!r} ({name} {threshold})"
        else:
            rule = f"{value} {label}"
        return {"value": value, "threshold": threshold, "rule": rule}
    except Exception:
        return None
