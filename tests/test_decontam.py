"""Decontamination (pipelines/decontam.py, pipelines/stages/decontaminate.py): word n-grams that ignore case and
punctuation but not order; short evaluation texts matched whole; the stage drops exactly the documents that hold
an evaluation item's n-gram, names the item, and counts per evaluation set; the shared task files index whole."""

from __future__ import annotations

import gzip
import json

import pyarrow as pa
import pytest

from pipelines.decontam import MIN_WORDS, NgramIndex, build_index, words
from pipelines.evalsets import EvalSuiteConfig, TaskConfig, TextSetConfig, suite_texts
from pipelines.records import REASON, STAGE_SCHEMA, load_metadata
from pipelines.stages import ShardContext
from pipelines.stages.decontaminate import DROPPED_TAG, DecontaminateConfig, DecontaminateStage
from repo_paths import CORPORA, DOLMA_CRAWL, EVALS

QUESTION = ("Which statement best explains why photosynthesis is the foundation of most food webs? Sunlight is the "
            "source of energy for nearly all ecosystems.")
SHORT = "The man turned on the faucet, therefore water flowed from the spout."  # 12 words


@pytest.fixture(scope="module")
def index() -> NgramIndex:
    return build_index([("arc", "7", [QUESTION]), ("copa", "3", [SHORT]), ("tiny", "0", ["too short to check"])], 13)


def test_an_item_is_matched_whatever_the_case_and_punctuation_but_not_out_of_order(index):
    assert words("Sunlight, is THE source!") == ["sunlight", "is", "the", "source"]
    doc = "notes: WHICH statement best explains why photosynthesis is the foundation of most food webs..."
    item, shared = index.match(doc)
    assert item == "arc#7" and shared == ("which statement best explains why photosynthesis is the foundation of most "
                                          "food webs")
    assert index.match("which statement best explains why photosynthesis is the foundation of most food") is None
    shuffled = "statement which best explains why photosynthesis is the foundation of most food webs"
    assert index.match(shuffled) is None


def test_short_items_are_matched_whole_and_very_short_ones_not_at_all(index):
    assert index.short == [12] and len(words(SHORT)) == 12
    item, shared = index.match(f"Yesterday: {SHORT.upper()} And then the kettle.")
    assert item == "copa#3" and shared == " ".join(words(SHORT))
    assert index.match("the man turned on the faucet therefore water flowed from the") is None  # 11 of its words
    assert len(words("too short to check")) < MIN_WORDS and index.match("we said too short to check here") is None


def test_the_index_survives_a_round_trip(index, tmp_path):
    index.save(tmp_path / "i.npz")
    back = NgramIndex.load(tmp_path / "i.npz")
    assert (back.keys == index.keys).all() and (back.item == index.item).all()
    assert (back.n, back.items, back.sets, back.short) == (index.n, index.items, index.sets, index.short)


def test_the_stage_drops_exactly_the_contaminated_documents_and_names_the_item(index, tmp_path):
    with gzip.open(CORPORA / DOLMA_CRAWL, "rt", encoding="utf-8") as f:
        crawl = [json.loads(line) for line in f][:120]
    texts = [d["text"] for d in crawl]
    texts[17] = texts[17] + "\n" + QUESTION  # a page that quotes the evaluation item
    texts[60] = SHORT
    index.save(tmp_path / "abc-n13.npz")
    stage = DecontaminateStage(DecontaminateConfig(enabled=True, suite="unused.yaml",
                                                   index_path=str(tmp_path / "abc-n13.npz")))
    batch = pa.Table.from_pydict({"id": [f"c#{k}" for k in range(len(texts))], "text": texts,
                                  "source": ["c"] * len(texts), "url": [""] * len(texts),
                                  "metadata": ["{}"] * len(texts), REASON: [""] * len(texts)}, schema=STAGE_SCHEMA)
    ctx = ShardContext("c/00000")
    stage.open_shard(ctx)
    out = stage.apply(batch, ctx)
    reasons = out.column(REASON).to_pylist()
    assert [k for k, r in enumerate(reasons) if r] == [17, 60] and reasons[17] == "decontaminated"
    meta = load_metadata(out.column("metadata")[17].as_py())
    assert meta["decontam_match"] == "arc#7" and meta["decontam_words"].startswith("which statement best")
    report = stage.report([stage.close_shard(ctx)], {})
    assert report.metrics == {"matched.arc": 1.0, "matched.copa": 1.0, "matched.tiny": 0.0}
    assert report.tags[DROPPED_TAG] == "2" and report.models[0][2] == "abc"
    assert stage.params() == {"ngram": 13, "index": "abc-n13.npz"}  # the index by its name (the digest), not path


def test_every_item_of_the_shared_task_files_is_indexed(tmp_path):
    if not EVALS.is_dir():
        pytest.skip(f"the shared evaluation sets are not at {EVALS}")
    suite = EvalSuiteConfig("all", tasks=[TaskConfig("arc_easy", str(EVALS / "arc_easy.jsonl"), "mc", max_items=5),
                                          TaskConfig("copa", str(EVALS / "copa.jsonl"), "mc")],
                            texts=[TextSetConfig("wiki", str(CORPORA / "wikitext2_test" / "wiki.test.raw"), "text",
                                                 max_doc_chars=100)])
    items = suite_texts(suite)
    assert len(items) == 2376 + 100 + 1  # the caps choose what is scored, not what training may see
    assert items[-1][0] == "wiki" and len(items[-1][2][0]) > 1_000_000
    index = build_index(items, 13)
    arc = json.loads((EVALS / "arc_easy.jsonl").read_text().splitlines()[41])
    assert index.match(f"{arc['query']} {arc['choices'][arc['gold']]}")[0] == "arc_easy#41"
    wiki = (CORPORA / "wikitext2_test" / "wiki.test.raw").read_text(encoding="utf-8")
    assert index.match(wiki[500_000:501_000])[0] == "wiki#0"
