"""SentencePiece BPE tokenizer: deterministic training sample, training, and fast lossless encoding.

Choices (the same for every tokenizer tokenmill trains):
- Lossless: `normalization_rule_name="identity"`, no dummy prefix, extra whitespace kept, so
  `decode(encode(text)) == text` for any text (no NFKC folding: "ﬁ" stays "ﬁ", tabs and runs of
  spaces survive). Characters outside the vocabulary (emoji, CJK absent from the sample, control
  characters, "\\n") are encoded as UTF-8 byte pieces `<0x..>` (byte_fallback), never `<unk>`.
- Digits are split into single-digit pieces (split_digits), and every printable ASCII character is
  a piece of its own (required_chars), however rare in the sample.
- Special ids: unk=0, bos=1, eos=2, pad=3, then the 256 byte pieces, then the learned pieces.
  Special pieces are control symbols: the literal text "</s>" in a document is encoded as ordinary
  characters, never as the eos id.
- Training reads each document as its lines (split on "\\n"), so no learned piece contains "\\n".
  `Tokenizer.encode_batch` relies on this: it encodes the lines of every document as one batch and
  joins them with the newline's byte piece, which gives exactly the ids of encoding the whole
  document (checked when the model is loaded, see `_lines_are_independent`) and is about 3x faster
  on one core: SentencePiece's BPE encoder slows down as one input string grows (about 5 MB/s on a
  10 kB string, under 2 MB/s on a 3 MB book), while short lines keep it fast (tests/benchmarks/
  bench_tokenize.py: 1.8 MB/s whole books vs 5.3 MB/s line-wise on the 61 MB of Gutenberg).
- Training uses one thread and never samples inside SentencePiece (every sentence given is used),
  so the same texts give a byte-identical .model file; the sample of documents is the `sample_docs`
  smallest `sample_key(id, seed)`, from document ids alone (pipelines/stages/tokenize.py collects it).
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

import numpy as np

from pipelines import storage
from pipelines.typed_config import PositiveInt, Range

# SentencePiece skips training sentences longer than this many bytes; longer lines are cut at spaces.
MAX_SENTENCE_BYTES = 4192
ENCODE_CHUNK_CHARS = 1 << 21
REQUIRED_CHARS = "".join(chr(c) for c in range(0x21, 0x7F))


@dataclass(frozen=True)
class TokenizerConfig:
    vocab_size: Annotated[int, Range(lo=300)] = 8000
    model_type: Literal["bpe", "unigram"] = "bpe"
    byte_fallback: bool = True
    split_digits: bool = True
    # lower it for many scripts with a small vocabulary (rare chars -> bytes)
    character_coverage: Annotated[float, Range(lo=0, hi=1, lo_open=True)] = 0.9995
    sample_docs: PositiveInt = 20000  # documents sampled (deterministically, by id hash) to train on
    seed: int = 0
    bos: str = "<s>"
    eos: str = "</s>"
    pad: str = "<pad>"
    unk: str = "<unk>"


SPECIAL_IDS = {"unk": 0, "bos": 1, "eos": 2, "pad": 3}


def token_dtype(vocab_size: int) -> np.dtype:
    """Smallest unsigned dtype holding ids 0..vocab_size-1: uint16 up to 65,536 entries, else uint32."""
    if vocab_size <= 0:
        raise ValueError(f"vocab_size must be positive, got {vocab_size}")
    return np.dtype(np.uint16) if vocab_size <= 1 << 16 else np.dtype(np.uint32)


def sample_key(doc_id: str, seed: int) -> int:
    """The 64-bit sampling key of one document: a hash of (seed, id), nothing else."""
    digest = hashlib.blake2b(f"{seed}\x00{doc_id}".encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def training_sentences(texts: Iterable[str], max_bytes: int = MAX_SENTENCE_BYTES) -> Iterator[str]:
    """Each document's non-blank lines, lines over `max_bytes` UTF-8 bytes cut at spaces (or hard)."""
    for text in texts:
        for line in text.split("\n"):
            if not line.strip():
                continue
            if len(line.encode("utf-8")) <= max_bytes:
                yield line
                continue
            yield from _cut_line(line, max_bytes)


