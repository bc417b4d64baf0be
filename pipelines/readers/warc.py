"""WARC and WET files (warcio): HTML `response` records and WET `conversion` records are documents.

- response, HTML (HTTP Content-Type or WARC-Identified-Payload-Type text/html or xhtml): a row with
  the decoded HTML as text and metadata content_type, so the extract stage turns it into main text;
- response, anything else: a row dropped as "non_html" (counted, its body not kept);
- conversion (WET): a plain-text row (invalid UTF-8 is quarantined);
- warcinfo, request, metadata, resource, revisit records are not documents and give no row.
The record's position in the file (over all records) is its index, so ids do not depend on filtering.

Damage: WARC writers gzip (or zstd) each record as its own member, so a corrupt record costs that
record only. Reading resumes at the next member that decompresses to "WARC/"; the damaged span
becomes one "corrupt_stream" row whose `records_lost` counts the member headers in it, and the
records after it keep the indexes (ids) they have in an intact file. Where the damaged member held
several records (one gzip stream for the whole file), `records_lost` is null: not countable.
"""

from __future__ import annotations

from typing import Any, Iterator

from warcio.archiveiterator import ArchiveIterator
from warcio.exceptions import ArchiveLoadFailed

from pipelines.readers.compression import CorruptStream, damage, open_decompressed
from pipelines.readers.encoding import charset_from_content_type, decode_html
from pipelines.readers.rows import MAX_DOC_BYTES, Row, capped, corrupt_row, too_large
from pipelines.records import quarantine
from pipelines.reasons import INVALID_UTF8

HTML_TYPES = ("text/html", "application/xhtml+xml")


def iter_warc(path: str, max_doc_bytes: int = MAX_DOC_BYTES) -> Iterator[Row]:
    # Decompressed here rather than by warcio, which ends silently on a truncated gzip member.
    index, start = 0, 0  # index: the record being read, the first one lost if it fails
    while start is not None:
        first = index
        try:
            with open_decompressed(path, start, expect=b"WARC/") as f:
                records = ArchiveIterator(f)
                try:
                    for record in records:
                        row = record_row(index, record, max_doc_bytes)
                        if _cut(record) and damage(f) is not None:
                            break  # the record was cut by the damage: it is part of the lost span
                        if row is not None:
                            yield row
                        index += 1
                except ArchiveLoadFailed as e:
                    if damage(f) is None:  # warcio found a bad record in bytes that decompressed
                        members = getattr(f, "raw", None)
                        if not hasattr(members, "corrupt_at"):
                            yield corrupt_row(index, e, records_lost=None)  # plain: no resync
                            return
                        raise members.corrupt_at(records.offset, f"{type(e).__name__}: {e}") from e
            start = None
        except CorruptStream as e:
            # countable when every member read before the damaged one held one record (the usual layout)
            lost = e.members if e.member == index - first else None
            yield corrupt_row(index, e, records_lost=lost)
            index, start = index + (lost or 1), e.resume


def _cut(record) -> bool:
    """Whether the record's block ended before its Content-Length (read to its end to know)."""
    raw = record.raw_stream
    while raw.read(1 << 16):
        pass
    return getattr(raw, "limit", 0) > 0


def record_row(index: int, record, max_doc_bytes: int = MAX_DOC_BYTES) -> Row | None:
    if record.rec_type not in ("response", "conversion"):
        return None
    headers = record.rec_headers
    length = int(headers.get_header("Content-Length") or 0)
    if length > max_doc_bytes:  # not read: _cut streams its block through in 64 KB pieces
        row = too_large(index, length, max_doc_bytes)
        row.url = headers.get_header("WARC-Target-URI") or ""
        return row
    meta: dict[str, Any] = {
        "warc_type": record.rec_type,
        "warc_record_id": headers.get_header("WARC-Record-ID"),
        "warc_date": headers.get_header("WARC-Date"),
    }
    url = headers.get_header("WARC-Target-URI") or ""
    if record.rec_type == "conversion":
        return _conversion_row(index, record, url, meta)
    return _response_row(index, record, url, meta)


def _response_row(index: int, record, url: str, meta: dict[str, Any]) -> Row:
    http = record.http_headers
    mime, charset = charset_from_content_type(http.get_header("Content-Type") if http else None)
    identified = (record.rec_headers.get_header("WARC-Identified-Payload-Type") or "").lower()
    status = http.get_statuscode() if http else None
    if status and status.isdigit():
        meta["http_status"] = int(status)
    html_type = mime if mime in HTML_TYPES else identified if identified in HTML_TYPES else None
    if html_type is None:
        meta["content_type"] = mime or identified
        return Row(index, url=url, meta=meta, reason="non_html")
    text, used = decode_html(record.content_stream().read(), charset)
    meta.update(content_type=html_type, charset=used)
    return Row(index, text=text, url=url, meta=meta)


def _conversion_row(index: int, record, url: str, meta: dict[str, Any]) -> Row:
    headers = record.rec_headers
    meta["content_type"] = "text/plain"
    for header, key in (("WARC-Refers-To", "warc_refers_to"), ("WARC-Identified-Content-Language", "warc_languages")):
        if value := headers.get_header(header):
            meta[key] = value
    body = record.content_stream().read()
    try:
        return Row(index, text=body.decode("utf-8"), url=url, meta=meta)
    except UnicodeDecodeError:
        return Row(index, text=capped(body.decode("utf-8", "replace")), url=url, meta=meta,
                   reason=quarantine(INVALID_UTF8))
