"""Decontamination: the word n-grams of an evaluation suite, and the training documents that share one.

GPT-3 (Brown et al. 2020, appendix C), DCLM and dolma drop training documents that share a long n-gram (13 words)
with evaluation data, so that an evaluation measures what a model learned, not what it memorized.

- Words: the text lowercased, every character that is neither a letter, a digit, "_" nor whitespace removed
  (punctuation stripped), then split on whitespace.
- An n-gram's key: the xxh64 of each word's UTF-8, combined in order (`acc = mix64(acc ^ word)` over the n words:
  order matters, the same words give the same key in every process).
- The suite's side (`build_index`): the n-grams of every candidate text of every task item (its context and
  continuation joined by the delimiter, so the query and each answer are covered) and of every held-out document.
  An evaluation text of fewer than n words (and at least MIN_WORDS) is one key of all its words, GPT-3's rule for
  short examples: a training document holding that run of words anywhere matches it (its runs of each such length
  are keyed too). The index is the sorted keys with, for each, the first item that has it (`set#index`).
- A training document is contaminated when any of its keys is in the index; `match` names the first such item and
  the words it shares.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import xxhash

from pipelines.hashing import U64, mix64

_NOT_WORD = re.compile(r"[^\w\s]+")


def words(text: str) -> list[str]:
    return _NOT_WORD.sub("", text.lower()).split()


MIN_WORDS = 8  # an evaluation text shorter than this is not checked (it would match common phrases)


def run_keys(tokens: list[str], length: int, short: bool = False) -> np.ndarray:
    """The keys of every run of `length` consecutive words (none when there are fewer). `short` marks a run that
    stands for a whole evaluation text under n words: its length is mixed in, so it never equals an n-gram's key."""
    m = len(tokens) - length + 1
    if m <= 0 or length <= 0:
        return np.zeros(0, dtype=np.uint64)
    w = np.fromiter((xxhash.xxh64_intdigest(t.encode("utf-8")) for t in tokens), np.uint64, len(tokens))
    acc = np.zeros(m, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for k in range(length):
            acc = mix64(acc ^ w[k:k + m])
        if short:
            acc = mix64(acc ^ U64(length))
    return acc


def eval_keys(text: str, n: int) -> np.ndarray:
    """An evaluation text's keys: its n-grams; under n words (and at least MIN_WORDS), one key of all of it."""
    tokens = words(text)
    if len(tokens) >= n:
        return run_keys(tokens, n)
    if len(tokens) >= MIN_WORDS:
        return run_keys(tokens, len(tokens), short=True)
    return np.zeros(0, dtype=np.uint64)


@dataclass
class NgramIndex:
    n: int
    keys: np.ndarray  # sorted, unique uint64
    item: np.ndarray  # int32: index into `items` of the first item with that key
    items: list[str]  # "set#index"
    sets: list[str]  # the evaluation sets, in suite order
    short: list[int]  # the lengths (MIN_WORDS..n-1) of the evaluation texts kept whole

    def match(self, text: str) -> tuple[str, str] | None:
        """(item, the matching words) of the first n-gram of `text` (then the first run of a short length) found
        in the index, else None."""
        tokens = words(text)
        for length, short in ((self.n, False), *((k, True) for k in self.short)):
            found = self.lookup(run_keys(tokens, length, short))
            if found is not None:
                pos, item = found
                return self.items[item], " ".join(tokens[pos:pos + length])
        return None

    def lookup(self, keys: np.ndarray) -> tuple[int, int] | None:
        if not len(keys) or not len(self.keys):
            return None
        where = np.minimum(np.searchsorted(self.keys, keys), len(self.keys) - 1)
        hit = np.flatnonzero(self.keys[where] == keys)
        if not len(hit):
            return None
        return int(hit[0]), int(self.item[where[hit[0]]])

    def save(self, path) -> None:
        with open(path, "wb") as f:
            np.savez(f, n=np.int64(self.n), keys=self.keys, item=self.item, items=np.array(self.items, dtype=object),
                     sets=np.array(self.sets, dtype=object), short=np.array(self.short, dtype=np.int64))

    @classmethod
    def load(cls, path) -> "NgramIndex":
        with np.load(path, allow_pickle=True) as z:
            return cls(int(z["n"]), z["keys"], z["item"], list(z["items"]), list(z["sets"]),
                       [int(k) for k in z["short"]])


def build_index(texts_by_item: list[tuple[str, str, list[str]]], n: int) -> NgramIndex:
    """`texts_by_item`: (set name, item id, the item's texts). Where items share a key, the first one is named."""
    keys, owners, items, sets, short = [], [], [], [], set()
    for set_name, item_id, texts in texts_by_item:
        if set_name not in sets:
            sets.append(set_name)
        for t in texts:
            size = len(words(t))
            if MIN_WORDS <= size < n:
                short.add(size)
        k = np.unique(np.concatenate([eval_keys(t, n) for t in texts] or [np.zeros(0, np.uint64)]))
        keys.append(k)
        owners.append(np.full(len(k), len(items), dtype=np.int32))
        items.append(f"{set_name}#{item_id}")
    all_keys = np.concatenate(keys) if keys else np.zeros(0, np.uint64)
    all_owners = np.concatenate(owners) if owners else np.zeros(0, np.int32)
    order = np.lexsort((all_owners, all_keys))  # by key, then the first item
    all_keys, all_owners = all_keys[order], all_owners[order]
    first = np.ones(len(all_keys), dtype=bool)
    first[1:] = all_keys[1:] != all_keys[:-1]
    return NgramIndex(n, all_keys[first], all_owners[first], items, sets, sorted(short))
