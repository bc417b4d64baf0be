"""SentencePiece BPE tokenizer on real text: lossless round trip, special ids, digits, byte fallback,
deterministic training and sampling, the fast line-wise encoder, token dtypes."""

from __future__ import annotations

import pickle
import random
from pathlib import Path

import numpy as np
import pytest

from pipelines.tokenizer import (
    SPECIAL_IDS,
    Tokenizer,
    TokenizerConfig,
    token_dtype,
    train_tokenizer,
    training_sentences,
)
from reference import sample_for_training

CFG = TokenizerConfig(vocab_size=8000)


def gutenberg_books(corpora: Path) -> dict[str, str]:
    root = corpora / "gutenberg"
    return {p.relative_to(root).as_posix(): p.read_text(encoding="utf-8") for p in sorted(root.glob("pg*.txt"))}


@pytest.fixture(scope="module")
def books(corpora) -> dict[str, str]:
    return gutenberg_books(corpora)


@pytest.fixture(scope="module")
def training_texts(books) -> list[str]:
    ids = sorted(books)
    return sample_for_training(ids, [books[i] for i in ids], n=4, seed=CFG.seed)


@pytest.fixture(scope="module")
def trained(training_texts, tmp_path_factory) -> dict:
    return train_tokenizer(training_texts, tmp_path_factory.mktemp("tok") / "gutenberg", CFG)


@pytest.fixture(scope="module")
def tok(trained) -> Tokenizer:
    return Tokenizer(trained["model_path"])


def held_out_texts(corpora: Path, books: dict[str, str], training_texts: list[str]) -> dict[str, str]:
    unseen_book = next(name for name, text in books.items() if text not in training_texts)
    return {
        "wikitext2_test": (corpora / "wikitext2_test" / "wiki.test.raw").read_text(encoding="utf-8")[:300_000],
        "tinyshakespeare": (corpora / "tinyshakespeare" / "input.txt").read_text(encoding="utf-8")[:300_000],
        unseen_book: books[unseen_book][:300_000],
    }


def test_round_trip_is_lossless_on_real_text(tok, corpora, books, training_texts):
    texts = held_out_texts(corpora, books, training_texts)
    encoded = tok.encode_batch(list(texts.values()))
    for (name, text), ids in zip(texts.items(), encoded):
        assert ids.dtype == np.uint16
        assert tok.decode(ids) == text, name  # identity normalization: exact, whitespace and all
        assert tok.unk_id not in ids, name
        assert len(ids) < len(text.encode("utf-8")) / 2.5, name  # it does compress


def test_special_tokens_have_fixed_ids(trained, tok):
    assert trained["special_ids"] == {"bos": 1, "eos": 2, "pad": 3, "unk": 0} == {k: SPECIAL_IDS[k] for k in trained["special_ids"]}
    assert (tok.unk_id, tok.bos_id, tok.eos_id, tok.pad_id) == (0, 1, 2, 3)
    assert [tok.id_to_piece(i) for i in range(4)] == ["<unk>", "<s>", "</s>", "<pad>"]
    assert tok.vocab_size == trained["vocab_size"] == CFG.vocab_size
    assert tok.id_to_piece(4) == "<0x00>" and tok.id_to_piece(4 + 255) == "<0xFF>"
    # a document that contains the text "</s>" or "<pad>" cannot inject control ids
    ids = tok.encode("end of text </s> then <s> and <pad>")
    assert not set(ids.tolist()) & {0, 1, 2, 3}
    assert tok.decode(ids) == "end of text </s> then <s> and <pad>"


def test_digits_are_split(tok):
    pieces = [tok.id_to_piece(i) for i in range(tok.vocab_size) if not tok.processor.is_byte(i)]
    assert not [p for p in pieces if sum(c.isdigit() for c in p) > 1]
    assert all(str(d) in pieces for d in range(10))
    ids = tok.encode("In 1865, 40,000 men and 2024 ships.")
    digit_pieces = [tok.id_to_piece(i) for i in ids if any(c.isdigit() for c in tok.id_to_piece(i))]
    assert [p.lstrip("▁") for p in digit_pieces] == list("186540000" "2024")


def test_byte_fallback_encodes_unseen_characters_without_unk(tok, training_texts):
    text = "Rocket 🚀, kanji 漢字テスト, sparkles ✨ and ǅ\u200b\x00 end"
    for ch in "🚀漢字✨":
        assert not any(ch in t for t in training_texts)
    ids = tok.encode(text)
    assert tok.unk_id not in ids
    pieces = [tok.id_to_piece(i) for i in ids]
    assert ["<0xF0>", "<0x9F>", "<0x9A>", "<0x80>"] == pieces[pieces.index("<0xF0>") : pieces.index("<0xF0>") + 4]
    assert tok.decode(ids) == text


