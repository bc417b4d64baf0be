"""MinHash signatures and LSH band keys, vectorized with numpy over a batch of documents.

Per batch: NFKC + lowercase each text (C-speed str methods), join the batch into one UTF-32 code point
array, normalize it with a per-code-point class table (punctuation, digits, whitespace), find word
boundaries with numpy, and hash every word n-gram shingle as a polynomial over its code points (prefix
sums, so no Python loop per word or shingle, and no truncation of long words). Shingle hashes go through a
64-bit mixer, then through `bands * rows` multiply-shift hash functions; a segment minimum per document
gives the signature.

Everything is integer numpy arithmetic on fixed constants, so signatures are identical across processes
and machines (Python's salted hash() is never used). Normalization uses Python's Unicode database, so a
Python with a newer Unicode version can normalize newly assigned characters differently.

Empty documents (no word left after normalization) get a signature of SENTINEL values (2**32 - 1). A real
document has a whole band of that value with probability about 2**-256, and `band_keys` gives each empty
document's bands fresh random keys, so empty documents never land in a bucket with anything: they are
never near-duplicates, not even of each other. Those random keys are the only non-deterministic output,
and they do not change any grouping result.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass

import numpy as np

from pipelines.hashing import U64, fmix64, splitmix64
from pipelines.typed_config import PositiveInt

SENTINEL = np.uint32(0xFFFFFFFF)  # every value of an empty document's signature
_MASK64 = (1 << 64) - 1
# An odd base (the 64-bit golden ratio) is invertible modulo 2**64; that lets a shingle's hash be read
# off prefix sums as (P[end] - P[start]) * BASE**-start, i.e. independently of its position in the batch.
_BASE = 0x9E3779B97F4A7C15
_BASE_INV = pow(_BASE, -1, 1 << 64)
_MAX_CHUNK_CHARS = 1 << 20  # code points per numpy pass: bounds memory (~60 MB at the peak)
# Shingles per (shingles x hash functions) uint64 matrix: 4096 x 112 -> 3.5 MiB, cache-sized, twice as
# fast as one big matrix.
_CHUNK_SHINGLES = 1 << 12


@dataclass(frozen=True)
class MinHashConfig:
    ngram: PositiveInt = 5  # word shingles (FineWeb's 5-grams)
    bands: PositiveInt = 14
    rows: PositiveInt = 8  # 14 x 8 like FineWeb: estimated threshold (1/14)**(1/8) ~ 0.72
    seed: int = 1

    def __post_init__(self) -> None:
        if min(self.ngram, self.bands, self.rows) < 1:
            raise ValueError(f"ngram, bands and rows must be >= 1, got {self}")

    @property
    def num_perm(self) -> int:
        return self.bands * self.rows


# ---------------------------------------------------------------- normalization

_KEEP, _SPACE, _DROP, _DIGIT, _UNKNOWN = 0, 1, 2, 3, 255
# Class of every code point, filled lazily from unicodedata (1.1 MB; each code point looked up once).
_CLASS = np.full(0x110000, _UNKNOWN, dtype=np.uint8)


def _category_class(cp: int) -> int:
    cat = unicodedata.category(chr(cp))
    if cat == "Nd":
        return _DIGIT
    if cat[0] in "PSZ" or cat in ("Cc", "Cs"):  # punctuation, symbols, separators, controls, lone surrogates
        return _SPACE
    if cat == "Cf":  # format characters (soft hyphen, zero-width space, BOM): inside words, so deleted
        return _DROP
    return _KEEP  # letters, marks, other numbers, private use


def _classes(codes: np.ndarray) -> np.ndarray:
    cls = _CLASS[codes]
    unknown = cls == _UNKNOWN
    if unknown.any():
        for cp in np.unique(codes[unknown]).tolist():
            _CLASS[cp] = _category_class(cp)
        cls = _CLASS[codes]
    return cls


def _fold(text: str) -> str:
    return unicodedata.normalize("NFKC", text).lower()


def _canonical_codes(folded: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Code points of the normalized texts joined by single spaces, and the text index of each.

    Vectorized over the whole batch: punctuation, symbols and whitespace -> one space per run, every run
    of digits -> "0", format characters deleted. Words are the runs of non-space code points."""
    lens = np.fromiter(map(len, folded), dtype=np.int64, count=len(folded))
    codes = np.frombuffer(" ".join(folded).encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
    doc = np.repeat(np.arange(len(folded)), lens + 1)[: len(codes)]  # a separator joins the text before it
    cls = _classes(codes)
    keep = cls != _DROP
    codes, cls, doc = codes[keep], cls[keep], doc[keep]
    run = (cls == np.r_[np.uint8(_KEEP), cls[:-1]]) & ((cls == _SPACE) | (cls == _DIGIT))
    codes = np.where(cls == _SPACE, np.uint32(32), np.where(cls == _DIGIT, np.uint32(48), codes))
    return codes[~run], doc[~run]


def normalize_for_minhash(text: str) -> str:
    """The text that MinHash shingles, words separated by single spaces. Like datatrove's simplify_text:
    NFKC, lowercase, each run of digits -> "0", punctuation and symbols -> space, whitespace collapsed,
    format characters (soft hyphen, zero-width space) deleted. Unlike it, diacritics are kept (stripping
    combining marks also mangles words in Indic and other scripts)."""
    codes, _ = _canonical_codes([_fold(text)])
    return codes.tobytes().decode("utf-32-le").strip(" ")


# ---------------------------------------------------------------- hashing helpers

def _permutations(cfg: MinHashConfig) -> tuple[np.ndarray, np.ndarray]:
    """(a, b) of the num_perm hash functions h -> (a*h + b mod 2**64) >> 32, a odd (multiply-shift).
    Derived from the seed with splitmix64, not an RNG, so they never change with the numpy version."""
    base = U64((cfg.seed * 0x2545F4914F6CDD1D) & _MASK64)
    counter = base + np.arange(2 * cfg.num_perm, dtype=U64)
    mixed = splitmix64(counter)
    return mixed[0::2] | U64(1), mixed[1::2]


def _powers(base: int, n: int) -> np.ndarray:
    """base**i mod 2**64 for i in [0, n) (numpy's uint64 products wrap, which is the modulus we want)."""
    p = np.full(n, base, dtype=U64)
    p[:1] = 1
    return np.multiply.accumulate(p, out=p)


# ---------------------------------------------------------------- signatures

def _shingle_hashes(codes: np.ndarray, doc: np.ndarray, n: int, ngram: int) -> tuple[np.ndarray, np.ndarray]:
    """Hashes of the word n-gram shingles of n canonical texts, and the number of shingles per text.

    A shingle's hash is a 64-bit polynomial hash of the code points of " ".join(its words), mixed with
    its length and put through fmix64: the same shingle hashes the same in any document or batch. A text
    with fewer than `ngram` words is one shingle (the whole text); an empty text has none. Known limit of
    polynomial hashing modulo 2**64: crafted strings of thousands of characters (Thue-Morse) collide;
    natural 5-word shingles are far shorter than that.
    """
    edge = np.diff((codes != 32).astype(np.int8), prepend=np.int8(0), append=np.int8(0))
    starts = np.flatnonzero(edge == 1)
    ends = np.flatnonzero(edge == -1)
    words_per_doc = np.bincount(doc[starts], minlength=n)
    first_word = np.zeros(n, dtype=np.int64)
    np.cumsum(words_per_doc[:-1], out=first_word[1:])

    per_doc = np.where(words_per_doc > 0, np.maximum(words_per_doc - ngram + 1, 1), 0)
    total = int(per_doc.sum())
    shingle_doc = np.repeat(np.arange(n), per_doc)
    first_shingle = np.zeros(n, dtype=np.int64)
    np.cumsum(per_doc[:-1], out=first_shingle[1:])
    w0 = first_word[shingle_doc] + (np.arange(total) - first_shingle[shingle_doc])
    w1 = w0 + np.minimum(words_per_doc[shingle_doc], ngram) - 1
    s, e = starts[w0], ends[w1]

    prefix = np.zeros(len(codes) + 1, dtype=U64)
    np.cumsum(codes.astype(U64) * _powers(_BASE, len(codes)), out=prefix[1:])
    h = (prefix[e] - prefix[s]) * _powers(_BASE_INV, len(codes))[s]
    h ^= (e - s).astype(U64) * U64(0xD6E8FEB86659FD93)
    return fmix64(h), per_doc


def _min_per_doc(h: np.ndarray, per_doc: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Signature rows: for each text, the minimum over its shingles of each hash function."""
    out = np.full((len(per_doc), len(a)), np.iinfo(U64).max, dtype=U64)
    doc = np.repeat(np.arange(len(per_doc)), per_doc)
    buf = np.empty((min(_CHUNK_SHINGLES, len(h)), len(a)), dtype=U64)
    for lo in range(0, len(h), _CHUNK_SHINGLES):
        hi = min(lo + _CHUNK_SHINGLES, len(h))
        vals = np.multiply.outer(h[lo:hi], a, out=buf[: hi - lo])
        vals += b
        d = doc[lo:hi]
        seg = np.flatnonzero(np.r_[True, d[1:] != d[:-1]])  # first shingle of each text in this chunk
        docs = d[seg]  # a text cut by a chunk boundary is min-combined with its earlier part
        out[docs] = np.minimum(out[docs], np.minimum.reduceat(vals, seg, axis=0))
    out >>= U64(32)  # the hash functions keep the top 32 bits; min commutes with that monotone shift
    sigs = out.astype(np.uint32)
    sigs[per_doc == 0] = SENTINEL
    return sigs


def _char_chunks(folded: list[str]) -> list[tuple[int, int]]:
    """Consecutive ranges of texts with at most _MAX_CHUNK_CHARS code points (or a single longer text)."""
    ranges, lo, size = [], 0, 0
    for i, t in enumerate(folded):
        if size and size + len(t) > _MAX_CHUNK_CHARS:
            ranges.append((lo, i))
            lo, size = i, 0
        size += len(t) + 1
    ranges.append((lo, len(folded)))
    return ranges


def signatures(texts: list[str], cfg: MinHashConfig) -> np.ndarray:
    """MinHash signatures, shape (len(texts), bands * rows), uint32. Empty texts get all SENTINEL."""
    a, b = _permutations(cfg)
    folded = [_fold(t) for t in texts]
    out = np.empty((len(folded), cfg.num_perm), dtype=np.uint32)
    if not folded:
        return out
    for lo, hi in _char_chunks(folded):
        codes, doc = _canonical_codes(folded[lo:hi])
        h, per_doc = _shingle_hashes(codes, doc, hi - lo, cfg.ngram)
        out[lo:hi] = _min_per_doc(h, per_doc, a, b)
    return out


def is_empty_signature(sigs: np.ndarray) -> np.ndarray:
    """Boolean per row: the signature of an empty document."""
    return np.all(np.asarray(sigs) == SENTINEL, axis=-1)


def band_keys(sigs: np.ndarray, cfg: MinHashConfig) -> np.ndarray:
    """LSH bucket keys, shape (n, bands) uint64: a 64-bit hash of (band index, the band's rows), so equal
    rows in different bands give different keys. Empty documents get random keys (see module doc)."""
    sigs = np.asarray(sigs)
    if sigs.ndim != 2 or sigs.shape[1] != cfg.num_perm:
        raise ValueError(f"expected signatures of shape (n, {cfg.num_perm}), got {sigs.shape}")
    n = sigs.shape[0]
    rows = sigs.reshape(n, cfg.bands, cfg.rows).astype(U64)
    band_ids = np.arange(cfg.bands, dtype=U64) + U64((cfg.seed << 32) & _MASK64)
    keys = np.broadcast_to(fmix64(band_ids), (n, cfg.bands)).copy()
    for r in range(cfg.rows):  # a loop over the 8 rows of a band, each step vectorized over (n, bands)
        keys ^= rows[:, :, r]
        fmix64(keys)
    empty = is_empty_signature(sigs)
    if empty.any():
        keys[empty] = np.random.default_rng().integers(0, 1 << 64, size=(int(empty.sum()), cfg.bands),
                                                       dtype=U64, endpoint=False)
    return keys


def estimated_threshold(cfg: MinHashConfig) -> float:
    """The Jaccard similarity at which a pair becomes a candidate with probability about 1/2."""
    return (1 / cfg.bands) ** (1 / cfg.rows)


def jaccard_estimate(sig_a: np.ndarray, sig_b: np.ndarray) -> float:
    """Fraction of equal signature values; 0.0 when either document is empty."""
    sig_a, sig_b = np.asarray(sig_a), np.asarray(sig_b)
    if sig_a.shape != sig_b.shape:
        raise ValueError(f"signature shapes differ: {sig_a.shape} vs {sig_b.shape}")
    if is_empty_signature(sig_a) or is_empty_signature(sig_b):
        return 0.0
    return float(np.mean(sig_a == sig_b))
