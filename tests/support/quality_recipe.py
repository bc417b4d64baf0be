"""The quality classifier's development recipe from ../shared/corpora (tests only): Wikipedia (WikiText-2) and
Gutenberg books as positives; Common Crawl, SMS messages and 4chan threads as negatives."""

from __future__ import annotations

import gzip
import json
import math
import re
from pathlib import Path

from pipelines.quality import QualityTrainConfig, split_documents

DEV_POSITIVE_SOURCES = ("wikitext", "gutenberg")
DEV_NEGATIVE_SOURCES = ("crawl", "sms_spam", "4chan")
DEV_GUTENBERG_BOOKS = 20  # books read (spread over the sorted English books): enough variety, fast
# QualityTrainConfig's defaults (fastText's own lr 0.1, 5 epochs) suit DCLM-sized data (~10^5 docs and
# more); on the dev recipe (~1,500 docs) they leave every score within 0.01 of 0.5. A higher lr and more
# epochs: validation F1 0.70 -> ~0.95 on the dev recipe, training still ~2 s.
DEV_RECIPE_TRAIN_CONFIG = QualityTrainConfig(epoch=20, lr=0.5)


def _spread(items: list, cap: int) -> list:
    """At most cap items, evenly spaced over the list (deterministic; covers all of it)."""
    if len(items) <= cap:
        return list(items)
    return [items[i * len(items) // cap] for i in range(cap)]


_WT_NUMBER_SEP = re.compile(r" @([-,.])@ ")
_WT_SPACE_BEFORE = re.compile(r" ([.,;:!?%)\]}]|'s\b|'re\b|'ve\b|'d\b|'ll\b|'m\b|n't\b)")
_WT_SPACE_AFTER = re.compile(r"([(\[{$]) ")
_WT_QUOTES = re.compile(r'" ([^"\n]*?) "')


def _wikitext_detokenize(line: str) -> str:
    """Undo WikiText's tokenization ("actor , the @-@ class ( poem )") so that spacing around
    punctuation is not a feature that tells Wikipedia apart from everything else."""
    line = _WT_NUMBER_SEP.sub(r"\1", line)
    line = _WT_SPACE_BEFORE.sub(r"\1", line)
    line = _WT_SPACE_AFTER.sub(r"\1", line)
    return _WT_QUOTES.sub(r'"\1"', line)


def wikitext_articles(path: str | Path) -> list[str]:
    """WikiText raw file -> one text per article. An article starts at a " = Title = " line; section
    headings (" = = Section = = ") become plain heading lines; every line becomes a paragraph."""
    articles: list[list[str]] = []
    for raw in Path(path).read_text(encoding="utf-8").splitlines():
        s = raw.strip()
        if not s:
            continue
        heading = re.fullmatch(r"(?:= )+(.*?)(?: =)+", s)
        if heading and s.startswith("= ") and not s.startswith("= ="):
            articles.append([])
        if not articles:
            articles.append([])
        articles[-1].append(_wikitext_detokenize(heading.group(1) if heading else s))
    return ["\n\n".join(lines) for lines in articles if lines]


_PG_START = re.compile(r"^\s*\*{3}\s*START OF.*$", re.MULTILINE | re.IGNORECASE)
_PG_END = re.compile(r"^\s*(?:\*{3}\s*END OF|End of (?:the )?Project Gutenberg).*$", re.MULTILINE | re.IGNORECASE)


def strip_gutenberg_boilerplate(text: str) -> str:
    """The book between the "*** START OF ..." and "*** END OF ..." lines (an older "End of the
    Project Gutenberg ..." line also ends it); without a marker, the text from/to that end."""
    text = text.lstrip("\ufeff")
    start = _PG_START.search(text)
    if start:
        text = text[start.end() :]
    end = _PG_END.search(text)
    if end:
        text = text[: end.start()]
    return text.strip()


def _jsonl_gz_texts(path: Path) -> list[str]:
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return [json.loads(line)["text"] for line in f if line.strip()]


def dev_recipe_docs(
    corpora: str | Path, docs_per_source: int = 400, min_words: int = 50, max_words: int = 250
) -> dict[str, list[str]]:
    """The development recipe per source (DEV_POSITIVE_SOURCES, DEV_NEGATIVE_SOURCES), every source
    cut into documents of min_words..max_words words by split_documents and capped at docs_per_source
    documents spread evenly over the source:

    - wikitext: WikiText-2 test articles (detokenized), split by paragraphs;
    - gutenberg: DEV_GUTENBERG_BOOKS English books (Gutenberg header/footer stripped), the same
      number of chunks from each;
    - crawl: the Common Crawl docs of dolma_fixtures' CC-MAIN-*.jsonl.gz (exact duplicates dropped);
      long pages are cut, pages under min_words dropped;
    - sms_spam: every message (ham and spam), consecutive messages grouped into one document of up
      to max_words words, one message per paragraph: a single SMS (~15 words) is far shorter than
      any other document, and the classifier would learn length instead of quality;
    - 4chan: olmo_fixtures' 4chan threads, long threads cut into chunks.
    """
    root = Path(corpora)

    def docs(texts: list[str]) -> list[str]:
        return _spread(split_documents(texts, min_words, max_words), docs_per_source)

    out: dict[str, list[str]] = {"wikitext": docs(wikitext_articles(root / "wikitext2_test" / "wiki.test.raw"))}

    gut = root / "gutenberg"
    books = _spread(sorted([*gut.glob("*.txt"), *gut.glob("books/*.txt")]), DEV_GUTENBERG_BOOKS)
    per_book = math.ceil(docs_per_source / max(1, len(books)))
    chunks: list[str] = []
    for book in books:
        text = strip_gutenberg_boilerplate(book.read_text(encoding="utf-8", errors="replace"))
        chunks.extend(_spread(split_documents([text], min_words, max_words), per_book))
    out["gutenberg"] = _spread(chunks, docs_per_source)

    crawl = [t for p in sorted((root / "dolma_fixtures").glob("CC-MAIN-*.jsonl.gz")) for t in _jsonl_gz_texts(p)]
    out["crawl"] = docs(list(dict.fromkeys(crawl)))

    lines = (root / "sms_spam" / "SMSSpamCollection").read_text(encoding="utf-8", errors="replace").splitlines()
    messages = [ln.split("\t", 1)[1].strip() for ln in lines[1:] if "\t" in ln]  # first line: header
    out["sms_spam"] = docs(["\n\n".join(m for m in messages if m)])

    threads = [t for p in sorted((root / "olmo_fixtures").glob("4chan_*.jsonl.gz")) for t in _jsonl_gz_texts(p)]
    out["4chan"] = docs(threads)
    return out


def dev_recipe_sources(
    corpora: str | Path, docs_per_source: int = 400, min_words: int = 50, max_words: int = 250
) -> tuple[list[str], list[str]]:
    """(positives, negatives) of the development recipe: see dev_recipe_docs."""
    docs = dev_recipe_docs(corpora, docs_per_source, min_words, max_words)
    positives = [t for s in DEV_POSITIVE_SOURCES for t in docs[s]]
    negatives = [t for s in DEV_NEGATIVE_SOURCES for t in docs[s]]
    return positives, negatives
