"""One Row per input record, and how rows become the column batches that read_file yields."""

from __future__ import annotations

import datetime as dt
import decimal
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator

from pipelines.readers.compression import CorruptStream, error_text
from pipelines.records import REASON, dump_metadata, empty_columns, load_metadata, make_id, quarantine
from pipelines.reasons import CORRUPT_STREAM, INVALID_UTF8, MISSING_TEXT, TEXT_NOT_STRING, TOO_LARGE

# Characters of an unusable record's raw content kept in its quarantine row, for inspection.
QUARANTINE_TEXT_CAP = 10_000


@dataclass(slots=True)
class Row:
    index: int  # position of the record in its file (line, row, WARC record): the positional id
    text: str = ""
    url: str = ""
    meta: dict[str, Any] = field(default_factory=dict)
    reason: str = ""
    own_id: str | None = None  # the source's own id (id_field), when it has one


# The largest record a reader reads whole (a JSON line, a text or HTML file). A larger one is quarantined with its
# size, without being held in memory: a 203 MB single-record jsonl took a worker to 12.1 GB RSS (60x its size,
# parsing, filters' word lists) and 7 silent minutes before gopher_long_doc dropped it. At 32 MB a record costs a
# worker at most ~2 GB, under its share of a 2-core, 24 GB machine. `ingest.max_doc_mb` changes it.
MAX_DOC_BYTES = 32 * 1024 * 1024


def too_large(index: int, size: int, limit: int) -> Row:
    """The quarantine row of a record over the size limit (its size in the metadata, no text)."""
    return Row(index, reason=quarantine(TOO_LARGE), meta={"bytes": size, "max_doc_bytes": limit})


def capped(text: str) -> str:
    return text[:QUARANTINE_TEXT_CAP]


CORRUPT = quarantine(CORRUPT_STREAM)


def corrupt_row(index: int, exc: Exception, records_lost: int | None) -> Row:
    """One row standing for a span of a file that could not be read (readers.compression).

    Its metadata names the error, the compressed byte range and `records_lost` (None where the
    format cannot count them); the run's summary adds these up as "records lost to corruption",
    apart from the quarantined records, so a long loss is never hidden in a count of one.
    """
    span = exc.span() if isinstance(exc, CorruptStream) else {}
    return Row(index, reason=CORRUPT, meta={"error": error_text(exc), **span, "records_lost": records_lost})


def corruption_counts(metadata: list[str]) -> dict[str, int]:
    """Totals over corrupt_row metadata: spans, records_lost (counted ones), spans_uncounted, bytes."""
    out = {"spans": 0, "records_lost": 0, "spans_uncounted": 0, "bytes": 0}
    for m in map(load_metadata, metadata):
        out["spans"] += 1
        if m.get("records_lost") is None:
            out["spans_uncounted"] += 1
        else:
            out["records_lost"] += m["records_lost"]
        if m.get("byte_end") is not None:
            out["bytes"] += m["byte_end"] - (m.get("byte_start") or 0)
    return out


def utf8_safe(s: str) -> str:
    """Arrow strings must be valid UTF-8; JSON escapes can smuggle in lone surrogates (\\ud800)."""
    try:
        s.encode("utf-8")
        return s
    except UnicodeEncodeError:
        return s.encode("utf-8", "replace").decode("utf-8")


def is_utf8_encodable(s: str) -> bool:
    try:
        s.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


def to_json_value(value: Any) -> Any:
    """Parquet/Arrow values (datetimes, decimals, bytes, nested) as plain JSON values."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, dict):
        return {str(k): to_json_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_json_value(v) for v in value]
    if isinstance(value, (bytes, bytearray)):
        try:
            return bytes(value).decode("utf-8")
        except UnicodeDecodeError:
            return f"<{len(value)} bytes>"
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, (decimal.Decimal, dt.timedelta)):
        return str(value)
    return str(value)


def field_value(rec: dict[str, Any], name: str | None) -> Any:
    """`rec[name]`, where a dotted name reaches into nested objects (`metadata.url`: dolma keeps the URL there)."""
    if not name:
        return None
    value: Any = rec
    for part in name.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


def record_to_row(
    index: int, rec: dict[str, Any], text_field: str, id_field: str | None, url_field: str | None
) -> Row:
    """A parsed record (JSON object, parquet row) as a Row; every field but the text goes to metadata. The id
    and URL fields may be dotted (`metadata.url`)."""
    text = rec.pop(text_field, None)
    url = field_value(rec, url_field)
    own = field_value(rec, id_field)
    row = Row(index, url=url if isinstance(url, str) else "", meta=rec)
    if own is not None and own != "":
        row.own_id = own if isinstance(own, str) else dump_metadata(own)
    if text is None:
        row.reason = quarantine(MISSING_TEXT)
    elif not isinstance(text, str):
        row.reason = quarantine(TEXT_NOT_STRING)
        row.text = capped(utf8_safe(dump_metadata(text)))
    elif not is_utf8_encodable(text):
        row.reason = quarantine(INVALID_UTF8)
        row.text = capped(utf8_safe(text))
    else:
        row.text = text
    return row


def batch_rows(rows: Iterable[Row], relpath: str, source: str, batch_size: int) -> Iterator[dict[str, list]]:
    """Columns (id, text, source, url, metadata, _reason) in batches of at most batch_size rows.

    id: make_id(relpath, index), or f"{source}#{own_id}" when the record carries its own id
    (namespaced by the input's name so two inputs cannot collide); metadata always keeps the
    positional index as "record" (and the file as "file" when the id does not name it).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    cols = empty_columns()
    for row in rows:
        meta = dict(row.meta)
        meta["record"] = row.index
        if row.own_id is not None:
            cols["id"].append(utf8_safe(f"{source}#{row.own_id}"))
            meta["file"] = relpath
        else:
            cols["id"].append(make_id(relpath, row.index))
        cols["text"].append(row.text)
        cols["source"].append(source)
        cols["url"].append(utf8_safe(row.url))
        cols["metadata"].append(utf8_safe(dump_metadata(meta)))
        cols[REASON].append(row.reason)
        if len(cols["id"]) >= batch_size:
            yield cols
            cols = empty_columns()
    if cols["id"]:
        yield cols
