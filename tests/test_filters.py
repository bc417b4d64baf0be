"""Filter chain: the fast word splitter decides like datatrove's spaCy path, on real documents."""

from __future__ import annotations

import gzip
import json
import random
import re
from pathlib import Path

import pytest
from datatrove.utils.word_tokenizers import WordTokenizer, load_word_tokenizer

from pipelines.filters import FILTER_CLASSES, FastWordTokenizer, FilterChain, fast_tokenizer_for
from repo_paths import CORPORA, DOLMA_CRAWL

DOLMA = CORPORA / DOLMA_CRAWL
ALL_FILTERS = {name: {} for name in FILTER_CLASSES}
MIN_AGREEMENT = 0.99


def _need_corpora() -> None:
    if not CORPORA.is_dir():
        pytest.skip(f"real corpora not found at {CORPORA} (shared/corpora next to the repository)")


def _jsonl_gz(path: Path, limit: int | None = None) -> list[str]:
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return [json.loads(line)["text"] for line in f][:limit]


@pytest.fixture(scope="module")
def corpus() -> list[str]:
    """697 Common Crawl docs + OLMo C4/Guardian docs and 4chan threads + Gutenberg chunks."""
    _need_corpora()
    docs = _jsonl_gz(DOLMA)
    olmo = CORPORA / "olmo_fixtures"
    for path in sorted(olmo.glob("c4*.gz")):
        docs += _jsonl_gz(path)
    docs += _jsonl_gz(olmo / "4chan_00000000.jsonl.gz", limit=15)  # long threads (~40 KB each): a sample
    rnd = random.Random(0)
    for path in sorted((CORPORA / "gutenberg").glob("*.txt"))[:10]:
        text = path.read_text(encoding="utf-8", errors="replace")
        for _ in range(2):
            start = rnd.randrange(len(text) - 5000)
            docs.append(text[start : start + 5000])
    return docs


class MemoTokenizer(WordTokenizer):
    """datatrove's spaCy tokenizer, memoized per text so each document is spaCy-tokenized once
    across all the filters compared here (the reference stays datatrove's exact output)."""

    def __init__(self, inner: WordTokenizer):
        super().__init__(inner.language)
        self.inner = inner
        self.words: dict[str, list[str]] = {}
        self.spans: dict[str, list[tuple[int, int]]] = {}

    def word_tokenize(self, text: str) -> list[str]:
        if text not in self.words:
            self.words[text] = self.inner.word_tokenize(text)
        return self.words[text]

    def span_tokenize(self, text: str) -> list[tuple[int, int]]:
        if text not in self.spans:
            self.spans[text] = self.inner.span_tokenize(text)
        return self.spans[text]

    def sent_tokenize(self, text: str) -> list[str]:
        return self.inner.sent_tokenize(text)


@pytest.fixture(scope="module")
def spacy_memo() -> MemoTokenizer:
    return MemoTokenizer(load_word_tokenizer("en"))


def _spacy_cfg(cfg: dict, memo: MemoTokenizer) -> dict:
    # the "spacy" path, with datatrove's tokenizer passed in memoized
    out = {"word_splitter": "spacy"}
    for name, kwargs in cfg.items():
        out[name] = {**kwargs, "language": memo}
    return out


@pytest.mark.slow  # ~25 s: spaCy tokenizes every document once for the reference
@pytest.mark.parametrize("name", [*FILTER_CLASSES, "chain"])
def test_fast_splitter_decides_like_spacy(name: str, corpus: list[str], spacy_memo: MemoTokenizer) -> None:
    cfg = ALL_FILTERS if name == "chain" else {name: {}}
    fast = FilterChain({**cfg, "word_splitter": "fast"})
    ref = FilterChain(_spacy_cfg(cfg, spacy_memo))
    same_keep = same_reason = same_text = 0
    for text in corpus:
        fast_text, fast_reason = fast.apply(text, {})
        ref_text, ref_reason = ref.apply(text, {})
        same_keep += (fast_reason == "") == (ref_reason == "")
        same_reason += fast_reason == ref_reason
        same_text += fast_text == ref_text
    n = len(corpus)
    print(f"\n{name}: {n} docs, keep/drop agreement {same_keep / n:.4f}, same reason {same_reason / n:.4f}, "
          f"same output text {same_text / n:.4f}")
    assert same_keep / n >= MIN_AGREEMENT
    assert same_reason / n >= MIN_AGREEMENT
    assert same_text / n >= MIN_AGREEMENT


