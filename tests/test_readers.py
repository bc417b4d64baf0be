"""Readers on the real corpora (../shared/corpora) and on malformed files made here."""

from __future__ import annotations

import gzip
import json
import zlib
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard
from warcio.archiveiterator import ArchiveIterator

from pipelines.readers import FORMATS, list_inputs, read_file, read_hf
from pipelines.readers.compression import detect_compression
from pipelines.records import REASON, RECORD_COLUMNS, STAGE_SCHEMA, load_metadata, make_id

DOLMA_GZ = "CC-MAIN-20190717121559-20190717143559-00140.jsonl.gz"
DOLMA_ZST = "CC-MAIN-20190717121559-20190717143559-00140.jsonl.zst"


def read_all(path, relpath: str, fmt: str, source: str = "src", **kw) -> dict[str, list]:
    """All batches of one file, concatenated; checks every batch's shape and that Arrow takes it."""
    out: dict[str, list] = {k: [] for k in (*RECORD_COLUMNS, REASON)}
    for cols in read_file(str(path), relpath, fmt, source, **kw):
        assert set(cols) == set(out)
        assert len({len(v) for v in cols.values()}) == 1
        pa.Table.from_pydict(cols, schema=STAGE_SCHEMA)  # valid UTF-8 strings, right columns
        for k, v in cols.items():
            out[k] += v
    return out


@pytest.fixture(scope="module")
def dolma(corpora: Path) -> Path:
    return corpora / "dolma_fixtures"


