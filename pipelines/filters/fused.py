"""datatrove's four heuristic filters, decided in one pass per document on integer word ids.

`FusedFilters` takes the same datatrove filter objects `FilterChain` builds (their attributes are the
thresholds, so every config key means what it means to datatrove) and reproduces, for each document, what
running their `filter()` in sequence gives: the same keep/drop, the same first failing rule, the same text
C4QualityFilter leaves behind (byte for byte) and the same per-line counters. tests/test_filter_kernels.py
checks that on more than 10,000 real documents against the datatrove classes themselves.

Where datatrove's time went (827 documents, 3.9 MB of crawl and books, 8.1 CPU-s): GopherRepetitionFilter
5.6 s, of it find_all_duplicate 2.6 s (one "".join and one set probe per position, for each n of 5..10),
the string n-gram lists 1.5 s, Counter.most_common 0.8 s; word splitting ~1.5 s (once per filter text);
GopherQualityFilter ~1 s (per-word generator expressions). What this module does instead:

- Words: each whitespace-free chunk of the text is split by the fast tokenizer once per process and
  interned: chunk -> tuple of token ids; per token id its length, "has a non-punctuation character",
  "has a letter", and a 64-bit polynomial hash of its characters. A document's words are one C-level
  gather (map + chain) into an int64 array; every word statistic is a numpy reduction over it.
- n-grams: the word tuples are classed exactly by repeated pairing (class of the (k-1)-gram x word id,
  renumbered by np.unique), so "most frequent 2-gram" and "repeated 7-grams" are counts over integers.
  datatrove compares its 5..10-grams as "".join(words) strings, where ("a", "bc") equals ("ab", "c"): the
  polynomial hash of each window's concatenated characters is classed too, and the tuple classes are
  used only when both partitions have the same number of classes (tuple-equal implies string-equal implies
  hash-equal, so equal counts mean equal partitions); otherwise that n is computed by datatrove's own
  function on the strings. find_all_duplicate's greedy scan (skip n words after a repeat) only needs the
  positions whose class occurs twice or more, usually a small fraction of them.
- Lines and paragraphs: duplicates counted with one set (count and characters of the non-first copies).
- C4: datatrove's own line loop, except that sentences are counted only until min_num_sentences is
  reached (the count is compared with nothing else; the sentence splitter ran on every kept line), and
  the checks a line can only fail if the whole text does (a word over max_word_length, from the chunk
  widths; a citation; C4's keywords and "{") are made once on the text, skipping them per line.
- For a dropped document the value that failed the rule is returned with it (datatrove only gives the
  reason; explain.py recomputes it on its path).

The ids are process-local (one vocabulary per language per process, kept across shard tasks) and the
tables start over when they pass MAX_CHUNKS (bounded memory, the most used chunks kept); no result depends
on them.
"""

from __future__ import annotations

import re
from itertools import repeat
from operator import methodcaller
from typing import Any

import numpy as np
from datatrove.pipeline.filters import (
    C4QualityFilter,
    FineWebQualityFilter,
    GopherQualityFilter,
    GopherRepetitionFilter,
)
from datatrove.pipeline.filters.c4_filters import CITATION_REGEX, ELLIPSIS, END_PUNCTUATION, POLICY_SUBSTRINGS
from datatrove.pipeline.filters.gopher_repetition_filter import find_all_duplicate
from datatrove.utils.text import PUNCTUATION_SET, split_into_sentences

from pipelines.filters.words import FastWordTokenizer, _is_punct