def test_fast_tokens_and_sentences_match_spacy(corpus: list[str], spacy_memo: MemoTokenizer) -> None:
    fast = FastWordTokenizer("en")
    docs = corpus[:300]
    same_words = sum(fast.word_tokenize(t) == spacy_memo.word_tokenize(t) for t in docs)
    same_spans = sum(fast.span_tokenize(t) == spacy_memo.span_tokenize(t) for t in docs)
    print(f"\nidentical tokens {same_words}/{len(docs)}, identical sentence spans {same_spans}/{len(docs)}")
    assert same_words / len(docs) >= MIN_AGREEMENT
    assert same_spans / len(docs) >= MIN_AGREEMENT


@pytest.mark.parametrize(
    "text",
    [
        "I don't know. Haven't you? It's John's car; we'll see. I'm OK! dont cant gonna",
        "Mail john.doe@example.com or see https://www.example.com/a?b=1. Also example.com!",
        "well-known 2018-03-05 and/or 1,000.50 $100 100% 10km e.g. U.S. Mr. Smith etc. a.m.",
        "Wait... what?! Really!!! -- yes --- no. ''quoted'' x'''''x 07/07/17(Fri)23:54:45 :) C++",
        "  leading spaces.  Two  spaces. Trailing newline.\n",
        "no sentence end at all ",
        "  \n ",
        "",
        "Zweite Überschrift: Straße, Größe. Привет, мир! Ελληνικά; العربية؟ हिन्दी।",
    ],
)
def test_fast_tokenizer_matches_spacy_on_edge_cases(text: str) -> None:
    spacy_tok = load_word_tokenizer("en")
    fast = FastWordTokenizer("en")
    assert fast.word_tokenize(text) == spacy_tok.word_tokenize(text)
    assert fast.span_tokenize(text) == spacy_tok.span_tokenize(text)
    assert fast.sent_tokenize(text) == spacy_tok.sent_tokenize(text)


def test_fast_tokenizer_other_language_uses_its_rules() -> None:
    text = "L'homme qu'il a vu aujourd'hui n'est pas là. C'est vrai !"
    assert fast_tokenizer_for("fr").word_tokenize(text) == load_word_tokenizer("fr").word_tokenize(text)
    # no plain spaCy pipeline in datatrove for these: their own segmenters are kept
    assert fast_tokenizer_for("th") is None and fast_tokenizer_for("ja") is None


# ---- known-bad and known-good text ----
def test_short_doc_dropped() -> None:
    chain = FilterChain({"gopher_quality": {}})
    assert chain.apply("Buy now. Free shipping on all orders!", {})[1] == "gopher_quality:gopher_short_doc"


def test_repeated_lines_dropped() -> None:
    text = "\n".join(["Click here to subscribe to our weekly newsletter and get 10% off."] * 30)
    assert FilterChain(ALL_FILTERS).apply(text, {})[1] == "gopher_repetition:dup_line_frac"


def test_lorem_ipsum_and_code_dropped_by_c4() -> None:
    chain = FilterChain({"c4": {}})
    prose = "This sentence is long enough to count. " * 6
    assert chain.apply(prose + "\nLorem ipsum dolor sit amet, consectetur adipiscing elit.", {})[1] == "c4:lorem_ipsum"
    assert chain.apply(prose + "\nfunction f() { return 1; } is what we wrote.", {})[1] == "c4:curly_bracket"


