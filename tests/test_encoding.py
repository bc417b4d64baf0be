"""Charset handling on legacy-encoded pages made in the test from known text (the UDHR in 18 languages,
encoded as the web encoded them), with and without declarations: the share decoded exactly right."""

from __future__ import annotations

from collections import Counter

import pytest

from pipelines.readers.encoding import decode_html

# (encoding, UDHR files): Western, Central European, Baltic, Cyrillic, Greek, Turkish, CJK
SETS = {
    "cp1252": ["fra", "deu", "spa", "por_PT", "ita", "nld", "dan", "swe", "nob", "fin", "cat", "isl"],
    "iso8859_15": ["fra", "deu"],
    "cp1250": ["pol", "ces", "hun", "slk", "slv", "hrv"],
    "cp1257": ["lit", "lav", "est"],
    "cp1251": ["rus", "ukr"], "koi8_r": ["rus"], "cp1253": ["ell_monotonic"], "cp1254": ["tur"],
    "shift_jis": ["jpn"], "euc_jp": ["jpn"], "gbk": ["cmn_hans"], "big5": ["cmn_hant"],
}
WESTERN = ("cp1252", "iso8859_15")


def _pages(corpora):
    for enc, langs in SETS.items():
        for lang in langs:
            text = " ".join((corpora / "udhr2" / f"{lang}.txt").read_text().split())
            for chars in (200, 800, 3000):  # short pages are the hard ones
                body = text[:chars].encode(enc, "ignore").decode(enc)
                html = f"<html><head><title>t</title></head><body><p>{body}</p></body></html>"
                yield enc, lang, html, html.encode(enc)


def test_undeclared_legacy_pages_decode_right(corpora):
    right, total, wrong = Counter(), Counter(), []
    for enc, lang, html, data in _pages(corpora):
        text, used = decode_html(data)  # no charset anywhere: sniffed
        total[enc] += 1
        if text == html:
            right[enc] += 1
        else:
            wrong.append((enc, lang, used))
    share = sum(right.values()) / sum(total.values())
    print(f"decoded right: {sum(right.values())}/{sum(total.values())}", dict(right), wrong)
    # Western European pages are never turned into Central European or Baltic mojibake (before: 28/36 and
    # 5/6 of them were, "déją", "trčs")
    assert all(right[e] == total[e] for e in WESTERN), wrong
    for enc in ("cp1251", "koi8_r", "cp1253", "shift_jis", "euc_jp", "gbk", "big5"):
        assert right[enc] == total[enc], wrong
    assert share >= 0.95, wrong  # 76/96 before this change, 94/96 after (two 200-character cp1250 pages)


@pytest.mark.parametrize("declared", ["utf-8", None])
def test_a_few_bad_bytes_in_utf8_are_replaced_where_they_are(declared):
    words = "Grüße aus Köln, naïve café, Ελληνικά, 日本語. " * 20
    data = f"<html><head><meta charset='utf-8'></head><body><p>{words}</p></body></html>".encode()
    bad = bytearray(data)
    for at in (100, 400, 700, 900):  # four bytes that are invalid UTF-8
        bad[at] = 0xFF
    text, used = decode_html(bytes(bad), declared)
    assert used == "utf-8+replace" and text.count("\ufffd") >= 4
    assert "Grüße aus Köln" in text and "日本語" in text  # before: the whole page re-decoded as cp1250


def test_utf8_labelled_latin1_is_utf8_and_a_false_utf8_label_is_sniffed():
    page = "<html><body><p>Les élèves français étudient à l’école près de la forêt.</p></body></html>"
    assert decode_html(page.encode("utf-8"), "iso-8859-1") == (page, "utf-8")  # the server's default label lies
    assert decode_html(page.encode("cp1252"), "utf-8") == (page, "cp1252")  # no valid UTF-8 in it: sniffed
    assert decode_html(page.encode("cp1252"), "windows-1252") == (page, "cp1252")
