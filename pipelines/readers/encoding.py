"""Decoding HTML bytes to text; never fails.

Order (after a BOM): valid UTF-8 is UTF-8, whatever a header says (servers label UTF-8 pages
ISO-8859-1 by default, and valid multi-byte UTF-8 is almost never an accident); then the declared
charset (HTTP header, else <meta>); then sniffing:

- UTF-8 with a few bad bytes (at least 4 valid multi-byte characters per invalid byte) keeps UTF-8
  and replaces the bad bytes where they are, instead of re-decoding the whole page in a guess;
- a Latin code page (windows-1252, -1250, -1257, -1254) when the page reads as Latin text in it:
  mostly ASCII letters, no undefined byte, no symbol such as "¹" or "³" inside a word (Polish "ą"
  and "ł" in windows-1250 are those bytes in windows-1252); among those, the one whose accented
  letters best fit one language's alphabet (ALPHABETS), windows-1252 on a tie (the WHATWG default);
- else charset-normalizer's guess among the encodings the web uses (WHATWG's legacy encodings):
  Cyrillic, Greek, CJK.

charset-normalizer alone turned short French and Icelandic pages into windows-1250 and
windows-1257 mojibake ("déją", "trčs"): its scores tie across the Latin code pages and the tie
breaks alphabetically. Measured on 96 pages in 18 languages (tests/test_encoding.py): 76 decoded
correctly before, see that test for after.
"""

from __future__ import annotations

import codecs
import re
import unicodedata

_META_CHARSET = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?\s*([A-Za-z0-9_:.\-]+)""", re.I)
# Browsers decode these labels as windows-1252 (WHATWG encoding standard).
_AS_CP1252 = {"ascii", "latin_1", "iso8859_1", "us_ascii"}
# WHATWG legacy encodings (Python names), the candidates of a guess
_WEB = ["cp1250", "cp1251", "cp1253", "cp1254", "cp1255", "cp1256", "cp1257", "cp1258", "cp874", "koi8_r",
        "koi8_u", "iso8859_2", "iso8859_5", "iso8859_7", "iso8859_15", "cp866", "shift_jis", "euc_jp",
        "iso2022_jp", "gb18030", "big5", "euc_kr", "mac_roman"]
_BOMS = ((codecs.BOM_UTF8, "utf-8"), (codecs.BOM_UTF16_LE, "utf-16-le"), (codecs.BOM_UTF16_BE, "utf-16-be"))


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
    for bom, name in _BOMS:
        if body.startswith(bom):
            return body[len(bom):].decode(name, "replace"), name
    try:
        return body.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        pass
    match = _META_CHARSET.search(body[:4096])
    label = _codec(declared) or _codec(match.group(1).decode("ascii") if match else None)
    if label is None or label == "utf-8":
        if _mostly_utf8(body):
            return body.decode("utf-8", "replace"), "utf-8+replace"
        return _sniff(body)  # no declaration, or a UTF-8 one that none of its bytes bear out
    try:
        return body.decode(label), label
    except UnicodeDecodeError:
        return body.decode(label, "replace"), label + "+replace"


def _mostly_utf8(body: bytes) -> bool:
    text = body.decode("utf-8", "replace")
    bad = text.count("\ufffd") - body.count(b"\xef\xbf\xbd")
    good = sum(1 for ch in text if ord(ch) > 127) - text.count("\ufffd")
    return good >= 4 * bad


# The accented letters of the Latin-script languages the windows-125x code pages serve. A right
# decoding's accented letters belong to one language; a wrong one mixes alphabets (Czech read as
# windows-1252 gives "è", "ø" and "ì" side by side, which no language uses together).
ALPHABETS = {
    "fr": "àâæçéèêëîïôœùûüÿ", "de": "äöüß", "es": "áéíñóúü", "pt": "àáâãçéêíóôõú", "it": "àèéìíîòóù",
    "nl": "éëïöüèáó", "da": "æøåé", "sv": "åäöé", "fi": "äöåšž", "is": "áðéíóúýþæö", "ca": "àçéèíïòóúü",
    "pl": "ąćęłńóśźż", "cs": "áčďéěíňóřšťúůýž", "sk": "áäčďéíĺľňóôŕšťúýž", "hu": "áéíóöőúüű", "sl": "čšžćđ",
    "hr": "čćđšž", "ro": "ăâîșțşţ", "lt": "ąčęėįšųūž", "lv": "āčēģīķļņšūž", "et": "äõöüšž", "tr": "çğıöşüâî",
}
_LATIN_PAGES = ("cp1252", "cp1250", "cp1257", "cp1254")  # ties go to the first: the WHATWG default
_SAMPLE = 1 << 16  # bytes looked at to choose (a pure-Python pass: ~0.3 s per MB and code page)


def _sniff(body: bytes) -> tuple[str, str]:
    sample = body[:_SAMPLE]
    best, best_score = None, -1.0
    for name in _LATIN_PAGES:
        try:
            text = sample.decode(name)
        except UnicodeDecodeError:
            continue  # a byte the code page leaves undefined
        if _reads_as_latin(text) and (score := _one_alphabet(text)) > best_score:
            best, best_score = name, score
    if best is not None:
        return body.decode(best, "replace"), best
    guess = _guess(body)  # Cyrillic, Greek, CJK, ...
    if guess:
        try:
            return body.decode(guess), guess
        except (UnicodeDecodeError, LookupError):
            pass
    return body.decode("cp1252", "replace"), "cp1252+replace"


def _one_alphabet(text: str) -> float:
    """The share of the accented letters that the best single language's alphabet covers (1.0 if none)."""
    counts: dict[str, int] = {}
    for ch in text.lower():
        if ord(ch) > 127 and ch.isalpha():
            counts[ch] = counts.get(ch, 0) + 1
    total = sum(counts.values())
    if not total:
        return 1.0
    return max(sum(n for ch, n in counts.items() if ch in letters) for letters in ALPHABETS.values()) / total


_IN_WORDS = "’‘·"  # punctuation that does stand between letters (l’homme, l·l)


def _reads_as_latin(text: str) -> bool:
    """Mostly ASCII letters, and no symbol such as "¹" or "¿" between two letters."""
    letters = ascii_letters = 0
    prev = ""
    for i, ch in enumerate(text):
        if ch.isalpha():
            letters += 1
            ascii_letters += ch.isascii()
        elif (ord(ch) > 127 and ch not in _IN_WORDS and prev.isalpha() and i + 1 < len(text)
              and text[i + 1].isalpha() and unicodedata.category(ch)[0] in "SNP"):
            return False
        prev = ch
    return ascii_letters >= 0.8 * letters


def _guess(body: bytes) -> str | None:
    try:
        from charset_normalizer import from_bytes  # installed with trafilatura
    except ImportError:
        return None
    best = from_bytes(body[:_SAMPLE], cp_isolation=_WEB).best()
    return _codec(best.encoding) if best else None
