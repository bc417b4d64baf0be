"""A fast word splitter that stands in for datatrove's spaCy tokenizer inside its filters.

datatrove's filters call `load_word_tokenizer(language)`; for English and most other languages that
is `spacy.blank(language)` + a sentencizer, run over the whole document, and building spaCy's Doc
and Token objects is ~93% of GopherQualityFilter's cost. `FastWordTokenizer` gives the same tokens
without that machinery:

- the text is cut at whitespace with `str.split()` (C speed), like spaCy's first step;
- each whitespace-free chunk is tokenized ONCE and memoized (web text repeats chunks: "the", "it.",
  "(see"), so most chunks cost one dict lookup;
- an unseen chunk is split by a port of spaCy's affix algorithm (Tokenizer._split_affixes,
  _attach_tokens, and the special-case re-merge) driven by spaCy's own compiled rules for that
  language (prefix/suffix/infix regexes, URL match, tokenizer exceptions like "don't" -> do n't).

Sentence spans (span_tokenize/sent_tokenize, used by C4QualityFilter) reproduce spaCy's Sentencizer:
a sentence ends after a "." "!" "?" (or another script's stop) token and the punctuation tokens
that follow it. spaCy's whitespace tokens are reproduced too, since they can start a sentence.

Only languages for which datatrove itself uses a plain spaCy tokenizer are supported
(`fast_tokenizer_for` returns None otherwise: zh/ja/th/... keep datatrove's segmenters).
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache
from typing import Callable

from datatrove.utils.word_tokenizers import SpaCyTokenizer, WordTokenizer, load_word_tokenizer

_CHUNK_OR_SPACE = re.compile(r"\S+|\s+")
# memoized chunks per cache (cleared when full). 200k entries grew a worker by ~150 MB on a 200 MB corpus;
# 32k costs 2% of filter throughput (107 -> 105 docs/CPU-s on 2,400 benchmark documents) for +6 MB.
_MAX_CACHE = 32_768


def _rules_from_spacy(language: str) -> dict:
    tok = load_word_tokenizer(language)
    if not isinstance(tok, SpaCyTokenizer) or tok.config is not None:
        raise ValueError(f"no plain spaCy tokenizer for {language!r}; use fast_tokenizer_for()")
    nlp = tok.tokenizer
    spacy_tok = nlp.tokenizer

    def pattern(method) -> list | None:  # a bound method of a compiled re.Pattern, or None
        p = getattr(method, "__self__", None)
        return [p.pattern, p.flags] if p is not None else None

    return {
        "patterns": {"prefix": pattern(spacy_tok.prefix_search), "suffix": pattern(spacy_tok.suffix_search),
                     "infix": pattern(spacy_tok.infix_finditer), "token_match": pattern(spacy_tok.token_match),
                     "url": pattern(spacy_tok.url_match)},
        "specials": {orth: [piece[65] for piece in pieces]  # 65 == spacy.symbols.ORTH
                     for orth, pieces in spacy_tok.rules.items()},
        "punct_chars": sorted(nlp.get_pipe("sentencizer").punct_chars),
    }


@lru_cache(maxsize=8)
def _spacy_rules(language: str) -> dict:
    """spaCy's tokenizer rules for `language` as plain data, cached on disk per spaCy version: importing
    spaCy to read them costs ~3.5 s in every fresh worker process, reading the cache ~20 ms."""
    import json
    import os
    from importlib.metadata import version
    from pathlib import Path

    cache_dir = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "tokenmill"
    path = cache_dir / f"spacy-{version('spacy')}-rules-{language}.json"
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        pass
    rules = _rules_from_spacy(language)
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(rules, ensure_ascii=False), encoding="utf-8")
        tmp.replace(path)
    except OSError:  # a read-only home: no cache, same rules
        pass
    return rules


def _suffix_searcher(pattern: re.Pattern) -> Callable[[str], re.Match | None]:
    """`pattern.search` for spaCy's suffix regex, exact, without trying a match at every position.

    The regex is an alternation of branches that each end at the end of the string ("," "$" ...): a search
    tries all ~80 of them at every start, 1.2 us for "word," and 3.9 us for "encyclopedia.", the most
    frequent call in splitting a new chunk. A branch of at most W characters can only start in the last W
    (W = 5 for English), so the search may start there (`search(s, pos)`; lookbehinds still see the whole
    string) unless a branch of unbounded width (English: `\\.\\.+$`) matches further left, which a search
    for those branches alone says. Where the regex is not such an alternation, the plain search.
    """
    try:
        from re import _compiler, _parser  # the regex's own parse: the widths of its branches

        parsed = _parser.parse(pattern.pattern, pattern.flags)
        (op, (_, branches)), = parsed.data
        if op is not _parser.BRANCH:
            return pattern.search
        widths = [b.getwidth()[1] for b in branches]
        unbounded = [b for b, w in zip(branches, widths) if w >= _parser.MAXREPEAT]
        width = max((w for w in widths if w < _parser.MAXREPEAT), default=0)
        far = (_compiler.compile(_parser.SubPattern(parsed.state, [(_parser.BRANCH, (None, unbounded))]),
                                 pattern.flags).search if unbounded else None)
    except Exception:  # noqa: BLE001  (another Python's private parser: the plain search is as exact)
        return pattern.search
    search = pattern.search

    def suffix_search(string: str) -> re.Match | None:
        start = len(string) - width
        if start <= 0:
            return search(string)
        if far is not None:
            m = far(string)
            if m is not None and m.start() < start:
                return search(string)
        return search(string, start)

    return suffix_search


def _is_punct(token: str) -> bool:
    # spaCy's Token.is_punct: every character is Unicode punctuation (category P*)
    return all(unicodedata.category(c)[0] == "P" for c in token)


class FastWordTokenizer(WordTokenizer):
    """Drop-in `WordTokenizer` for datatrove filters: spaCy's tokens for `language`, faster."""

    def __init__(self, language: str = "en"):
        super().__init__(language)
        self._rules_loaded = False
        self._cache: dict[str, list[str]] = {}  # chunk -> final tokens
        self._raw_cache: dict[str, list[str]] = {}  # chunk or remainder -> tokens before re-merge

    # ---- rules, taken from the spaCy pipeline datatrove would use (loaded on first use) ----
    def _load_rules(self) -> None:
        rules = _spacy_rules(self.language)
        never: Callable[[str], None] = lambda s: None  # noqa: E731
        compiled = {k: re.compile(*v) if v else None for k, v in rules["patterns"].items()}
        self._prefix_search = compiled["prefix"].search if compiled["prefix"] else never
        self._suffix_search = _suffix_searcher(compiled["suffix"]) if compiled["suffix"] else never
        self._infix_finditer = compiled["infix"].finditer if compiled["infix"] else (lambda s: iter(()))
        self._token_match = compiled["token_match"].match if compiled["token_match"] else never
        self._url_match = compiled["url"].match if compiled["url"] else never
        self._specials: dict[str, list[str]] = rules["specials"]
        self._punct_chars: frozenset[str] = frozenset(rules["punct_chars"])
        self._has_punct_char = re.compile("|".join(map(re.escape, sorted(self._punct_chars)))).search
        # special cases that spaCy re-merges after affix splitting (its PhraseMatcher pass):
        # key = the tokens the orth string splits into without special cases
        self._merge: dict[tuple[str, ...], list[str]] = {}
        for orth, pieces in self._specials.items():
            if " " in orth or not (
                self._prefix_search(orth) or self._suffix_search(orth) or next(self._infix_finditer(orth), None)
            ):
                continue
            key = tuple(self._split_no_specials(orth))
            if len(key) > 1:
                self._merge[key] = pieces
        self._merge_max = max((len(k) for k in self._merge), default=0)
        self._merge_pairs = frozenset(k[:2] for k in self._merge)  # a match starts with such a pair
        self._rules_loaded = True

    # ---- spaCy's per-chunk algorithm ----
    def _split_affixes(self, string: str, specials: dict[str, list[str]], recurse: Callable) -> list[str]:
        """One round of spaCy's Tokenizer._split_affixes loop, then `recurse` on what is left.

        The loop carries nothing but the remaining string, so its later rounds are exactly a fresh
        split of that string: memoizing it lets "word," reuse "word" ("(see", "it." ...).
        """
        if not string:
            return []
        if self._token_match(string) or string in specials:
            return self._attach(string, specials)
        m = self._prefix_search(string)
        pre_len = m.end() if m else 0
        if pre_len:
            prefix, minus_pre = string[:pre_len], string[pre_len:]
            if minus_pre and minus_pre in specials:
                return [prefix, *self._attach(minus_pre, specials)]
        rest = string[pre_len:]
        m = self._suffix_search(rest)
        suf_len = len(rest) - m.start() if m else 0
        if suf_len:
            suffix, minus_suf = string[-suf_len:], string[:-suf_len]
            if minus_suf and minus_suf in specials:
                return [*self._attach(minus_suf, specials), suffix]
        if pre_len and suf_len and pre_len + suf_len <= len(string):
            return [prefix, *recurse(string[pre_len:-suf_len]), suffix]
        if pre_len:
            return [prefix, *recurse(minus_pre)]
        if suf_len:
            return [*recurse(minus_suf), suffix]
        return self._attach(string, specials)

    def _attach(self, string: str, specials: dict[str, list[str]]) -> list[str]:
        # Tokenizer._attach_tokens: special case, else URL/token match, else split at infixes
        if string in specials:
            return specials[string]
        if self._token_match(string) or self._url_match(string):
            return [string]
        tokens: list[str] = []
        start = 0
        for m in self._infix_finditer(string):
            if m.start() == 0:  # an infix at the very start is not split off
                continue
            if m.start() != start:
                tokens.append(string[start : m.start()])
            if m.start() != m.end():
                tokens.append(string[m.start() : m.end()])
            start = m.end()
        if string[start:]:
            tokens.append(string[start:])
        return tokens

    def _split_no_specials(self, string: str) -> list[str]:
        return self._split_affixes(string, {}, self._split_no_specials)

    def _raw_tokens(self, string: str) -> list[str]:
        """Memoized affix split of a chunk or chunk remainder (before the special-case re-merge)."""
        tokens = self._raw_cache.get(string)
        if tokens is None:
            # shortcut: no spaCy affix/infix rule matches pure letters or pure digits (checked for
            # every spaCy language datatrove assigns, on the 134k such chunks of udhr2)
            if (string.isalpha() or string.isdecimal()) and string not in self._specials:
                tokens = [string]
            else:
                tokens = self._split_affixes(string, self._specials, self._raw_tokens)
            if len(self._raw_cache) >= _MAX_CACHE:
                self._raw_cache.clear()
            self._raw_cache[string] = tokens
        return tokens

    def _merge_specials(self, tokens: list[str]) -> list[str]:
        # spaCy re-merges split-up special cases (e.g. "''", ":)"); Tokenizer._filter_special_spans:
        # longest first, then leftmost; a span is dropped if its first or last token was covered
        # by ANY span visited before it, kept or not
        if self._merge_pairs.isdisjoint(zip(tokens, tokens[1:])):  # C-speed pre-check, nearly always true
            return tokens
        n = len(tokens)
        starts = [i for i, pair in enumerate(zip(tokens, tokens[1:])) if pair in self._merge_pairs]
        matches = [
            (start, length)
            for length in range(min(self._merge_max, n), 1, -1)
            for start in starts
            if start + length <= n and tuple(tokens[start : start + length]) in self._merge
        ]
        if not matches:
            return tokens
        seen: set[int] = set()
        kept: dict[int, int] = {}
        for start, length in matches:
            if start not in seen and start + length - 1 not in seen:
                kept[start] = length
            seen.update(range(start, start + length))
        out: list[str] = []
        i = 0
        while i < n:
            if i in kept:
                out.extend(self._merge[tuple(tokens[i : i + kept[i]])])
                i += kept[i]
            else:
                out.append(tokens[i])
                i += 1
        return out

    def _chunk_tokens(self, chunk: str) -> list[str]:
        tokens = self._cache.get(chunk)
        if tokens is None:
            tokens = self._raw_tokens(chunk)
            if len(tokens) > 1 and self._merge_max:
                tokens = self._merge_specials(tokens)
            if len(self._cache) >= _MAX_CACHE:
                self._cache.clear()
            self._cache[chunk] = tokens
        return tokens

    def clear_cache(self) -> None:
        """Forget the memoized chunks (e.g. to measure cold throughput)."""
        self._cache.clear()
        self._raw_cache.clear()

    # ---- WordTokenizer interface ----
    def word_tokenize(self, text: str) -> list[str]:
        if not self._rules_loaded:
            self._load_rules()
        cache = self._cache
        out: list[str] = []
        for chunk in text.split():
            tokens = cache.get(chunk)
            out += tokens if tokens is not None else self._chunk_tokens(chunk)
        return out

    def _tokens_with_offsets(self, text: str) -> list[tuple[str, int, int]]:
        """spaCy's tokens incl. its whitespace tokens: any whitespace run except one ' ' after a token."""
        tokens: list[tuple[str, int, int]] = []
        for m in _CHUNK_OR_SPACE.finditer(text):
            s, pos = m.group(), m.start()
            if s[0].isspace():
                if pos > 0 and s[0] == " ":
                    s, pos = s[1:], pos + 1
                if s:
                    tokens.append((s, pos, pos + len(s)))
                continue
            for tok in self._chunk_tokens(s):
                tokens.append((tok, pos, pos + len(tok)))
                pos += len(tok)
        return tokens

    def span_tokenize(self, text: str) -> list[tuple[int, int]]:
        """Sentence (start, end) character spans, as spaCy's Sentencizer finds them."""
        if not self._rules_loaded:
            self._load_rules()
        if not text:
            return []
        if not self._has_punct_char(text):
            # no sentence-ending character: one sentence from 0 (a leading whitespace run is a
            # token too) to the end, minus a single trailing space (spaCy's token.whitespace_)
            end = len(text)
            if end > 1 and text[-1] == " " and not text[-2].isspace():
                end -= 1
            return [(0, end)]
        tokens = self._tokens_with_offsets(text)
        punct_chars = self._punct_chars
        spans: list[tuple[int, int]] = []
        start = 0
        seen_period = False
        for i, (tok, _, _) in enumerate(tokens):  # Sentencizer.predict
            in_punct_chars = tok in punct_chars
            if seen_period and not in_punct_chars and not _is_punct(tok):
                spans.append((tokens[start][1], tokens[i - 1][2]))
                start = i
                seen_period = False
            elif in_punct_chars:
                seen_period = True
        spans.append((tokens[start][1], tokens[-1][2]))
        return spans

    def sent_tokenize(self, text: str) -> list[str]:
        return [s for s in (text[a:b].strip() for a, b in self.span_tokenize(text)) if s]

    def __getstate__(self) -> dict:
        # ship only the language (e.g. to Ray workers): rules and caches are rebuilt on first use
        return {"language": self.language}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["language"])

    def __repr__(self) -> str:
        return f"FastWordTokenizer({self.language!r})"


@lru_cache(maxsize=None)
def fast_tokenizer_for(language: str) -> FastWordTokenizer | None:
    """The shared fast tokenizer for `language`, or None where datatrove uses no plain spaCy tokenizer.

    One instance per language: datatrove memoizes tokenizers and split results by this object.
    """
    try:
        tok = load_word_tokenizer(language)
    except (ValueError, ImportError):  # no tokenizer assigned / its package is not installed
        return None
    if isinstance(tok, SpaCyTokenizer) and tok.config is None:
        return FastWordTokenizer(language)
    return None