def _wikitext_articles() -> dict[str, str]:
    raw = (CORPORA / "wikitext2_test" / "wiki.test.raw").read_text(encoding="utf-8")
    articles = re.split(r"\n(?= = [^=\n]+ = \n)", raw)
    return {a.strip().split("\n", 1)[0].strip(" ="): a for a in articles}


def test_good_wikipedia_article_kept() -> None:
    _need_corpora()
    article = _wikitext_articles()["Du Fu"]
    text, reason = FilterChain(ALL_FILTERS).apply(article, {})
    assert reason == ""
    # C4 drops lines without terminal punctuation (the section headings) and strips the others
    assert " = = Life = = " in article and "= = Life = =" not in text
    assert 0.8 * len(article) < len(text) < len(article)


def test_dolma_reasons_are_prefixed(corpus: list[str]) -> None:
    chain = FilterChain(ALL_FILTERS)
    reasons = {chain.apply(text, {})[1] for text in corpus[:200]}
    assert "" in reasons and len(reasons) > 3
    assert all(r == "" or r.split(":", 1)[0] in FILTER_CLASSES and r.split(":", 1)[1] for r in reasons)


# ---- configuration ----
def test_config_selects_filters_in_finewebs_order() -> None:
    chain = FilterChain({"fineweb": {}, "gopher_quality": {"min_doc_words": 10}, "c4": None})
    assert chain.names == ["gopher_quality", "fineweb"]
    assert FilterChain({}).apply("anything", {}) == ("anything", "")


def test_thresholds_come_from_config() -> None:
    text = "The cat sat on the mat and looked at the dog with the hat. " * 3
    assert FilterChain({"gopher_quality": {}}).apply(text, {})[1] == "gopher_quality:gopher_short_doc"
    assert FilterChain({"gopher_quality": {"min_doc_words": 10}}).apply(text, {})[1] == ""


def test_bad_config_rejected() -> None:
    with pytest.raises(ValueError):
        FilterChain({"word_splitter": "nltk"})
    with pytest.raises(ValueError):
        FilterChain({"c4_badwords": {}})
    with pytest.raises(ValueError):
        FilterChain({"order": ["gopher"]})


def test_empty_text_does_not_crash() -> None:
    for text in ("", "   \n  "):
        assert FilterChain(ALL_FILTERS).apply(text, {})[1] != ""
        assert FilterChain({"fineweb": {}}).apply(text, {})[1] == "fineweb:empty"


def test_metadata_untouched_by_these_filters() -> None:
    meta = {"language": "en", "score": 0.5}
    assert FilterChain(ALL_FILTERS).apply("Some text. " * 100, meta)[1] == "gopher_repetition:top_2_gram"
    # the datatrove filters set nothing; the chain adds only the explanation of the drop
    assert {k: v for k, v in meta.items() if not k.startswith("filter_")} == {"language": "en", "score": 0.5}
    assert meta["filter_value"] == round(900 / 1100, 4)  # "Some text" (9 chars) x 100 over 1,100 chars


# ---- explained drops: the value that failed the filter and its threshold ----
SPEC_SHEET = (  # 50+ words and hardly any stop words: only "the"
    "Stainless steel kitchen knife set in seven pieces includes chef knife plus bread knife plus carving knife "
    "plus utility knife plus paring knife plus kitchen shears in one wooden block. Blades forged from German "
    "steel are hardened for lasting sharpness while handles stay ergonomic yet balanced. Dishwasher safe "
    "although hand washing is recommended. Block measures thirty centimetres tall. Lifetime warranty against "
    "manufacturing defects. Free delivery within three days across the country. Returns accepted within thirty "
    "days. Customer rating four stars from many reviews. Order today for shipping tomorrow."
)
NEWS_BRIEF = ("The river rose overnight after heavy rain. Several roads were closed by morning.\n"
              "Officials expect the water to recede by Friday.")