# distinct chunks a vocabulary holds before it starts over (the tokens are fewer). A chunk costs ~270 bytes
# (its string, dict entries, its share of the tokens): 315k chunks of 6,000 benchmark documents held 84 MB,
# and a worker's memory grew with its input until the tables filled. At 100k a filter process holds +45 MB
# over 14,000 documents (150k: +62 MB). Starting over from nothing cost 14% of the filters' time (every
# common chunk split again); it keeps the chunks used by two documents or more since the last start (at most
# half), and then 100k costs ~3% against no bound (150k ~2%).
MAX_CHUNKS = 100_000
_B = np.uint64(0x100000001B3)  # FNV prime: the base of the character hash (any odd 64-bit number works)
_PUNCT = "".join(sorted(PUNCTUATION_SET))  # a token with characters left after .strip(_PUNCT) is a "word"
_ODD_SPACE = re.compile(r"[^\S ]|  ")  # whitespace other than single spaces: spaCy makes tokens of it
_POLICY = re.compile("|".join(map(re.escape, POLICY_SUBSTRINGS)))  # any(p in line for p in ...) in one scan
# C4's line keywords, as few substrings as cover them ("cookie" covers the four cookie phrases): a text
# without any has no line with one. Five `in` scans take ~26 us on a 4 KB text, one regex alternation ~50
_C4_KEYWORDS = ("lorem ipsum", "javascript", "terms of use", "privacy policy", "cookie")
if not all(any(k in p for k in _C4_KEYWORDS) for p in POLICY_SUBSTRINGS):  # another datatrove's list
    _C4_KEYWORDS = ("lorem ipsum", "javascript", *POLICY_SUBSTRINGS)


def _dups(xs: list[str]) -> tuple[int, int]:
    """datatrove's find_duplicates: (elements equal to an earlier one, their characters), with one set."""
    u = set(xs)
    return len(xs) - len(u), sum(map(len, xs)) - sum(map(len, u))


def _present(wanted: np.ndarray, ids: np.ndarray) -> int:
    """How many of `wanted` (distinct) occur in `ids`: one comparison table where it is small (np.isin sorts
    both: 150 us per document for the 8 stop words, the table ~10 us)."""
    if len(wanted) * len(ids) > 1 << 20:
        return int(np.isin(wanted, ids).sum())
    return int(np.count_nonzero((ids[:, None] == wanted).any(axis=0)))


def _split_runs(text: str, least: int) -> list[str]:
    """re.split("\\n{least,}", text) for least 1 or 2, from str.split("\\n") (the regex took ~40 us on a 4 KB
    text, this 3-10): between two parts, a run of r newlines leaves r - 1 empty parts."""
    parts = text.split("\n")
    if least == 1 or len(parts) == 1:  # the first and last parts stay even when empty
        return parts if len(parts) == 1 else [parts[0], *filter(None, parts[1:-1]), parts[-1]]
    out: list[str] = []
    group = [parts[0]]
    i, last = 1, len(parts) - 1
    while i <= last:
        run = 1
        while not parts[i] and i < last:  # an empty part with a newline after it: the run goes on
            run, i = run + 1, i + 1
        if run >= least:
            out.append("\n".join(group))
            group = [parts[i]]
        else:
            group.append(parts[i])
        i += 1
    out.append("\n".join(group))
    return out


def _powers(n: int) -> np.ndarray:
    """B^0 .. B^(n-1) mod 2^64."""
    out = np.full(max(n, 1), _B, np.uint64)
    out[0] = 1
    return np.cumprod(out, dtype=np.uint64)  # uint64 products wrap: arithmetic mod 2^64


