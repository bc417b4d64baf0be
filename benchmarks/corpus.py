"""The benchmark corpus, built from ../shared/corpora (never copied into the repository):

- every Gutenberg book (English and French) cut into ~4 KB documents at paragraph boundaries,
- the Common Crawl documents of dolma_fixtures, WikiText-2, 4chan threads and C4 documents of
  olmo_fixtures (web-like text the filters have work to do on),
- planted duplicates, until the corpus reaches the target size: exact copies (30%) and near copies with
  2%, 5% or 10% of their words replaced (70%), of documents drawn at random.

Deterministic for a given seed and size; written as `part-NN.jsonl.gz` files of {"id", "text"} lines
(ids are unique; a planted copy's id names its original and edit rate, for the agreement report).
"""

from __future__ import annotations

import gzip
import json
import random
from pathlib import Path

CORPORA = Path(__file__).resolve().parents[2] / "shared" / "corpora"
DOC_BYTES = 4000


def _paragraph_docs(text: str) -> list[str]:
    docs, cur, size = [], [], 0
    for para in text.split("\n\n"):
        cur.append(para)
        size += len(para.encode("utf-8")) + 2
        if size >= DOC_BYTES:
            docs.append("\n\n".join(cur).strip())
            cur, size = [], 0
    if cur and "".join(cur).strip():
        docs.append("\n\n".join(cur).strip())
    return [d for d in docs if d]


def base_documents() -> list[tuple[str, str]]:
    if not CORPORA.is_dir():
        raise SystemExit(f"benchmark corpora not found at {CORPORA}")
    docs: list[tuple[str, str]] = []
    books = sorted((CORPORA / "gutenberg").rglob("*.txt"))
    for p in books:
        rel = p.relative_to(CORPORA / "gutenberg").as_posix()
        for i, d in enumerate(_paragraph_docs(p.read_text(encoding="utf-8", errors="replace"))):
            docs.append((f"gutenberg/{rel}/{i:05d}", d))
    for p in sorted((CORPORA / "dolma_fixtures").glob("*.jsonl.gz")):
        with gzip.open(p, "rt", encoding="utf-8") as f:
            for i, line in enumerate(f):
                docs.append((f"dolma/{p.name}/{i:05d}", json.loads(line)["text"]))
    wiki = (CORPORA / "wikitext2_test" / "wiki.test.raw").read_text(encoding="utf-8")
    for i, d in enumerate(_paragraph_docs(wiki)):
        docs.append((f"wikitext/{i:05d}", d))
    for p in sorted((CORPORA / "olmo_fixtures").rglob("*.json*")):
        opener = gzip.open if p.name.endswith(".gz") else open
        try:
            with opener(p, "rt", encoding="utf-8") as f:
                for i, line in enumerate(f):
                    text = json.loads(line).get("text")
                    if isinstance(text, str) and text.strip():
                        docs.append((f"olmo/{p.name}/{i:05d}", text))
        except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
            continue
    return docs


def _edit(text: str, rate: float, rng: random.Random) -> str:
    words = text.split(" ")
    for k in rng.sample(range(len(words)), max(1, int(rate * len(words)))):
        words[k] = rng.choice(("the", "a", "of", "and", "lorem", "ipsum", "zyx"))
    return " ".join(words)


def build(out_dir: Path, target_mb: float, files: int = 16, seed: int = 0) -> dict:
    """Write the corpus (or reuse it when its stamp matches); return its description."""
    out_dir = Path(out_dir)
    stamp = {"target_mb": target_mb, "files": files, "seed": seed, "version": 1}
    if (out_dir / "corpus.json").is_file():
        info = json.loads((out_dir / "corpus.json").read_text())
        if info["stamp"] == stamp:
            return info
    rng = random.Random(seed)
    base = base_documents()
    base_bytes = sum(len(t.encode("utf-8")) for _, t in base)
    target = target_mb * 1e6
    docs = list(base)
    if target < base_bytes:  # a smaller corpus: a seeded sample of the base documents
        rng.shuffle(docs)
        keep, size = [], 0
        for d in docs:
            if size >= target * 0.75:
                break
            keep.append(d)
            size += len(d[1].encode("utf-8"))
        docs, base_bytes = keep, size
    planted = {"exact": 0, "near_0.02": 0, "near_0.05": 0, "near_0.10": 0}
    size = base_bytes
    originals = list(docs)
    n = 0
    while size < target:
        doc_id, text = rng.choice(originals)
        r = rng.random()
        if r < 0.3:
            copy, kind = text, "exact"
        else:
            rate = (0.02, 0.05, 0.10)[int((r - 0.3) / 0.7 * 3)]
            copy, kind = _edit(text, rate, rng), f"near_{rate:.2f}"
        planted[kind] += 1
        docs.append((f"copy/{kind}/{n:07d}/{doc_id}", copy))
        size += len(copy.encode("utf-8"))
        n += 1
    rng.shuffle(docs)
    out_dir.mkdir(parents=True, exist_ok=True)
    for old in out_dir.glob("part-*.jsonl.gz"):
        old.unlink()
    handles = [gzip.open(out_dir / f"part-{k:02d}.jsonl.gz", "wt", encoding="utf-8", compresslevel=1)
               for k in range(files)]
    for i, (doc_id, text) in enumerate(docs):
        handles[i % files].write(json.dumps({"id": doc_id, "text": text}, ensure_ascii=False) + "\n")
    for h in handles:
        h.close()
    info = {"stamp": stamp, "documents": len(docs), "mb": round(size / 1e6, 1), "planted": planted,
            "base_documents": len(originals), "files": files}
    (out_dir / "corpus.json").write_text(json.dumps(info, indent=1))
    return info