NAV_MENU = "\n".join(["Home", "About us", "Products and services", "Contact", "Careers at our company", "Sitemap"])
FAQ = "\n".join(["Q: Is parking free?", "A: Yes.", "Q: Pets allowed?", "A: No.", "Q: Wifi included?", "A: Yes, always."])
NEWSLETTER = "\n".join(["Click here to subscribe to our weekly newsletter and get 10% off."] * 30)
PROSE = "This sentence is long enough to count. " * 6
KEPT_ARTICLE = (
    "The old lighthouse on the northern cape was built in 1871 to guide fishing boats through the narrow "
    "channel. For nearly a century, keepers lived in the small stone cottage beside the tower with their "
    "families. They trimmed the wicks, polished the great lens and recorded the weather every four hours. "
    "When the light was automated in 1964, the last keeper moved to the village, where he taught sailing "
    "to children. Today the cottage is a museum that opens each summer, and visitors can climb the "
    "spiral stairs to see the original lens."
)


def _explained(cfg: dict, text: str) -> tuple[str, dict]:
    meta = {"source": "test"}
    reason = FilterChain(cfg).apply(text, meta)[1]
    assert reason and meta["source"] == "test"
    return reason, meta


def _fails_rule(meta: dict) -> bool:
    """The explanation is self-consistent: its value fails the threshold the way its rule says."""
    value, threshold, rule = meta["filter_value"], meta["filter_threshold"], meta["filter_rule"]
    assert rule.startswith(f"{value} ")
    if " < " in rule:
        return value < threshold
    if " > " in rule:
        return value > threshold
    return False


@pytest.mark.parametrize(
    "cfg, text, reason, value, threshold",
    [
        # 7 words ("Buy", "now", ..., "orders"), the 2 punctuation tokens do not count
        ({"gopher_quality": {}}, "Buy now. Free shipping on all orders!", "gopher_quality:gopher_short_doc",
         len(re.findall(r"\w+", "Buy now. Free shipping on all orders!")), 50),
        ({"gopher_quality": {"min_doc_words": 10}}, "The cat sat on the mat.", "gopher_quality:gopher_short_doc",
         6, 10),
        ({"gopher_quality": {}}, SPEC_SHEET, "gopher_quality:gopher_enough_stop_words",
         len({"the", "be", "to", "of", "and", "that", "have", "with"} & set(re.findall(r"\w+", SPEC_SHEET))), 2),
        (ALL_FILTERS, NEWSLETTER, "gopher_repetition:dup_line_frac", round(29 / 30, 4), 0.3),
        ({"gopher_repetition": {}}, "Some text. " * 100, "gopher_repetition:top_2_gram", round(900 / 1100, 4), 0.2),
        ({"c4": {}}, NEWS_BRIEF, "c4:too_few_sentences", NEWS_BRIEF.count(". ") + NEWS_BRIEF.count(".\n") + 1, 5),
        ({"fineweb": {}}, NAV_MENU, "fineweb:line_punct_ratio", 0.0, 0.12),
        ({"fineweb": {}}, FAQ, "fineweb:short_line_ratio", 1.0, 0.67),
        ({"fineweb": {"short_line_thr": 0.9}}, FAQ, "fineweb:short_line_ratio", 1.0, 0.9),
    ],
)
def test_drop_explained_with_value_and_threshold(cfg, text, reason, value, threshold) -> None:
    got, meta = _explained(cfg, text)
    assert got == reason
    assert (meta["filter_value"], meta["filter_threshold"]) == (value, threshold)
    assert _fails_rule(meta)


def test_drop_explanation_reads_as_a_rule() -> None:
    _, meta = _explained({"gopher_quality": {}}, SPEC_SHEET)
    assert meta["filter_rule"] == "1 distinct stop words < min_stop_words 2"
    _, meta = _explained({"fineweb": {"short_line_thr": 0.9}}, FAQ)
    assert meta["filter_rule"] == "1.0 share of short lines > short_line_thr 0.9"
    _, meta = _explained({"gopher_repetition": {"top_n_grams": [[2, 0.5], [3, 0.18]]}}, "Some text. " * 100)
    assert meta["filter_rule"].endswith("> top_n_grams[2] 0.5") and meta["filter_threshold"] == 0.5


