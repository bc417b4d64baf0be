"""Decoding HTML bytes to text: declared charset, then UTF-8, then a guess; never fails.

Web pages lie about and omit their charsets, so an undecodable page is not quarantined: it is
decoded with the best guess (replacement characters where even that fails) and extraction decides.
"""

from __future__ import annotations

import codecs
import re

_META_CHARSET = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?\s*([A-Za-z0-9_:.\-]+)""", re.I)
# Browsers decode these labels as windows-1252 (WHATWG encoding standard).
_AS_CP1252 = {"ascii", "latin_1", "iso8859_1", "us_ascii"}


def charset_from_content_type(content_type: str | None) -> tuple[str, str | None]:
    """("text/html", "utf-8") from "text/html; charset=UTF-8"; mime lowercased, "" if none."""
    if not content_type:
        return "", None
    mime, _, params = content_type.partition(";")
    charset = None
    for param in params.split(";"):
        key, _, value = param.partition("=")
        if key.strip().lower() == "charset" and value.strip():
            charset = value.strip().strip("\"'")
    return mime.strip().lower(), charset


def _codec(label: str | None) -> str | None:
    if not label:
        return None
    try:
        name = codecs.lookup(label).name
    except LookupError:
        return None
    return "cp1252" if name.replace("-", "_") in _AS_CP1252 else name


def decode_html(body: bytes, declared: str | None = None) -> tuple[str, str]:
    """(text, charset used); the charset ends in "+replace" when bytes had to be replaced."""
    if body.startswith(codecs.BOM_UTF8):
        return body[len(codecs.BOM_UTF8):].decode("utf-8", "replace"), "utf-8"
    match = _META_CHARSET.search(body[:4096])
    candidates = [_codec(declared), _codec(match.group(1).decode("ascii") if match else None), "utf-8"]
    for name in dict.fromkeys(c for c in candidates if c):
        try:
            return body.decode(name), name
        except UnicodeDecodeError:
            continue
    guess = _guess(body)
    if guess:
        try:
            return body.decode(guess), guess
        except (UnicodeDecodeError, LookupError):
            pass
    fallback = next(c for c in candidates if c)
    return body.decode(fallback, "replace"), fallback + "+replace"


def _guess(body: bytes) -> str | None:
    try:
        from charset_normalizer import from_bytes  # installed with trafilatura
    except ImportError:
        return None
    best = from_bytes(body[:65536]).best()
    return _codec(best.encoding) if best else None