def test_training_is_deterministic(trained, training_texts, tmp_path):
    again = train_tokenizer(list(reversed(training_texts)), tmp_path / "elsewhere" / "other_name", CFG)
    assert again["sha256"] == trained["sha256"]
    assert Path(again["model_path"]).read_bytes() == Path(trained["model_path"]).read_bytes()
    assert Path(again["vocab_path"]).read_text() == Path(trained["vocab_path"]).read_text()
    different = train_tokenizer(training_texts, tmp_path / "seven", TokenizerConfig(vocab_size=7000))
    assert different["sha256"] != trained["sha256"] and different["vocab_size"] == 7000


def test_sample_is_independent_of_order_and_partitioning(books):
    ids = sorted(books)
    texts = [books[i] for i in ids]
    sample = sample_for_training(ids, texts, n=5, seed=0)
    assert len(sample) == 5 and len(set(sample)) == 5
    shuffled = list(zip(ids, texts))
    random.Random(7).shuffle(shuffled)
    assert sample_for_training([i for i, _ in shuffled], [t for _, t in shuffled], n=5, seed=0) == sample
    # per-partition samples, then a sample of their union: the same documents
    parts = [shuffled[k::3] for k in range(3)]
    id_of = dict(zip(texts, ids))
    merged = [t for part in parts for t in sample_for_training([i for i, _ in part], [t for _, t in part], n=5, seed=0)]
    assert sample_for_training([id_of[t] for t in merged], merged, n=5, seed=0) == sample
    assert sample_for_training(ids, texts, n=5, seed=1) != sample
    assert sample_for_training(ids, texts, n=100, seed=0) == sample_for_training(ids[::-1], texts[::-1], n=100, seed=0)


def test_training_sentences_are_lines_within_sentencepiece_limit():
    long_line = " ".join(["word"] * 3000)  # 14,999 bytes: SentencePiece would skip it whole
    sentences = list(training_sentences(["a\n\n  \nb c\n" + long_line]))
    assert sentences[:2] == ["a", "b c"]
    assert all(len(s.encode()) <= 4192 and "\n" not in s for s in sentences)
    assert "".join(sentences[2:]) == long_line


def test_line_wise_batch_encoding_equals_whole_document_encoding(tok, corpora, books, training_texts):
    assert tok.lines_are_independent
    texts = list(held_out_texts(corpora, books, training_texts).values())
    texts = [t[:100_000] for t in texts] + ["", "\n", "no newline", "\n\n a  \r\n\tb\n", "x" * 5000 + "\n🚀\n"]
    sp = tok.processor
    for ids, ids2, text in zip(tok.encode_batch(texts), tok.encode_batch(texts, num_threads=2), texts):
        expected = np.asarray(sp.encode(text, out_type=int), dtype=np.int64)
        assert np.array_equal(ids.astype(np.int64), expected)
        assert np.array_equal(ids, ids2)


def test_tokenizer_pickles_as_its_path(tok, trained, tmp_path):
    again = pickle.loads(pickle.dumps(tok))
    assert again.sha256 == tok.sha256 == trained["sha256"]
    assert np.array_equal(again.encode("Call me Ishmael."), tok.encode("Call me Ishmael."))
    assert len(pickle.dumps(tok)) < 500  # the path, not the model
    # a model file replaced under the same path is refused when unpickled
    copy = tmp_path / "copy.model"
    copy.write_bytes(Path(trained["model_path"]).read_bytes())
    blob = pickle.dumps(Tokenizer(copy))
    copy.write_bytes(Path(trained["model_path"]).read_bytes()[:-1] + b"\x01")
    with pytest.raises(ValueError, match="changed since it was pickled"):
        pickle.loads(blob)


def test_token_dtype_switches_to_uint32_above_65536_pieces():
    assert token_dtype(8000) == np.uint16
    assert token_dtype(65535) == np.uint16
    assert token_dtype(65536) == np.uint16  # ids 0..65535 still fit
    assert token_dtype(65537) == np.uint32
    assert token_dtype(200_000) == np.uint32
    with pytest.raises(ValueError):
        token_dtype(0)


def test_vocab_too_large_for_the_sample_fails_clearly(tmp_path):
    with pytest.raises(ValueError, match="could not train a 50000-piece"):
        train_tokenizer(["just a few words here\nand there"], tmp_path / "tiny", TokenizerConfig(vocab_size=50000))


def test_token_bytes_sum_to_the_utf8_bytes_of_the_text(tok, books):
    """Bits per byte of validation windows rest on this: a token sequence's bytes are the sum of its pieces'
    (byte-fallback pieces one byte each), plus the dummy-prefix space of a document's first piece."""
    table = tok.token_bytes()
    assert table[SPECIAL_IDS["eos"]] == 0 and table.min() >= 0
    texts = [books[k][i * 5000:(i + 1) * 5000] for i, k in enumerate(sorted(books)[:5])]
    texts += ["naïve café — 東京 🚀 x\ty\n\nz", "12345 + 678 = 7023", "  leading spaces and trailing  "]
    for text in texts:
        ids = tok.encode(text)
        prefix = int(tok.id_to_piece(ids[0]).startswith("\u2581") and not text.startswith(" "))
        assert int(table[ids].sum()) == len(text.encode("utf-8")) + prefix, text[:40]
