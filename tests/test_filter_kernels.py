"""The fused filter kernels (pipelines/filters/fused.py) decide exactly as datatrove's filter classes.

Reference: FilterChain(engine="datatrove"), i.e. GopherRepetitionFilter, GopherQualityFilter, C4QualityFilter and
FineWebQualityFilter's own filter() calls in FineWeb's order, with the word splitter the pipeline runs (words.py;
its agreement with spaCy is tests/test_filters.py's). Over more than 10,000 real documents (web crawl in 63
languages, C4 and Guardian pages, forum threads, English and French books, Wikipedia, SMS, Q&A titles, the UDHR in
388 languages, documentation pages as text and as raw HTML), for every document: the same keep/drop, the same first
failing rule, the same value and rule text explaining it, the same text out (C4's line edits, byte for byte), and
the same per-line counters of what C4 cut.
"""

from __future__ import annotations

import gzip
import json
import random
import re

import pytest

from pipelines.filters import FILTER_CLASSES, FilterChain
from pipelines.filters.fused import Vocab, _Words
from pipelines.filters.words import fast_tokenizer_for
from pipelines.quality import book_documents
from repo_paths import CORPORA, DOLMA_CRAWL, REPO

pytestmark = pytest.mark.slow  # ~90 s: the reference runs datatrove's filters over every document
FINEWEB = {**{name: {} for name in FILTER_CLASSES}, "c4": {"filter_no_terminal_punct": False}}  # the default
DATATROVE = {name: {} for name in FILTER_CLASSES}  # every class with its own defaults
ODD = {  # thresholds and modes off the defaults: other code paths of each filter
    "gopher_repetition": {"top_n_grams": [[2, 0.08], [3, 0.07]], "dup_n_grams": [[3, 0.05], [4, 0.05], [6, 0.04]],
                          "dup_line_frac": None, "dup_para_char_frac": 0.1},
    "gopher_quality": {"min_doc_words": 20, "max_avg_word_length": 7, "stop_words": ["the", "and", "de", "la", "und"],
                       "min_stop_words": 1, "max_non_alpha_words_ratio": 0.9},
    "c4": {"split_paragraph": False, "min_num_sentences": 3, "filter_policy": False, "max_word_length": 40},
    "fineweb": {"line_punct_exclude_zero": True, "short_line_length": 20, "new_line_ratio": 0.2},
}


def _jsonl(path, key: str = "text") -> list[str]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        return [json.loads(line)[key] for line in f if line.strip()]


def _pieces(text: str, size: int) -> list[str]:
    """A long text cut at line ends into pieces of about `size` characters."""
    out, cur, n = [], [], 0
    for line in text.split("\n"):
        cur.append(line)
        n += len(line) + 1
        if n >= size:
            out.append("\n".join(cur))
            cur, n = [], 0
    if cur:
        out.append("\n".join(cur))
    return out


@pytest.fixture(scope="module")
def documents() -> dict[str, list[str]]:
    if not CORPORA.is_dir():
        pytest.skip(f"real corpora not found at {CORPORA} (shared/corpora next to the repository)")
    rnd = random.Random(0)
    d = CORPORA / "dolma_fixtures"
    docs: dict[str, list[str]] = {"web": _jsonl(CORPORA / DOLMA_CRAWL) + _jsonl(d / "cc_en_head-0091.jsonl") + _jsonl(d / "cc_en_head-0174.jsonl")
            + _jsonl(d / "000.json.gz")}
    olmo = CORPORA / "olmo_fixtures"
    docs["c4"] = [t for p in sorted(olmo.glob("c4*.gz")) for t in _jsonl(p)]
    docs["forum"] = [p for t in _jsonl(olmo / "4chan_00000000.jsonl.gz")[:80] for p in _pieces(t, 5000)]
    books = sorted(p for p in (CORPORA / "gutenberg").rglob("*.txt") if "french" not in p.parts)
    docs["books"] = [doc for p in books for doc in book_documents(p.read_text(encoding="utf-8", errors="replace"))[:20]]
    docs["books_fr"] = [doc for p in sorted((CORPORA / "gutenberg" / "french").glob("*.txt"))
                        for doc in book_documents(p.read_text(encoding="utf-8", errors="replace"))[:70]]
    wiki = (CORPORA / "wikitext2_test" / "wiki.test.raw").read_text(encoding="utf-8")
    docs["wiki"] = [s for s in re.split(r"\n (?= = [^=])", wiki) if s.strip()]
    sms = (CORPORA / "sms_spam" / "SMSSpamCollection").read_text(encoding="utf-8").splitlines()[1:]
    docs["sms"] = [line.split("\t", 1)[-1] for line in sms]
    cooking = (CORPORA / "fasttext_cooking" / "cooking.stackexchange.txt").read_text(encoding="utf-8").splitlines()
    docs["qa"] = [re.sub(r"__label__\S+\s*", "", line) for line in rnd.sample(cooking, 2000)]
    docs["udhr"] = [p.read_text(encoding="utf-8", errors="replace") for p in sorted((CORPORA / "udhr2").glob("*.txt"))]
    html = sorted((REPO / "configs" / "data" / "python3.11-doc").rglob("*.html"))
    pages = sorted((CORPORA / "trafilatura_eval" / "pages").glob("*"))[:120]
    docs["html"] = [p.read_text(encoding="utf-8", errors="replace")[:12_000] for p in html + pages]
    from pipelines.extract import extract_page

    docs["docs_text"] = [t for p in html if (t := extract_page(p.read_text(encoding="utf-8"), {"include_tables": True})[0])]
    docs["edge"] = ["", " ", "\n\n\n", "...", "# # #", "a\n\nb\n\na\n\nb", "{}", "lorem ipsum dolor sit amet. " * 20,
                    "Hello.  World! Two  spaces.\tTab. " * 5, "— – … “quoted.” ‘single.’ " * 30,
                    "Lone \udcff surrogates \ud800 from undecodable bytes, in a sentence. " * 12]
    return docs


