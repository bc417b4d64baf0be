"""Exact deduplication: a hash of the normalized text; in each group of equal hashes the document with
the smallest id (the first in (file, record) order) survives."""

from __future__ import annotations

import re
import unicodedata

import numpy as np
import xxhash

_WS = re.compile(r"\s+")


def normalize(text: str, mode: str) -> str:
    """'none': the text as is; 'whitespace': runs of whitespace collapsed and ends stripped;
    'lower': that, NFKC-normalized and lowercased."""
    if mode == "none":
        return text
    text = _WS.sub(" ", text).strip()
    if mode == "lower":
        text = unicodedata.normalize("NFKC", text).lower()
    return text


def text_hashes(texts: list[str], mode: str) -> np.ndarray:
    """128-bit xxh3 of each normalized text as 32 hex chars (collisions negligible even at 1e12 docs)."""
    return np.array([xxhash.xxh3_128_hexdigest(normalize(t, mode).encode("utf-8")) for t in texts])