def _group(key: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Equal values of `key` (np.unique's work, without its wrappers): for the elements whose value occurs
    more than once, (their indices, ascending; a label per value, not dense) and per such value (its count,
    the index of its first element)."""
    if len(key) <= 48:  # the longer n-grams' levels are mostly this small: a dict beats ~15 numpy calls (~20 us)
        return _group_small(key)
    order = np.argsort(key, kind="stable")
    sk = key[order]
    new = np.empty(len(sk), np.bool_)
    new[:1] = True
    np.not_equal(sk[1:], sk[:-1], out=new[1:])
    starts = np.flatnonzero(new)
    sizes = np.diff(np.append(starts, len(sk)))
    label = np.empty(len(sk), np.int64)
    label[order] = np.cumsum(new) - 1
    many = np.flatnonzero(sizes[label] > 1)
    rep = sizes > 1
    return many, label[many], sizes[rep], order[starts[rep]]


def _group_small(key: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """_group for a few elements, in Python."""
    where: dict[int, list[int]] = {}
    for i, k in enumerate(key.tolist()):
        where.setdefault(k, []).append(i)
    reps = [v for v in where.values() if len(v) > 1]
    many = sorted((i, label) for label, idx in enumerate(reps) for i in idx)
    return (np.array([i for i, _ in many], np.int64), np.array([c for _, c in many], np.int64),
            np.array([len(v) for v in reps], np.int64), np.array([v[0] for v in reps], np.int64))


class Vocab:
    """A tokenizer's chunks and tokens as integer ids, with per-token properties as numpy arrays."""

    def __init__(self, tokenizer: FastWordTokenizer):
        self.tokenizer = tokenizer
        self._pow = _powers(64)
        self.restarts = 0
        self.carried = 0  # chunks kept across restarts
        self._reset()

    def _reset(self) -> None:
        self.chunks: dict[str, int] = {}  # chunk -> its tokens: flat[start[id] : start[id] + count[id]]
        self.tokens: dict[str, int] = {}
        self.start = np.zeros(4096, np.int64)
        self.count = np.zeros(4096, np.int64)
        self.width = np.zeros(4096, np.int64)  # characters of the chunk
        self.used = np.zeros(4096, np.int32)  # documents (or C4 lines) that looked the chunk up
        self.flat = np.zeros(4096, np.int64)
        self._flat_used = 0
        cap = 4096
        self.length = np.zeros(cap, np.int64)
        self.nonsym = np.zeros(cap, np.bool_)  # any character outside datatrove's PUNCTUATION_SET
        self.alpha = np.zeros(cap, np.bool_)  # any letter (str.isalpha)
        self.sent_end = np.zeros(cap, np.bool_)  # one of the sentencizer's punct_chars ("." "!" "?" ...)
        self.punct = np.zeros(cap, np.bool_)  # every character Unicode punctuation (spaCy's is_punct)
        self.hash = np.zeros(cap, np.uint64)  # sum c_k * B^(len-1-k) mod 2^64 over the characters
        self.power = np.zeros(cap, np.uint64)  # B^len mod 2^64

    @staticmethod
    def _fit(obj, names: tuple[str, ...], n: int) -> None:
        for name in names:
            old = getattr(obj, name)
            if n > len(old):
                grown = np.zeros(max(n, 2 * len(old)), old.dtype)
                grown[: len(old)] = old
                setattr(obj, name, grown)

    def _add(self, chunks: list[str]) -> None:
        """Split new chunks as tokenizer.word_tokenize would (its _chunk_tokens, without filling its own
        chunk cache: this is the cache), intern their tokens, compute the new tokens' properties at once."""
        tok = self.tokenizer
        if not tok._rules_loaded:
            tok._load_rules()
        specials, merge, tokens = tok._specials, tok._merge_max, self.tokens
        first_chunk, first_token = len(self.chunks), len(tokens)
        new: list[str] = []
        flat: list[int] = []
        counts: list[int] = []
        for c in chunks:
            if (c.isalpha() or c.isdecimal()) and c not in specials:  # words.py's shortcut, before its cache
                pieces = [c]
            else:
                pieces = tok._raw_tokens(c)
                if len(pieces) > 1 and merge:
                    pieces = tok._merge_specials(pieces)
            for t in pieces:
                i = tokens.get(t)
                if i is None:
                    i = tokens[t] = len(tokens)  # never holds " ": " ".join of n words is injective
                    new.append(t)
                flat.append(i)
            counts.append(len(pieces))
            self.chunks[c] = len(self.chunks)
        n_chunks = len(self.chunks)
        self._fit(self, ("start", "count", "width", "used"), n_chunks)
        self.width[first_chunk:n_chunks] = np.fromiter(map(len, chunks), np.int64, len(chunks))
        self._fit(self, ("flat",), self._flat_used + len(flat))
        cnt = np.array(counts, np.int64)
        self.count[first_chunk:n_chunks] = cnt
        self.start[first_chunk:n_chunks] = self._flat_used + np.cumsum(cnt) - cnt
        self.flat[self._flat_used : self._flat_used + len(flat)] = flat
        self._flat_used += len(flat)
        if new:
            self._properties(new, first_token)

    def _properties(self, new: list[str], first: int) -> None:
        end = first + len(new)
        self._fit(self, ("length", "nonsym", "alpha", "sent_end", "punct", "hash", "power"), end)
        lens = np.fromiter(map(len, new), np.int64, len(new))
        if lens.max() >= len(self._pow):
            self._pow = _powers(int(lens.max()) + 1)
        chars = np.frombuffer("".join(new).encode("utf-32-le", "surrogatepass"), np.uint32).astype(np.uint64)
        ends = np.cumsum(lens)
        exps = np.repeat(ends, lens) - 1 - np.arange(len(chars))  # Horner: c_k * B^(len-1-k)
        sl = slice(first, end)
        self.hash[sl] = np.add.reduceat(chars * self._pow[exps], ends - lens)
        self.power[sl] = self._pow[lens]
        self.length[sl] = lens
        self.nonsym[sl] = [bool(t.strip(_PUNCT)) for t in new]
        self.alpha[sl] = [t.isalpha() or any(map(str.isalpha, t)) for t in new]
        punct_chars = self.tokenizer._punct_chars
        self.sent_end[sl] = [t in punct_chars for t in new]
        self.punct[sl] = [not a and _is_punct(t) for t, a in zip(new, self.alpha[sl].tolist())]  # a letter is no P*

    def start_document(self) -> None:
        """Start over when full, between documents only: within one, a filter's words must keep their ids."""
        if len(self.chunks) > MAX_CHUNKS:
            self._start_over()

    def _start_over(self) -> None:
        """Keep the chunks used by two documents or more (at most half the room) and their tokens, renumbered
        in array operations (~25 ms for 60k chunks; re-adding them one by one took ~200 ms)."""
        used = self.used[: len(self.chunks)]
        kept = np.sort(np.argsort(-used, kind="stable")[: min(int(np.count_nonzero(used >= 2)), MAX_CHUNKS // 2)])
        count = self.count[kept]
        at = np.repeat(self.start[kept] - (np.cumsum(count) - count), count) + np.arange(int(count.sum()))
        old_tokens = self.flat[at]
        kept_tokens = np.unique(old_tokens)
        renumber = np.zeros(len(self.tokens), np.int64)
        renumber[kept_tokens] = np.arange(len(kept_tokens))
        chunk_names, token_names = list(self.chunks), list(self.tokens)  # in id order
        old = self.__dict__.copy()
        self._reset()
        self.chunks = {chunk_names[i]: n for n, i in enumerate(kept.tolist())}
        self.tokens = {token_names[t]: n for n, t in enumerate(kept_tokens.tolist())}
        self._fit(self, ("start", "count", "width", "used"), len(kept))
        self._fit(self, ("flat",), len(at))
        self._fit(self, ("length", "nonsym", "alpha", "sent_end", "punct", "hash", "power"), len(kept_tokens))
        n, m = len(kept), len(kept_tokens)
        self.count[:n], self.start[:n], self.width[:n] = count, np.cumsum(count) - count, old["width"][kept]
        self.flat[: len(at)] = renumber[old_tokens]
        self._flat_used = len(at)
        for name in ("length", "nonsym", "alpha", "sent_end", "punct", "hash", "power"):
            getattr(self, name)[:m] = old[name][kept_tokens]
        self.restarts += 1
        self.carried += n

    def ids(self, text: str) -> np.ndarray:
        """The token ids of tokenizer.word_tokenize(text), in order."""
        return self.token_ids(self.chunk_ids(text))

    def chunk_ids(self, text: str) -> np.ndarray:
        """The ids of text.split()'s chunks, in order (new chunks split and interned)."""
        chunks = text.split()
        c = np.fromiter(map(self.chunks.get, chunks, repeat(-1)), np.int64, len(chunks))
        if len(c) and c.min() < 0:
            missing = np.flatnonzero(c < 0)
            new = [chunks[i] for i in missing.tolist()]
            self._add(list(dict.fromkeys(new)))
            c[missing] = list(map(self.chunks.__getitem__, new))
        self.used[c] += 1  # (a chunk twice in the text counts once)
        return c

    def token_ids(self, c: np.ndarray) -> np.ndarray:
        """The token ids of chunks `c`, in order."""
        start, count = self.start[c], self.count[c]
        total = int(count.sum())
        if total == len(c):  # every chunk one token (most documents: then no repeat needed)
            return self.flat[start]
        offset = np.arange(total) - np.repeat(np.cumsum(count) - count, count)
        return self.flat[np.repeat(start, count) + offset]

    def sentences(self, line: str) -> int | None:
        """len(split_into_sentences(line)) for a stripped, non-empty line, from the token flags (spaCy's
        Sentencizer: a sentence ends at the first token after a punct_chars token that is neither one nor
        punctuation); None where spaCy would see whitespace tokens (any run but one " "): ask the tokenizer."""
        if not self.tokenizer._rules_loaded:
            self.tokenizer._load_rules()
        if not self.tokenizer._has_punct_char(line):  # no sentence-ending character: one sentence
            return 1
        if _ODD_SPACE.search(line):
            return None
        ids = self.ids(line)
        if not len(ids):
            return None
        ends, other = self.sent_end[ids], ~(self.sent_end[ids] | self.punct[ids])
        seen = np.cumsum(ends)[other]  # punct_chars tokens up to each token that can start a sentence
        return 1 + int(np.count_nonzero(np.diff(seen, prepend=0)))


class _Words:
    """One document's words under one vocabulary, and its repeated n-grams, computed on first use."""

    def __init__(self, vocab: Vocab, text: str):
        self.v, self.text = vocab, text
        self.cids = vocab.chunk_ids(text)
        self.ids = vocab.token_ids(self.cids)
        self.n = len(self.ids)
        self._cum: np.ndarray | None = None
        self._levels: list[tuple] = []  # k-1 -> the windows of k words whose tuple occurs twice or more
        self._hashes: list[np.ndarray] = []  # k-1 -> hash of every k-word window's concatenated characters

    def chars(self, pos: np.ndarray, k: int) -> np.ndarray:
        """Characters of the k-word windows starting at pos, words concatenated."""
        if self._cum is None:
            self._cum = np.concatenate(([0], np.cumsum(self.v.length[self.ids])))
        return self._cum[pos + k] - self._cum[pos]

    def repeated(self, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """The k-word windows whose word tuple occurs more than once: (their start positions, ascending;
        their class, equal iff the tuples are; windows per class; first position per class). A window
        repeats only if the (k-1)-word windows at its start and one word later both do, so each level
        classes (class x next word) only what the last level left."""
        while len(self._levels) < k:
            j = len(self._levels) + 1
            if j == 1:
                pos, key = np.arange(self.n), self.ids
            elif not len(self._levels[-1][0]):  # nothing repeats at k-1 words: nothing longer can
                self._levels.append(self._levels[-1])
                continue
            else:
                prev_pos, prev_cls, _, _ = self._levels[-1]
                flag = np.zeros(self.n + 1, np.bool_)
                flag[prev_pos] = True
                keep = flag[prev_pos + 1] & (prev_pos <= self.n - j)
                pos = prev_pos[keep]
                key = prev_cls[keep] * (int(self.ids.max()) + 1) + self.ids[pos + j - 1]
            many, cls, counts, first = _group(key)
            self._levels.append((pos[many], cls, counts, pos[first]))
        return self._levels[k - 1]

    def tuples_are_strings(self, ks: list[int]) -> bool:
        """Whether, for every k in ks, the k-word windows with equal "".join are exactly those with equal
        tuples: tuple-equal implies string-equal implies hash-equal, so as many distinct hashes as tuples means
        the same partition (a hash collision only sends the document to datatrove's own function). One sort
        per level: six of n cost less than one of 6n, and hold a sixth of the memory (a 1.3 MB book: 52 MB)."""
        ks = sorted(k for k in ks if k <= self.n)
        powers, h = self.v.power[self.ids], self.v.hash[self.ids]  # (gathered once: a level is then arithmetic)
        chars = h
        for j in range(1, max(ks, default=0) + 1):
            if j > 1:
                h = h[:-1] * powers[j - 1 :] + chars[j - 1 :]
            if j in ks:
                pos, _, counts, _ = self.repeated(j)
                tuples = len(h) - (len(pos) - len(counts))
                s = np.sort(h)
                if 1 + int(np.count_nonzero(s[1:] != s[:-1])) != tuples:
                    return False
        return True


def _top_ngram_chars(w: _Words, n: int) -> int | None:
    """datatrove's find_top_duplicate(get_n_grams(words, n)): characters of the most frequent n-gram
    (words joined by " ") times its count, the first seen among equals; None where there is no n-gram."""
    if w.n < n:
        return None
    _, _, counts, first = w.repeated(n)
    if not len(counts):  # every n-gram once: Counter.most_common(1) gives the first
        return int(w.chars(np.array([0]), n)[0]) + n - 1
    top = counts.max()
    pos = int(first[counts == top].min())
    return (int(w.chars(np.array([pos]), n)[0]) + n - 1) * int(top)


def _all_duplicate_chars(w: _Words, n: int, exact: bool) -> int:
    """datatrove's find_all_duplicate(words, n): left to right, a window whose "".join was seen before adds
    its characters and skips n words; only windows whose tuple repeats can do that. `exact`: tuples and
    strings class the windows alike (_Words.tuples_are_strings), else datatrove's function runs."""
    if w.n < n:
        return 0
    if not exact:  # some different word tuples join to the same string: datatrove's way
        return find_all_duplicate(w.v.tokenizer.word_tokenize(w.text), n)
    pos, cls, _, _ = w.repeated(n)
    seen: set[int] = set()
    total = idx = 0
    for p, c, chars in zip(pos.tolist(), cls.tolist(), w.chars(pos, n).tolist()):
        if p < idx:
            continue
        if c in seen:
            total += chars
            idx = p + n
        else:
            seen.add(c)
    return total


_VOCABS: dict[str, Vocab] = {}


def vocabulary(tok: FastWordTokenizer) -> Vocab:
    """The process's vocabulary for the tokenizer's language: a Ray worker keeps it from one shard task to the
    next (each task unpickles its own stages), so only the first task of a worker splits every chunk."""
    v = _VOCABS.get(tok.language)
    if v is None:
        v = _VOCABS[tok.language] = Vocab(tok)
    return v


def clear_vocabularies() -> None:
    """Forget every chunk and token (to measure a cold start)."""
    _VOCABS.clear()


class FusedFilters:
    """The decisions of datatrove filter objects (Gopher repetition and quality, C4, FineWeb) run in order."""

    def __init__(self, filters: list[Any]):
        kinds = (GopherRepetitionFilter, GopherQualityFilter, C4QualityFilter, FineWebQualityFilter)
        for f in filters:
            if type(f) not in kinds or not isinstance(f.language, FastWordTokenizer):
                raise ValueError(f"no fused kernel for {f!r} with word tokenizer {f.language!r}")
        self.filters = filters

    def apply(self, text: str) -> tuple[str, int, str | None, Any, tuple | None]:
        """(text after the filters, index of the filter that dropped it or -1, its reason, the value that
        failed the rule (None where there is none), and where C4 kept the document and cut lines from it:
        (text before, text after, its line counters for this document), else None)."""
        for v in _VOCABS.values():
            v.start_document()
        words: dict[int, _Words] = {}  # per tokenizer, for the text the filters before C4 saw
        edit = None
        for i, f in enumerate(self.filters):
            try:
                if isinstance(f, C4QualityFilter):
                    lines: dict[str, int] = {}
                    keep, why, value, out = self._c4(f, text, lines, words.get(id(f.language)))
                    if keep:
                        if out != text:
                            edit, words = (text, out, lines), {}
                        text = out
                        continue
                else:
                    w = words.get(id(f.language))
                    if w is None and not isinstance(f, FineWebQualityFilter):
                        w = words[id(f.language)] = _Words(vocabulary(f.language), text)
                    keep, why, value = (self._repetition(f, text, w) if isinstance(f, GopherRepetitionFilter) else
                                        self._quality(f, text, w) if isinstance(f, GopherQualityFilter) else
                                        self._fineweb(f, text, w))
            except ZeroDivisionError:  # ratios over zero words/lines: only for empty text (as FilterChain)
                keep, why, value = False, "empty", None
            if not keep:
                if why == "empty":
                    value = len("".join(text.split()))
                return text, i, why, value, edit
        return text, -1, None, None, edit

    # ---- GopherRepetitionFilter.filter ----
    def _repetition(self, f: GopherRepetitionFilter, text: str, w: _Words):
        if not text:
            return False, "empty", None
        paragraphs = _split_runs(text.strip(), 2) if f.paragraph_exp.pattern == "\\n{2,}" else \
            f.paragraph_exp.split(text.strip())
        dup, chars = _dups(paragraphs)
        if f.dup_para_frac and dup / len(paragraphs) > f.dup_para_frac:
            return False, "dup_para_frac", dup / len(paragraphs)
        if f.dup_para_char_frac and chars / len(text) > f.dup_para_char_frac:
            return False, "dup_para_char_frac", chars / len(text)
        lines = _split_runs(text, 1) if f._line_splitter.pattern == "\n+" else f._line_splitter.split(text)
        dup, chars = _dups(lines)
        if f.dup_line_frac and dup / len(lines) > f.dup_line_frac:
            return False, "dup_line_frac", dup / len(lines)
        if f.dup_line_char_frac and chars / len(text) > f.dup_line_char_frac:
            return False, "dup_line_char_frac", chars / len(text)
        for n, n_frac in f.top_n_grams:
            top = _top_ngram_chars(w, n)
            if top is None:
                continue
            if top / len(text) > n_frac:
                return False, f"top_{n}_gram", top / len(text)
        exact = w.tuples_are_strings([n for n, _ in f.dup_n_grams])
        for n, n_frac in f.dup_n_grams:
            dup_chars = _all_duplicate_chars(w, n, exact)
            if dup_chars / len(text) > n_frac:
                return False, f"duplicated_{n}_n_grams", dup_chars / len(text)
        return True, None, None

    # ---- GopherQualityFilter.filter ----
    def _quality(self, f: GopherQualityFilter, text: str, w: _Words):
        v, ids, n_words = w.v, w.ids, w.n
        nonsym = v.nonsym[ids]
        n_ns = int(nonsym.sum())
        if f.min_doc_words and n_ns < f.min_doc_words:
            return False, "gopher_short_doc", n_ns
        if f.max_doc_words and n_ns > f.max_doc_words:
            return False, "gopher_long_doc", n_ns
        # np.mean of the lengths: an exact integer sum in float64, divided once (nan for no words, as numpy)
        avg = float(np.float64(int(v.length[ids][nonsym].sum())) / n_ns) if n_ns else float("nan")
        if f.min_avg_word_length and avg < f.min_avg_word_length:
            return False, "gopher_below_avg_threshold", avg
        if f.max_avg_word_length and avg > f.max_avg_word_length:
            return False, "gopher_above_avg_threshold", avg
        if f.max_symbol_word_ratio and text.count("#") / n_words > f.max_symbol_word_ratio:
            return False, "gopher_too_many_hashes", text.count("#") / n_words
        ellipses = text.count("...") + text.count("…")
        if f.max_symbol_word_ratio and ellipses / n_words > f.max_symbol_word_ratio:
            return False, "gopher_too_many_ellipsis", ellipses / n_words
        lines = text.splitlines()
        if f.max_bullet_lines_ratio:
            share = sum(s.lstrip().startswith(("•", "-")) for s in lines) / len(lines)
            if share > f.max_bullet_lines_ratio:
                return False, "gopher_too_many_bullets", share
        if f.max_ellipsis_lines_ratio:
            share = (sum(s.rstrip().endswith(("...", "…")) for s in lines) if ellipses else 0) / len(lines)
            if share > f.max_ellipsis_lines_ratio:
                return False, "gopher_too_many_end_ellipsis", share
        if f.max_non_alpha_words_ratio:
            share = int(v.alpha[ids].sum()) / n_words
            if share < f.max_non_alpha_words_ratio:
                return False, "gopher_below_alpha_threshold", share
        if f.min_stop_words:
            stop = [i for i in map(v.tokens.get, f.stop_words) if i is not None]
            found = _present(np.array(stop, np.int64), ids) if stop else 0
            if found < f.min_stop_words:
                return False, "gopher_enough_stop_words", found
        return True, None, None

    # ---- C4QualityFilter.filter ----
    def _c4(self, f: C4QualityFilter, text: str, counted: dict[str, int], w: _Words | None):
        lines = text.splitlines() if f.split_paragraph else split_into_sentences(text, f.language)
        num_sentences = 0
        enough = f.min_num_sentences  # sentences are counted until there are this many: nothing else reads them
        kept_lines = []
        # Checks a line can only fail if the whole text does (lines are substrings of it, cut at whitespace;
        # lower() maps these ASCII keywords per character), made once here instead of on every line. The
        # longest word comes from the chunk widths the filters before C4 looked up, where they did.
        longest = int(w.v.width[w.cids].max(initial=0)) if w is not None else None
        long_words = f.max_word_length != -1 and (longest is None or longest > f.max_word_length)
        citations = f.remove_citations and CITATION_REGEX.search(text) is not None
        text_l = text.lower()
        keywords = "{" in text or any(k in text_l for k in _C4_KEYWORDS)

        def drop_line(key: str) -> None:
            counted[key] = counted.get(key, 0) + 1

        for line in lines:
            line = line.strip()
            words = line.split()
            if long_words and max(map(len, words), default=0) > f.max_word_length:
                drop_line("line-filter-too_long_word")
                continue
            if citations:
                line = CITATION_REGEX.sub("", line)
            if f.filter_no_terminal_punct and (not line.endswith(END_PUNCTUATION) or line.endswith(ELLIPSIS)):
                drop_line("line-filter-no_terminal_punc")
                continue
            if len(words) < f.min_words_per_line:
                drop_line("line-filter-too_few_words")
                continue
            if keywords:
                line_l = line.lower()
                if f.filter_lorem_ipsum and "lorem ipsum" in line_l:
                    i = line_l.index("lorem ipsum")
                    return False, "lorem_ipsum", line[max(0, i - 25) : i + 35], text
                if f.filter_javascript and "javascript" in line_l:
                    drop_line("line-filter-javascript")
                    continue
                if f.filter_curly_bracket and "{" in line:
                    i = line_l.index("{")
                    return False, "curly_bracket", line[max(0, i - 25) : i + 35], text
                if f.filter_policy and _POLICY.search(line_l):
                    drop_line("line-filter-policy")
                    continue
            if f.min_num_sentences != -1 and num_sentences < enough:
                if f.split_paragraph:
                    n = vocabulary(f.language).sentences(line)
                    num_sentences += n if n is not None else len(split_into_sentences(line, f.language))
                else:
                    num_sentences += 1
            kept_lines.append(line)
        if num_sentences < f.min_num_sentences:
            return False, "too_few_sentences", num_sentences, text
        return True, None, None, ("\n" if f.split_paragraph else " ").join(kept_lines).strip()

    # ---- FineWebQualityFilter.filter ----
    def _fineweb(self, f: FineWebQualityFilter, text: str, w: _Words | None):
        lines = [line for line in text.split("\n") if line.strip() != ""]
        if len(lines) == 0:
            return False, "empty", None
        share = sum(map(methodcaller("endswith", f.stop_chars), lines)) / len(lines)
        if share < f.line_punct_thr and not (share == 0 and f.line_punct_exclude_zero):
            return False, "line_punct_ratio", share
        share = sum(1 for line in lines if len(line) <= f.short_line_length) / len(lines)
        if share > f.short_line_threshold:
            return False, "short_line_ratio", share
        share = _dups(lines)[1] / len(text.replace("\n", ""))
        if share > f.char_duplicates_ratio:
            return False, "char_dup_ratio", share
        n_words = w.n if w is not None else len(vocabulary(f.language).ids(text))
        ratio = text.count("\n") / n_words
        if ratio > f.new_line_ratio:
            return False, "list_ratio", ratio
        return True, None, None
