"""Exact deduplication: a hash of the normalized text; in each group of equal hashes the document with
the smallest id (the first in (file, record) order) survives."""

from __future__ import annotations

import re
import unicodedata

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import xxhash

from pipelines.records import REASON, dump_metadata, load_metadata

REASON_EXACT = "exact_duplicate"
_WS = re.compile(r"\s+")


def normalize(text: str, mode: str) -> str:
    """'none': the text as is; 'whitespace': runs of whitespace collapsed and ends stripped;
    'lower': that, lowercased and NFKC-normalized."""
    if mode == "none":
        return text
    text = _WS.sub(" ", text).strip()
    if mode == "lower":
        text = unicodedata.normalize("NFKC", text).lower()
    return text


def text_hashes(texts: list[str], mode: str) -> np.ndarray:
    """128-bit xxh3 of each normalized text, as 32 hex chars (collisions are negligible at 1e12 docs)."""
    return np.array([xxhash.xxh3_128_hexdigest(normalize(t, mode).encode("utf-8")) for t in texts])


def mark_group(group: pa.Table) -> pa.Table:
    """All rows share one hash: keep the smallest id, mark the others with the survivor's id."""
    group = group.sort_by("id")
    ids = group.column("id").to_pylist()
    if len(ids) == 1:
        return group
    survivor = ids[0]
    reasons = [""] + [REASON_EXACT] * (len(ids) - 1)
    metas = group.column("metadata").to_pylist()
    for i in range(1, len(metas)):
        meta = load_metadata(metas[i])
        meta["duplicate_of"] = survivor
        metas[i] = dump_metadata(meta)
    idx = group.schema.get_field_index(REASON)
    group = group.set_column(idx, REASON, pa.array(reasons, pa.string()))
    idx = group.schema.get_field_index("metadata")
    return group.set_column(idx, "metadata", pa.array(metas, pa.string()))


def group_sizes(hashes: pa.ChunkedArray) -> dict[int, int]:
    counts = pc.value_counts(hashes).field("counts").to_numpy()
    sizes, n = np.unique(counts, return_counts=True)
    return {int(s): int(c) for s, c in zip(sizes, n)}