def _cut_line(line: str, max_bytes: int) -> Iterator[str]:
    # max_bytes // 4 characters never exceed max_bytes bytes in UTF-8
    step = max(max_bytes // 4, 1)
    start = 0
    while start < len(line):
        stop = min(start + step, len(line))
        if stop < len(line):
            space = line.rfind(" ", start + 1, stop)
            if space > start:
                stop = space
        yield line[start:stop]
        start = stop


def _trainer_options(cfg: TokenizerConfig) -> dict:
    return dict(
        vocab_size=cfg.vocab_size,
        model_type=cfg.model_type,
        byte_fallback=cfg.byte_fallback,
        split_digits=cfg.split_digits,
        character_coverage=cfg.character_coverage,
        normalization_rule_name="identity",
        add_dummy_prefix=False,
        remove_extra_whitespaces=False,
        allow_whitespace_only_pieces=True,
        split_by_whitespace=True,
        # every printable ASCII character is a piece whatever the sample (character_coverage would
        # otherwise drop a rare one: a 4-book Gutenberg sample left out the digit "6")
        required_chars=REQUIRED_CHARS,
        max_sentence_length=MAX_SENTENCE_BYTES,
        input_sentence_size=0,  # use every sentence given: the sample is chosen upstream, by id
        shuffle_input_sentence=False,
        num_threads=1,  # deterministic: the same texts give a byte-identical model
        unk_id=SPECIAL_IDS["unk"],
        bos_id=SPECIAL_IDS["bos"],
        eos_id=SPECIAL_IDS["eos"],
        pad_id=SPECIAL_IDS["pad"],
        unk_piece=cfg.unk,
        bos_piece=cfg.bos,
        eos_piece=cfg.eos,
        pad_piece=cfg.pad,
        minloglevel=2,
    )


def train_tokenizer(texts: Iterable[str], out_prefix, cfg: TokenizerConfig) -> dict:
    """Train on `texts` (documents; each is read as its lines) and write <out_prefix>.model/.vocab.

    The model is collected in memory (not written by SentencePiece under `out_prefix`), so the
    output path is not recorded in it: the same texts and config give the same bytes anywhere.
    """
    import sentencepiece as spm

    out_prefix = storage.path(out_prefix)
    spm.SetRandomGeneratorSeed(cfg.seed)
    model = io.BytesIO()
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=training_sentences(texts), model_writer=model, **_trainer_options(cfg)
        )
    except RuntimeError as exc:
        raise ValueError(f"sentencepiece could not train a {cfg.vocab_size}-piece {cfg.model_type} model: {exc}") from None
    proto = model.getvalue()

    model_path = out_prefix.with_name(out_prefix.name + ".model")
    vocab_path = out_prefix.with_name(out_prefix.name + ".vocab")
    storage.write_atomic(model_path, proto)

    sp = spm.SentencePieceProcessor(model_proto=proto)
    lines = [f"{sp.id_to_piece(i)}\t{sp.get_score(i):g}\n" for i in range(sp.get_piece_size())]
    storage.write_atomic(vocab_path, "".join(lines))
    return {
        "model_path": str(model_path),
        "vocab_path": str(vocab_path),
        "sha256": hashlib.sha256(proto).hexdigest(),
        "vocab_size": sp.get_piece_size(),
        "special_ids": {"bos": sp.bos_id(), "eos": sp.eos_id(), "pad": sp.pad_id(), "unk": sp.unk_id()},
    }


def _reload(model_path: str, sha256: str) -> "Tokenizer":
    tok = Tokenizer(model_path)
    if tok.sha256 != sha256:
        raise ValueError(f"tokenizer {model_path} changed since it was pickled (sha256 {tok.sha256[:12]}..., expected {sha256[:12]}...)")
    return tok