def _run(cfg: dict, texts: list[str], engine: str) -> tuple[list[tuple], dict]:
    chain = FilterChain(cfg, engine=engine)
    assert chain.engine == engine
    out = []
    for text in texts:
        meta: dict = {"source": "x"}
        text_out, reason = chain.apply(text, meta)
        out.append((text_out, reason, meta))
    return out, dict(chain.trimmed)


def _compare(cfg: dict, texts: list[str]) -> dict[str, int]:
    ref, ref_trim = _run(cfg, texts, "datatrove")
    got, got_trim = _run(cfg, texts, "fused")
    for i, (a, b) in enumerate(zip(ref, got)):
        assert a[1] == b[1], (i, texts[i][:300], a[1], b[1])  # keep/drop and the first failing rule
        assert a[2] == b[2], (i, texts[i][:300], a[2], b[2])  # the value and rule that explain a drop
        assert a[0] == b[0], (i, texts[i][:300])  # C4's line edits, byte for byte
    assert ref_trim == got_trim
    reasons: dict[str, int] = {}
    for _, reason, _ in ref:
        reasons[reason or "kept"] = reasons.get(reason or "kept", 0) + 1
    return reasons


def test_the_fused_kernels_decide_as_datatrove_on_10000_real_documents(documents):
    texts = [t for group in documents.values() for t in group]
    assert len(texts) >= 10_000, {k: len(v) for k, v in documents.items()}
    reasons = _compare(FINEWEB, texts)
    print(f"\n{len(texts)} documents, {sum(map(len, texts)) / 1e6:.1f} M characters, identical; reference decisions: "
          + ", ".join(f"{k} {v}" for k, v in sorted(reasons.items(), key=lambda kv: -kv[1])))
    # the comparison means something: documents kept, and dropped by each filter for many different rules
    assert reasons["kept"] > 1000 and sum(v for k, v in reasons.items() if k != "kept") > 3000, reasons
    rules = {k for k in reasons if k != "kept"}
    assert {r.split(":")[0] for r in rules} == set(FILTER_CLASSES) and len(rules) >= 15, reasons


def test_the_fused_kernels_decide_as_datatrove_with_its_defaults_and_odd_thresholds(documents):
    texts = [t for group in documents.values() for t in group][::8]
    _compare(DATATROVE, texts)
    _compare(ODD, texts)


def test_the_fused_kernels_decide_as_datatrove_for_french(documents):
    """Every filter on datatrove's French tokenizer (spaCy's fr rules: elisions, other specials)."""
    fr = {name: {**cfg, "language": "fr"} for name, cfg in FINEWEB.items()}
    _compare(fr, documents["books_fr"][::2] + documents["web"][::4] + documents["udhr"][::3])


def test_sentence_counts_and_ngram_classes_match_the_tokenizer(documents):
    """The two shortcuts the kernels take: sentences counted from token flags equal spaCy-Sentencizer spans
    (split_into_sentences), and word n-grams classed by integers equal the strings datatrove compares."""
    from datatrove.utils.text import split_into_sentences

    tok = fast_tokenizer_for("en")
    vocab = Vocab(tok)
    lines = [line.strip() for t in documents["web"][::2] + documents["books"][::20] for line in t.splitlines() if line.strip()]
    counted = 0
    for line in lines:
        n = vocab.sentences(line)
        if n is not None:
            counted += 1
            assert n == len(split_into_sentences(line, tok)), line
    assert counted > 0.8 * len(lines)
    checked = 0
    for text in documents["web"][:300]:
        w = _Words(vocab, text)
        words = tok.word_tokenize(text)
        if not 10 < len(words) < 400:
            continue
        names = list(vocab.tokens)
        assert [names[i] for i in w.ids.tolist()] == words
        for n in (2, 5):
            grams = [" ".join(words[i : i + n]) for i in range(len(words) - n + 1)]
            pos, cls, counts, first = w.repeated(n)
            assert pos.tolist() == [i for i, g in enumerate(grams) if grams.count(g) > 1]
            assert sorted(counts.tolist()) == sorted(grams.count(g) for g in {g for g in grams if grams.count(g) > 1})
            assert sorted(first.tolist()) == sorted(grams.index(g) for g in {g for g in grams if grams.count(g) > 1})
        checked += 1
    assert checked > 50


def test_a_full_vocabulary_starts_over_between_documents_and_decides_the_same(documents, monkeypatch):
    from pipelines.filters import fused

    monkeypatch.setattr(fused, "MAX_CHUNKS", 2000)
    fused.clear_vocabularies()
    texts = documents["web"][:120] + documents["books"][:60]
    _compare(FINEWEB, texts)
    vocab = fused._VOCABS["en"]
    assert vocab.restarts >= 5 and len(vocab.tokens) < 2000 + max(len(t.split()) for t in texts) * 2
    assert vocab.carried > 0  # the chunks used twice since the last start were copied over, not split again
    fused.clear_vocabularies()