@pytest.fixture(scope="module")
def dolma_records(dolma: Path) -> list[dict]:
    with gzip.open(dolma / DOLMA_GZ, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def test_dolma_jsonl_gz(dolma, dolma_records):
    rel = f"dolma/{DOLMA_GZ}"
    batches = list(read_file(str(dolma / DOLMA_GZ), rel, "jsonl", "dolma", batch_size=100))
    assert [len(b["id"]) for b in batches] == [100] * 6 + [97]
    rows = read_all(dolma / DOLMA_GZ, rel, "jsonl", "dolma")
    assert len(rows["id"]) == 697 and len(set(rows["id"])) == 697
    assert rows["id"] == [make_id(rel, i) for i in range(697)]
    assert set(rows[REASON]) == {""}
    assert set(rows["source"]) == {"dolma"}
    assert rows["text"] == [r["text"] for r in dolma_records]
    meta = load_metadata(rows["metadata"][0])
    assert meta["record"] == 0 and meta["id"] == dolma_records[0]["id"] and "text" not in meta
    assert meta["metadata"] == dolma_records[0]["metadata"]  # other fields kept as they were


def test_id_field_uses_the_source_id(dolma, dolma_records):
    rows = read_all(dolma / DOLMA_GZ, "dolma/x.jsonl.gz", "jsonl", "dolma", id_field="id")
    assert rows["id"] == [f"dolma#{r['id']}" for r in dolma_records]
    meta = load_metadata(rows["metadata"][5])
    assert meta["record"] == 5 and meta["file"] == "dolma/x.jsonl.gz"


def test_a_dotted_url_field_reaches_into_the_records_metadata(dolma, dolma_records):
    rows = read_all(dolma / DOLMA_GZ, "dolma/x.jsonl.gz", "jsonl", "dolma", url_field="metadata.warc_url")
    assert rows["url"] == [r["metadata"]["warc_url"] for r in dolma_records] and rows["url"][0].startswith("http://")
    assert set(read_all(dolma / DOLMA_GZ, "dolma/x.jsonl.gz", "jsonl", "dolma", url_field="metadata.nope")["url"]) == {""}


def test_misnamed_zst_is_read_as_plain_jsonl(dolma, dolma_records):
    path = dolma / DOLMA_ZST
    assert detect_compression(str(path)) is None  # named .zst, but plain text
    rows = read_all(path, f"dolma/{DOLMA_ZST}", "jsonl")
    assert set(rows[REASON]) == {""}
    assert rows["text"] == [r["text"] for r in dolma_records]


def test_real_zstd_multi_frame_reads_the_same(tmp_path, dolma, dolma_records):
    raw = gzip.decompress((dolma / DOLMA_GZ).read_bytes())
    half = raw.index(b"\n", len(raw) // 2) + 1
    cctx = zstandard.ZstdCompressor(level=3)
    path = tmp_path / "data.bin"  # no telling extension: detection is by magic bytes
    path.write_bytes(cctx.compress(raw[:half]) + cctx.compress(raw[half:]))  # two frames
    assert detect_compression(str(path)) == "zstd"
    rows = read_all(path, "z/data.bin", "jsonl")
    assert set(rows[REASON]) == {""}
    assert rows["text"] == [r["text"] for r in dolma_records]


@pytest.mark.parametrize("kind", ["gzip", "zstd"])
def test_truncated_stream_keeps_every_line_before_the_cut(tmp_path, kind):
    lines = b"".join(json.dumps({"text": f"document number {i} " * 20}).encode() + b"\n" for i in range(5000))
    data = gzip.compress(lines) if kind == "gzip" else zstandard.ZstdCompressor().compress(lines)
    cut = data[: len(data) // 2]
    path = tmp_path / "cut.jsonl"
    path.write_bytes(cut)
    decoder = zlib.decompressobj(31) if kind == "gzip" else zstandard.ZstdDecompressor().decompressobj()
    whole_lines = decoder.decompress(cut).count(b"\n")  # every line the surviving bytes hold entirely
    rows = read_all(path, "t/cut.jsonl", "jsonl")
    assert rows[REASON] == [""] * whole_lines + ["quarantine:corrupt_stream"]  # the cut line is in the span
    span = load_metadata(rows["metadata"][-1])
    assert span["record"] == whole_lines and span["records_lost"] is None  # not countable in one stream
    assert (span["byte_start"], span["byte_end"]) == (0, len(cut))  # one member: all of it is damaged
    assert f"truncated {kind} stream" in span["error"]


def test_malformed_lines_are_quarantined_one_row_each(tmp_path):
    lines = [
        b'{"text": "good one", "url": "http://a.example/", "lang": "en"}',
        b'{"text": "bad json"',
        b'{"text": "caf\xe9 in latin-1"}',  # invalid UTF-8
        b'{"body": "no text field"}',
        b'{"text": 42}',
        b'{"text": null}',
        b"[1, 2, 3]",
        b"",  # blank line: not a record
        b'{"text": "lone surrogate \\ud800 escape"}',  # parses, but is not encodable as UTF-8
        b'{"text": "good two", "url": 7}',
        b"   ",
        b'{"text": "good three, no final newline"}',
    ]
    path = tmp_path / "mixed.jsonl"
    path.write_bytes(b"\n".join(lines))
    rows = read_all(path, "m/mixed.jsonl", "jsonl")
    by_line = {load_metadata(m)["record"]: r for m, r in zip(rows["metadata"], rows[REASON])}
    assert by_line == {
        0: "",
        1: "quarantine:bad_json",
        2: "quarantine:invalid_utf8",
        3: "quarantine:missing_text",
        4: "quarantine:text_not_string",
        5: "quarantine:missing_text",
        6: "quarantine:not_object",
        8: "quarantine:invalid_utf8",
        9: "",
        11: "",
    }
    assert rows["id"][0] == make_id("m/mixed.jsonl", 0) and rows["id"][-1] == make_id("m/mixed.jsonl", 11)
    assert rows["text"][0] == "good one" and rows["url"][0] == "http://a.example/"
    assert rows["url"][7] == ""  # a non-string url is not a url
    assert rows["text"][1] == '{"text": "bad json"'  # raw line kept for inspection
    assert rows["text"][2] == '{"text": "caf\ufffd in latin-1"}'
    assert load_metadata(rows["metadata"][3])["body"] == "no text field"


def test_parquet_round_trip(tmp_path, dolma_records):
    recs = dolma_records[:250]
    table = pa.table({
        "text": [r["text"] for r in recs],
        "id": [r["id"] for r in recs],
        "url": [f"http://example.com/{i}" for i in range(len(recs))],
        "n": list(range(len(recs))),
        "when": pa.array([1_700_000_000_000] * len(recs), pa.timestamp("ms")),
    })
    path = tmp_path / "part.parquet"
    pq.write_table(table, path, row_group_size=100)
    assert pq.ParquetFile(path).num_row_groups == 3
    rows = read_all(path, "p/part.parquet", "parquet", batch_size=64)
    assert rows["text"] == [r["text"] for r in recs]
    assert rows["id"] == [make_id("p/part.parquet", i) for i in range(250)]
    assert rows["url"][3] == "http://example.com/3" and set(rows[REASON]) == {""}
    meta = load_metadata(rows["metadata"][3])
    assert meta["n"] == 3 and meta["id"] == recs[3]["id"] and meta["when"].startswith("2023-11-14")
    by_id = read_all(path, "p/part.parquet", "parquet", id_field="id")
    assert by_id["id"] == [f"src#{r['id']}" for r in recs]


def test_parquet_bad_values_and_unreadable_file(tmp_path):
    table = pa.table({"content": pa.array([b"fine", b"\xff\xfe bad", None], pa.binary())})
    path = tmp_path / "bin.parquet"
    pq.write_table(table, path)
    rows = read_all(path, "p/bin.parquet", "parquet", text_field="content")
    assert rows[REASON] == ["", "quarantine:invalid_utf8", "quarantine:missing_text"]
    assert rows["text"][0] == "fine"
    junk = tmp_path / "junk.parquet"
    junk.write_bytes(b"not a parquet file at all" * 10)
    rows = read_all(junk, "p/junk.parquet", "parquet")
    assert rows[REASON] == ["quarantine:unreadable_file"]


def test_hf_dataset_rows_are_read_like_parquet_rows(tmp_path, dolma_records):
    """A saved `datasets` split, read in index ranges: the file readers' ids, dotted fields and quarantine
    reasons (one Row maker for parquet and HF), every row of the range once whatever the batch size."""
    import datasets

    recs = dolma_records[:120]
    rows = [{"text": r["text"], "id": r["id"], "meta": {"url": f"http://example.com/{i}"}} for i, r in enumerate(recs)]
    rows[7]["text"] = None
    ds = datasets.DatasetDict({"train": datasets.Dataset.from_list(rows)})
    ds.save_to_disk(str(tmp_path / "hf"))

    def read(start, stop, batch_size, **kw):
        out = {k: [] for k in (*RECORD_COLUMNS, REASON)}
        for cols in read_hf(str(tmp_path / "hf"), "train", "web", start, stop, url_field="meta.url",
                            batch_size=batch_size, **kw):
            pa.Table.from_pydict(cols, schema=STAGE_SCHEMA)
            for k, v in cols.items():
                out[k] += v
        return out

    whole = read(0, 120, 1000)
    assert whole["id"] == [make_id("web/train", i) for i in range(120)]
    assert whole["text"][:3] == [r["text"] for r in recs[:3]] and whole["url"][5] == "http://example.com/5"
    assert whole[REASON][7] == "quarantine:missing_text" and whole[REASON].count("") == 119
    assert load_metadata(whole["metadata"][9]) == {"id": recs[9]["id"], "meta": {"url": "http://example.com/9"},
                                                   "record": 9}
    parts = [read(lo, lo + 50, 17) for lo in (0, 50, 100)]  # a range past the end stops at the end
    assert [i for p in parts for i in p["id"]] == whole["id"]
    assert read(0, 120, 1000, id_field="id")["id"] == [f"web#{r['id']}" for r in recs]
    with pytest.raises(ValueError, match="no split 'test'"):
        list(read_hf(str(tmp_path / "hf"), "test", "web", 0, 1))


def test_dolma_warcs_give_their_html_responses(dolma):
    rows = {name: read_all(dolma / name, f"w/{name}", "warc") for name in ("sample-0000.warc.gz", "sample-0001.warc.gz")}
    for name, got in rows.items():
        with open(dolma / name, "rb") as f:  # independent count straight from warcio
            expected = sum(1 for r in ArchiveIterator(f) if r.rec_type == "response")
        assert len(got["id"]) == expected
    counts = [len(r["id"]) for r in rows.values()]
    assert counts == [22, 15] and sum(counts) == 37  # the README's 37 raw HTML responses
    for got in rows.values():
        assert set(got[REASON]) == {""}
        assert all(u.startswith("http") for u in got["url"])
        assert all("<html" in t.lower() for t in got["text"])
        for m in map(load_metadata, got["metadata"]):
            assert m["content_type"] == "text/html" and m["warc_type"] == "response"
            assert m["warc_record_id"].startswith("<urn:uuid:") and m["warc_date"] and m["http_status"] == 200
        assert len(set(got["id"])) == len(got["id"])


def test_ids_are_stable_across_reads(dolma):
    for name, fmt in (("sample-0001.warc.gz", "warc"), (DOLMA_GZ, "jsonl")):
        first, second = (read_all(dolma / name, f"d/{name}", fmt) for _ in range(2))
        assert first == second


def test_whirlwind_warc_wet_wat(corpora):
    ww = corpora / "cc_whirlwind"
    warc = read_all(ww / "whirlwind.warc.gz", "cc/whirlwind.warc.gz", "warc")
    assert warc["url"] == ["https://an.wikipedia.org/wiki/Escopete"] and warc[REASON] == [""]
    assert load_metadata(warc["metadata"][0])["charset"] == "utf-8"
    wet = read_all(ww / "whirlwind.warc.wet.gz", "cc/whirlwind.warc.wet.gz", "wet")
    assert wet["url"] == warc["url"] and wet[REASON] == [""]
    assert wet["text"][0].startswith("Escopete") and "<" not in wet["text"][0][:200]
    meta = load_metadata(wet["metadata"][0])
    assert meta["content_type"] == "text/plain" and meta["warc_type"] == "conversion"
    wat = read_all(ww / "whirlwind.warc.wat.gz", "cc/whirlwind.warc.wat.gz", "warc")
    assert wat["id"] == []  # metadata records only: no documents


def _warc_with(tmp_path: Path) -> Path:
    from io import BytesIO

    from warcio.statusandheaders import StatusAndHeaders
    from warcio.warcwriter import WARCWriter

    path = tmp_path / "made.warc.gz"
    with open(path, "wb") as f:
        writer = WARCWriter(f, gzip=True)
        writer.write_record(writer.create_warcinfo_record("made.warc.gz", {"software": "test"}))
        for uri, ctype, body in (
            ("http://a.example/", "text/html; charset=iso-8859-1", "<html><body><p>café crème</p></body></html>".encode("latin-1")),
            ("http://a.example/logo.png", "image/png", b"\x89PNG\r\n\x1a\n...."),
            ("http://a.example/x", "application/xhtml+xml", b"<html><body><p>xhtml</p></body></html>"),
        ):
            writer.write_record(writer.create_warc_record(uri, "request", payload=BytesIO(b"GET / HTTP/1.1\r\n\r\n")))
            http = StatusAndHeaders("200 OK", [("Content-Type", ctype)], protocol="HTTP/1.1")
            writer.write_record(writer.create_warc_record(uri, "response", payload=BytesIO(body), http_headers=http))
    return path


def test_non_html_responses_are_dropped_and_charsets_decoded(tmp_path):
    rows = read_all(_warc_with(tmp_path), "w/made.warc.gz", "warc")
    assert rows[REASON] == ["", "non_html", ""]
    assert "café crème" in rows["text"][0] and rows["text"][1] == ""
    metas = [load_metadata(m) for m in rows["metadata"]]
    assert [m["content_type"] for m in metas] == ["text/html", "image/png", "application/xhtml+xml"]
    assert metas[0]["charset"] == "cp1252"  # browsers read latin-1 labels as windows-1252
    assert [m["record"] for m in metas] == [2, 4, 6]  # position among all WARC records


def test_truncated_warc_is_quarantined_not_silently_short(tmp_path, dolma):
    data = (dolma / "sample-0000.warc.gz").read_bytes()
    path = tmp_path / "cut.warc.gz"
    path.write_bytes(data[: len(data) // 2])
    rows = read_all(path, "w/cut.warc.gz", "warc")
    assert rows[REASON][-1] == "quarantine:corrupt_stream"
    assert 5 < len(rows["id"]) < 22 and set(rows[REASON][:-1]) == {""}


def test_text_and_html_files(tmp_path, corpora):
    book = corpora / "gutenberg" / "pg108.txt"
    rows = read_all(book, "b/pg108.txt", "text")
    assert rows[REASON] == [""] and rows["id"] == [make_id("b/pg108.txt", 0)]
    assert rows["text"][0] == book.read_bytes().decode("utf-8-sig")
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"ok \xff not utf-8")
    rows = read_all(bad, "b/bad.txt", "text")
    assert rows[REASON] == ["quarantine:invalid_utf8"] and rows["text"] == ["ok \ufffd not utf-8"]
    page = tmp_path / "page.html"
    page.write_bytes('<html><head><meta charset="windows-1251"></head><body><p>Привет</p></body></html>'.encode("cp1251"))
    rows = read_all(page, "h/page.html", "html")
    assert "Привет" in rows["text"][0] and rows[REASON] == [""]
    assert load_metadata(rows["metadata"][0])["content_type"] == "text/html"


def test_unknown_format_fails_at_once():
    assert FORMATS == {"jsonl", "parquet", "warc", "wet", "text", "html"}
    with pytest.raises(ValueError, match="unknown input format 'csv'"):
        read_file("x.csv", "x.csv", "csv", "src")


def test_list_inputs_globs(tmp_path, monkeypatch):
    for rel in ("a/1.jsonl", "a/2.jsonl.gz", "a/sub/3.jsonl", "a/sub/deep/4.jsonl", "b/5.jsonl", "c/1.jsonl", "a/notes.txt"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("{}\n")
    got = list_inputs([str(tmp_path / "a" / "**" / "*.jsonl*")])
    assert [rel for _, rel in got] == ["1.jsonl", "2.jsonl.gz", "sub/3.jsonl", "sub/deep/4.jsonl"]
    assert [p for p, _ in got] == sorted(p for p, _ in got) and all(Path(p).is_absolute() for p, _ in got)
    monkeypatch.chdir(tmp_path)  # relative patterns are relative to the working directory
    assert list_inputs(["b/5.jsonl"]) == [(str(tmp_path / "b" / "5.jsonl"), "5.jsonl")]
    assert [r for _, r in list_inputs(["a/*.jsonl", "a/sub/*.jsonl", "a/*.jsonl"])] == ["1.jsonl", "3.jsonl"]
    with pytest.raises(FileNotFoundError, match="matches no file"):
        list_inputs(["a/**/*.parquet"])
    with pytest.raises(ValueError, match="is a directory"):
        list_inputs(["a"])
    assert list_inputs(["b/5.jsonl", "a/../b/5.jsonl"]) == list_inputs(["b/5.jsonl"])  # one file, once
    with pytest.raises(ValueError, match="same relative path"):
        list_inputs(["a/*.jsonl", "c/*.jsonl"])  # a/1.jsonl and c/1.jsonl would share ids


def test_list_inputs_on_the_corpora(corpora):
    got = list_inputs([str(corpora / "dolma_fixtures" / "*.warc.gz")])
    assert [rel for _, rel in got] == ["sample-0000.warc.gz", "sample-0001.warc.gz"]


def _members(data: bytes) -> list[int]:
    """Offsets of the gzip members of a file (a WARC writer gzips each record on its own)."""
    offsets, pos = [], 0
    while pos < len(data):
        d = zlib.decompressobj(31)
        d.decompress(data[pos:])
        offsets.append(pos)
        pos = len(data) - len(d.unused_data)
    return offsets


def flip_record(data: bytes, member: int, n: int = 16) -> bytes:
    """n bytes flipped in the middle of the given gzip member."""
    offsets = _members(data) + [len(data)]
    mid = (offsets[member] + offsets[member + 1]) // 2
    bad = bytearray(data)
    for i in range(n):
        bad[mid + i] ^= 0xFF
    return bytes(bad)


@pytest.mark.parametrize("member", [0, 11, 23, 47])  # the first record, responses in the middle, the last
def test_corrupt_warc_record_costs_that_record_only(tmp_path, dolma, member):
    """16 flipped bytes in one gzip member: every other record reads as in the intact file (same ids and
    texts), and one corrupt_stream row stands for the damaged record with its byte range."""
    data = (dolma / "sample-0000.warc.gz").read_bytes()
    offsets = _members(data) + [len(data)]
    path = tmp_path / "flipped.warc.gz"
    path.write_bytes(flip_record(data, member))
    intact = read_all(dolma / "sample-0000.warc.gz", "w/x.warc.gz", "warc")
    rows = read_all(path, "w/x.warc.gz", "warc")
    spans = [i for i, r in enumerate(rows[REASON]) if r == "quarantine:corrupt_stream"]
    assert len(spans) == 1
    span = load_metadata(rows["metadata"][spans[0]])
    assert (span["record"], span["records_lost"]) == (member, 1)
    assert (span["byte_start"], span["byte_end"]) == (offsets[member], offsets[member + 1])
    kept = {i: t for i, t, r in zip(rows["id"], rows["text"], rows[REASON]) if r != "quarantine:corrupt_stream"}
    whole = dict(zip(intact["id"], intact["text"]))
    assert set(whole) - set(kept) <= {make_id("w/x.warc.gz", member)}  # at most the damaged record is missing
    assert all(whole[i] == t for i, t in kept.items())


def test_damaged_member_of_multi_member_jsonl_resyncs(tmp_path, dolma_records):
    """gzip jsonl written in members (as by a writer that flushes per chunk): a damaged member loses its
    lines, whole (its output is held until its checksum verifies: no garbage lines); the lines of the
    members after it are read."""
    lines = [json.dumps(r).encode() + b"\n" for r in dolma_records[:300]]
    chunks = [b"".join(lines[i:i + 50]) for i in range(0, 300, 50)]  # 6 members of 50 lines
    data = b"".join(gzip.compress(c) for c in chunks)
    path = tmp_path / "members.jsonl.gz"
    path.write_bytes(flip_record(data, 2))
    rows = read_all(path, "m/members.jsonl.gz", "jsonl")
    assert Counter(rows[REASON]) == {"": 250, "quarantine:corrupt_stream": 1}
    texts = [t for t, r in zip(rows["text"], rows[REASON]) if r == ""]
    assert texts == [r["text"] for r in dolma_records[:100] + dolma_records[150:300]]  # all but member 2
    span = load_metadata(rows["metadata"][rows[REASON].index("quarantine:corrupt_stream")])
    assert span["records_lost"] is None and span["members_lost"] == 1 and span["byte_end"] < len(data)


def test_a_record_over_the_size_limit_is_quarantined_without_being_read_whole(tmp_path):
    """One giant record (a 203 MB JSON line took a worker to 12.1 GB and 7 silent minutes) is quarantined
    "too_large" with its size, the records around it read as usual; reading it costs the limit, not its size
    (peak RSS of a fresh process measured around a 203 MB line, default limit 32 MB)."""
    import json
    import subprocess
    import sys

    from pipelines.readers import read_file

    small = json.dumps({"text": "a small document"}) + "\n"
    big = json.dumps({"text": "word " * 400_000}) + "\n"  # 2 MB
    path = tmp_path / "mixed.jsonl"
    path.write_text(small + big + small)
    rows = [r for cols in read_file(str(path), "mixed.jsonl", "jsonl", "t", max_doc_bytes=1 << 20)
            for r in zip(cols["id"], cols["text"], cols["metadata"], cols["_reason"])]
    assert [r[3] for r in rows] == ["", "quarantine:too_large", ""]
    assert json.loads(rows[1][2])["bytes"] == len(big.encode()) and rows[1][1] == ""
    assert rows[2][0] == "mixed.jsonl#0000000002"  # numbering goes on after it
    html = tmp_path / "page.html"
    html.write_text("<html><body>" + "<p>word</p>" * 200_000 + "</body></html>")
    (cols,) = read_file(str(html), "page.html", "html", "t", max_doc_bytes=1 << 20)
    assert cols["_reason"] == ["quarantine:too_large"] and json.loads(cols["metadata"][0])["bytes"] == html.stat().st_size

    # a WARC record over the limit, by its Content-Length, is not read; the records after it are
    from io import BytesIO

    from warcio.statusandheaders import StatusAndHeaders
    from warcio.warcwriter import WARCWriter

    warc = tmp_path / "big.warc.gz"
    with open(warc, "wb") as f:
        writer = WARCWriter(f, gzip=True)
        for uri, body in (("http://a.example/big", b"<html><body>" + b"<p>word</p>" * 200_000 + b"</body></html>"),
                          ("http://a.example/small", b"<html><body><p>small</p></body></html>")):
            http = StatusAndHeaders("200 OK", [("Content-Type", "text/html")], protocol="HTTP/1.1")
            writer.write_record(writer.create_warc_record(uri, "response", payload=BytesIO(body), http_headers=http))
    (cols,) = read_file(str(warc), "w/big.warc.gz", "warc", "t", max_doc_bytes=1 << 20)
    assert cols["_reason"] == ["quarantine:too_large", ""] and cols["url"] == ["http://a.example/big",
                                                                              "http://a.example/small"]
    assert json.loads(cols["metadata"][0])["bytes"] > 2_200_000 and "small" in cols["text"][1]

    giant = tmp_path / "giant.jsonl"
    with open(giant, "w") as f:
        f.write('{"text": "')
        for _ in range(203):
            f.write("word " * 200_000)  # 1 MB a write, one line in all
        f.write('"}\n' + small)
    code = ("import json, resource, sys\nfrom pipelines.readers import read_file\n"
            "peak = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024\nbefore = peak()\n"
            "rows = [r for c in read_file(sys.argv[1], 'giant.jsonl', 'jsonl', 't') for r in c['_reason']]\n"
            "print(json.dumps({'reasons': rows, 'grew_mb': peak() - before}))")
    out = json.loads(subprocess.run([sys.executable, "-c", code, str(giant)], capture_output=True, text=True,
                                    check=True).stdout)
    assert out["reasons"] == ["quarantine:too_large", ""]
    assert out["grew_mb"] < 32 + 64, out  # the 32 MB limit and read buffers; not the record's 203 MB (measured: 65)