@pytest.mark.parametrize("snippet, reason", [("Lorem ipsum dolor sit amet, consectetur adipiscing elit.", "lorem_ipsum"),
                                             ("function f() { return 1; } is what we wrote.", "curly_bracket")])
def test_c4_document_drop_names_the_line(snippet: str, reason: str) -> None:
    got, meta = _explained({"c4": {}}, PROSE + "\n" + snippet)
    assert got == f"c4:{reason}"
    assert meta["filter_threshold"] is True and meta["filter_value"] in snippet
    assert ("lorem ipsum" if reason == "lorem_ipsum" else "{") in meta["filter_value"].lower()


@pytest.mark.filterwarnings("ignore:Mean of empty slice", "ignore:invalid value encountered")  # datatrove's np.mean([])
def test_empty_drop_explained() -> None:
    # datatrove's own "empty" (gopher_repetition, fineweb) and the chain's (a division by zero words)
    for cfg, text in (({"fineweb": {}}, "   \n  "), (ALL_FILTERS, ""), ({"gopher_quality": {"min_doc_words": None}}, " ")):
        reason, meta = _explained(cfg, text)
        assert reason.endswith(":empty")
        assert meta["filter_value"] == 0 and meta["filter_threshold"] is None


def test_kept_document_has_no_filter_keys() -> None:
    meta = {"source": "test"}
    text, reason = FilterChain(ALL_FILTERS).apply(KEPT_ARTICLE, meta)
    assert reason == "" and meta == {"source": "test"}


def test_explain_says_nothing_rather_than_something_wrong() -> None:
    from datatrove.pipeline.filters import C4QualityFilter, GopherQualityFilter

    from pipelines.filters.explain import explain

    assert explain(GopherQualityFilter(), "no_such_reason", "text") is None
    assert explain(GopherQualityFilter(), "gopher_short_doc", KEPT_ARTICLE) is None  # 80 words: not short
    assert explain(C4QualityFilter(), "curly_bracket", PROSE) is None  # no bracket to point at
    assert explain(object(), "gopher_short_doc", "x") is None  # never raises


def test_every_corpus_drop_is_explained(corpus: list[str]) -> None:
    chain = FilterChain(ALL_FILTERS)
    drops = 0
    for text in corpus[:300]:
        meta = {}
        reason = chain.apply(text, meta)[1]
        if not reason:
            assert not any(k.startswith("filter_") for k in meta)
            continue
        drops += 1
        assert {"filter_value", "filter_threshold", "filter_rule"} <= set(meta), reason
        if reason.endswith((":empty", ":lorem_ipsum", ":curly_bracket")):
            continue
        value, threshold, rule = meta["filter_value"], meta["filter_threshold"], meta["filter_rule"]
        # rounded to 4 places, a value just past its threshold may print equal to it
        assert (value <= threshold) if " < " in rule else (value >= threshold), (reason, rule)
    assert drops > 50


def test_chain_pickles() -> None:
    # e.g. shipped to Ray workers; the fast tokenizer travels as its language only
    import pickle

    chain = FilterChain(ALL_FILTERS)
    text = "This is a perfectly ordinary sentence about the weather today. " * 20
    result = chain.apply(text, {})
    clone = pickle.loads(pickle.dumps(chain))
    assert clone.names == chain.names and clone.apply(text, {}) == result


def test_nothing_downloads(monkeypatch: pytest.MonkeyPatch) -> None:
    import datatrove.io
    import datatrove.pipeline.filters.c4_filters as c4_filters

    def no_download(*args, **kwargs):
        raise AssertionError("a filter tried to download an asset")

    monkeypatch.setattr(datatrove.io, "cached_asset_path_or_download", no_download)
    monkeypatch.setattr(c4_filters, "cached_asset_path_or_download", no_download)
    chain = FilterChain(ALL_FILTERS)
    chain.apply("A normal sentence with enough words in it to pass. " * 20, {})


