"""The document record shared by every stage, and how a stage marks a document's fate.

A record is one row with the columns in RECORD_COLUMNS. `metadata` is a JSON object serialized as a
string so that every stage writes the same Arrow schema whatever keys it adds (language, scores, ...).

While a stage runs, each row also carries REASON: "" when the document is kept, a drop reason
(e.g. "gopher_short_doc", "exact_duplicate") when it is dropped, or QUARANTINE_PREFIX + reason
(e.g. "quarantine:bad_json") when the input itself was unusable. The stage writer splits rows on it.
"""

from __future__ import annotations

import json
from typing import Any

import pyarrow as pa

RECORD_COLUMNS = ("id", "text", "source", "url", "metadata")
REASON = "_reason"
QUARANTINE_PREFIX = "quarantine:"

RECORD_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("text", pa.string()),
        ("source", pa.string()),
        ("url", pa.string()),
        ("metadata", pa.string()),
    ]
)
STAGE_SCHEMA = RECORD_SCHEMA.append(pa.field(REASON, pa.string()))


def quarantine(reason: str) -> str:
    return QUARANTINE_PREFIX + reason


def is_quarantined(reason: str) -> bool:
    return reason.startswith(QUARANTINE_PREFIX)


def load_metadata(value: str | None) -> dict[str, Any]:
    return json.loads(value) if value else {}


def dump_metadata(meta: dict[str, Any]) -> str:
    # sort_keys: the same metadata always serializes to the same bytes (byte-identical outputs)
    return json.dumps(meta, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def make_id(relpath: str, index: int) -> str:
    """Stable id from the source: file path relative to its input root + record index.

    The index is zero-padded so that sorting ids as strings sorts by (file, record index), which
    is the deterministic "first document" order used by exact deduplication.
    """
    return f"{relpath}#{index:010d}"


def empty_columns() -> dict[str, list]:
    return {name: [] for name in (*RECORD_COLUMNS, REASON)}