class Tokenizer:
    """A loaded SentencePiece model. Pickles as its path (and sha256, checked when unpickled)."""

    def __init__(self, model_path: str | Path):
        import sentencepiece as spm

        self.model_path = str(model_path)
        proto = storage.path(model_path).read_bytes()
        self.sha256 = hashlib.sha256(proto).hexdigest()
        self._sp = spm.SentencePieceProcessor(model_proto=proto)
        self.vocab_size = self._sp.get_piece_size()
        self.bos_id = self._sp.bos_id()
        self.eos_id = self._sp.eos_id()
        self.pad_id = self._sp.pad_id()
        self.unk_id = self._sp.unk_id()
        self.dtype = token_dtype(self.vocab_size)
        self._newline = np.asarray(self._sp.encode("\n", out_type=int), dtype=np.int32)
        self.lines_are_independent = self._lines_are_independent()

    def __reduce__(self):
        return (_reload, (self.model_path, self.sha256))

    def _lines_are_independent(self) -> bool:
        """True when encoding a text's lines separately and joining them with the newline's ids
        gives exactly the ids of the whole text: no piece contains "\\n", and no normalization
        (dummy prefix, whitespace folding) looks across a line break."""
        sp = self._sp
        if any("\n" in sp.id_to_piece(i) for i in range(sp.get_piece_size())):
            return False
        probes = ["a\nb", " a \n  b ", "\n\nx\n", "1\n2", "x\r\ny", "\n"]
        return all(np.array_equal(self._encode_lines([p])[0], sp.encode(p, out_type=int)) for p in probes)

    def _encode_lines(self, texts: list[str], num_threads: int = 1) -> list[np.ndarray]:
        split = [t.split("\n") for t in texts]
        flat = [line for lines in split for line in lines]
        encoded = self._sp.encode(flat, out_type="numpy", num_threads=num_threads)
        out, pos = [], 0
        for lines in split:
            parts = encoded[pos : pos + len(lines)]
            pos += len(lines)
            if len(parts) == 1:
                out.append(parts[0])
                continue
            joined = [parts[0]]
            for p in parts[1:]:
                joined.append(self._newline)
                joined.append(p)
            out.append(np.concatenate(joined))
        return out

    def encode_batch(self, texts: list[str], num_threads: int = 1) -> list[np.ndarray]:
        """Token ids of each text (no bos/eos added), as arrays of `self.dtype` (uint16/uint32)."""
        texts = list(texts)
        out: list[np.ndarray] = []
        # batches of about ENCODE_CHUNK_CHARS characters: enough lines for num_threads, bounded memory
        start = 0
        while start < len(texts):
            stop, chars = start, 0
            while stop < len(texts) and (stop == start or chars < ENCODE_CHUNK_CHARS):
                chars += len(texts[stop])
                stop += 1
            chunk = texts[start:stop]
            if self.lines_are_independent:
                encoded = self._encode_lines(chunk, num_threads)
            else:
                encoded = self._sp.encode(chunk, out_type="numpy", num_threads=num_threads)
            out.extend(a.astype(self.dtype) for a in encoded)
            start = stop
        return out

    def encode(self, text: str) -> np.ndarray:
        return self.encode_batch([text])[0]

    def decode(self, ids) -> str:
        return self._sp.decode(np.asarray(ids, dtype=np.int64).ravel().tolist())

    def id_to_piece(self, i: int) -> str:
        return self._sp.id_to_piece(int(i))

    def piece_to_id(self, piece: str) -> int:
        return self._sp.piece_to_id(piece)

    def token_bytes(self) -> np.ndarray:
        """int64 per id: the UTF-8 bytes the piece stands for in text ("▁" a space, a byte-fallback piece one
        byte, control and unknown pieces none), so a token sequence's bytes are a sum (bits per byte of
        validation windows). A document's first piece counts the space SentencePiece's dummy prefix adds and
        decoding drops: at most one byte per document."""
        sp = self._sp
        out = np.zeros(self.vocab_size, dtype=np.int64)
        for i in range(self.vocab_size):
            if sp.is_byte(i):
                out[i] = 1
            elif not (sp.is_control(i) or sp.is_unknown(i)):
                out[i] = len(sp.id_to_piece(i).replace("▁", " ").encode("utf-8"))
        return out

    @property
    def processor(self):
        """The underlying sentencepiece.SentencePieceProcessor."""
        return self._sp