def test_cached_spacy_rules_are_spacys_own(tmp_path, monkeypatch):
    """The on-disk rule cache (which spares workers spaCy's import) holds exactly what spaCy has."""
    import json

    from pipelines.filters import words

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    words._spacy_rules.cache_clear()
    fresh = words._spacy_rules("en")  # built from spaCy, written to the cache
    words._spacy_rules.cache_clear()
    cached = words._spacy_rules("en")  # read back from the file
    words._spacy_rules.cache_clear()
    assert list(tmp_path.glob("tokenmill/spacy-*-rules-en.json"))
    assert cached == json.loads(json.dumps(words._rules_from_spacy("en"))) == fresh
    assert cached["specials"]["don't"] == ["do", "n't"] and cached["patterns"]["prefix"]


def test_default_recipe_keeps_hard_wrapped_prose_and_counts_what_it_cuts():
    """The shipped filter defaults (FineWeb's recipe) no longer cut hard-wrapped prose to a tenth, and what a
    filter cuts from a kept document is counted (bytes, lines by C4's reason), not only seen in "MB text"."""
    import dataclasses

    from pipelines.stages.filter import FilterConfig

    _need_corpora()
    book = (CORPORA / "gutenberg" / "pg1661.txt").read_text(encoding="utf-8")[:60_000]
    defaults = dataclasses.asdict(FilterConfig())
    results = {}
    for label, c4 in (("default", defaults["c4"]), ("datatrove c4 defaults", {})):
        # C4 alone: FineWeb's line_punct_ratio drops such a book whole, which is a visible drop reason
        chain = FilterChain({"word_splitter": "fast", "c4": c4})
        text, reason = chain.apply(book, {})
        assert reason == "", (label, reason)
        t = chain.trimmed
        assert t["c4.bytes"] == len(book.encode()) - len(text.encode()) and t["c4.docs"] == 1
        assert t["c4.lines"] == len(book.splitlines()) - len(text.splitlines())
        assert t["c4.lines"] == sum(n for k, n in t.items() if k.startswith("c4.lines."))  # every line has a reason
        results[label] = len(text.encode()) / len(book.encode())
    assert results["default"] > 0.9  # blank lines and short headings go
    assert results["datatrove c4 defaults"] < 0.3  # every line without terminal punctuation went


def test_suffix_search_from_the_tail_finds_what_the_whole_search_finds() -> None:
    # words.py starts spaCy's suffix search in the last few characters unless an unbounded branch ("..+")
    # matches further left: the same match (span) as the plain search, for every language's rules
    from pipelines.filters.words import _spacy_rules, _suffix_searcher

    rng = random.Random(0)
    alphabet = ["a", "B", "7", ".", ",", "'", '"', ")", "%", "km", "…", "—", "-", "é", "’", "!"]
    strings = {"".join(rng.choice(alphabet) for _ in range(rng.randint(0, 14))) for _ in range(20_000)}
    strings |= {"word.", "U.S.", "etc...", "x" * 40 + "..", "10km", "a" + "." * 9, "cats'", "(see)"}
    for language in ("en", "fr", "de"):
        plain = re.compile(*_spacy_rules(language)["patterns"]["suffix"])
        fast = _suffix_searcher(plain)
        assert fast != plain.search  # the tail search is in use for these rules
        for s in strings:
            m, f = plain.search(s), fast(s)
            assert (m and m.span()) == (f and f.span()), (language, s)


def test_newline_runs_split_like_datatrove_regexes() -> None:
    from pipelines.filters.fused import _split_runs

    rng = random.Random(1)
    for _ in range(20_000):
        t = "".join(rng.choice(["a", "b", "\n", "\n", " ", "\r"]) for _ in range(rng.randint(0, 14)))
        assert _split_runs(t, 1) == re.split("\n+", t), repr(t)
        assert _split_runs(t, 2) == re.split(r"\n{2,}", t), repr(t)
