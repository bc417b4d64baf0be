"""DCLM-style quality classifier: a binary fastText model, high quality ("hq") vs. the rest.

Training (`train_quality_classifier`) balances the two classes, holds out a validation split, trains
fastText deterministically (thread=1, fixed seed, in a fresh interpreter like LID training) and reports
precision / recall / F1 / ROC AUC on the validation split. `QualityScorer` gives P(positive label)
per document for any supervised fastText model, including published ones such as DCLM's
`openhermes_reddit_eli5_vs_rw_v2_bigram_200k_train.bin` (labels `__label__hq` / `__label__cc`).

Text preparation follows DCLM: a document becomes one line (its line breaks become spaces) and is
NOT lowercased. DCLM's scorer does `" ".join(text.strip().splitlines())` and feeds the cased text
to a model trained on cased text; lowercasing here would miss the cased vocabulary of such models.
"""

from __future__ import annotations

import math
import random
import re
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated, Any

import numpy as np

from pipelines import storage
from pipelines.langid import _load_fasttext, _train_in_subprocess
from pipelines.hashing import sha256_file
from pipelines.typed_config import ConfigError, PositiveFloat, PositiveInt, Range
@dataclass(frozen=True)
class QualityTrainConfig:
    seed: int = 0
    validation_fraction: Annotated[float, Range(lo=0, hi=1, hi_open=True)] = 0.1
    # both classes are downsampled to the smaller class size, and to this cap when given
    max_docs_per_class: PositiveInt | None = None
    dim: PositiveInt = 64
    epoch: PositiveInt = 5
    lr: PositiveFloat = 0.1
    word_ngrams: PositiveInt = 2
    min_count: PositiveInt = 2
    # hash buckets for word n-grams: fastText's default (2M) makes a 512 MB model at dim 64
    bucket: PositiveInt = 200_000
    positive_label: str = "hq"
    negative_label: str = "lq"

    def validate(self, key: str = "") -> None:
        at = f"{key}." if key else ""
        for name in ("positive_label", "negative_label"):
            label = getattr(self, name)
            if not label or any(c.isspace() for c in label):
                raise ConfigError(f"{at}{name}: a non-empty label without whitespace, got {label!r}")
        if self.positive_label == self.negative_label:
            raise ConfigError(f"{at}negative_label: must differ from positive_label ({self.positive_label!r})")
        if not 0.0 <= self.validation_fraction < 1.0:
            raise ConfigError(f"{at}validation_fraction: must be in [0, 1), got {self.validation_fraction}")
        if self.max_docs_per_class is not None and self.max_docs_per_class < 1:
            raise ConfigError(f"{at}max_docs_per_class: must be >= 1, got {self.max_docs_per_class}")


# --- text preparation ------------------------------------------------------------------------------


def normalize_for_fasttext(text: str) -> str:
    """One line per document: every whitespace run (newlines, tabs, Unicode spaces) becomes a single
    space, ends stripped. Case is kept, as DCLM does (see the module docstring)."""
    return " ".join(text.split())


_BLANK_LINES = re.compile(r"\n[^\S\n]*\n\s*")


def _units(text: str, max_words: int) -> list[tuple[str, int, str]]:
    """(piece, words, joiner) of at most max_words words each: paragraphs (blank-line separated);
    a longer paragraph is cut at its line breaks, a longer line into word windows. The joiner is what
    goes before the piece when it follows another piece in the same chunk."""
    units: list[tuple[str, int, str]] = []
    for para in _BLANK_LINES.split(text.replace("\r\n", "\n").replace("\r", "\n")):
        para = para.strip()
        n = len(para.split())
        if not n:
            continue
        if n <= max_words:
            units.append((para, n, "\n\n"))
            continue
        joiner = "\n\n"
        for line in para.split("\n"):
            words = line.split()
            for start in range(0, len(words), max_words):
                window = words[start : start + max_words]
                piece = line.strip() if len(words) <= max_words else " ".join(window)
                units.append((piece, len(window), joiner))
                joiner = " "
            if words:
                joiner = "\n"
    return units


def book_documents(text: str, min_words: int = 100, max_words: int = 1500) -> list[str]:
    """A plain-text book (hard-wrapped lines, paragraphs between blank lines, as Project Gutenberg's) as documents
    of at most max_words words along paragraph boundaries, each paragraph's line wraps joined by a space: the
    shape a crawl gives text (a whole book fails Gopher's 100,000-word cap, and C4's line rule would cut most of
    its wrapped lines)."""
    paras = [re.sub(r"\s*\n\s*", " ", p.strip()) for p in re.split(r"\n\s*\n", text.replace("\r\n", "\n"))
             if p.strip()]
    return split_documents(["\n\n".join(paras)], min_words, max_words)


def split_documents(texts: list[str], min_words: int = 50, max_words: int = 300) -> list[str]:
    """Cut long texts (books, articles, threads) into doc-sized chunks along paragraph boundaries.

    Consecutive paragraphs (separated by blank lines) are packed greedily into a chunk of at most
    max_words words (words = whitespace-separated tokens); a paragraph longer than that is cut at its
    line breaks, then into max_words-word windows. A chunk with fewer than min_words words (a short
    text, or a short leftover next to a long paragraph) is dropped. Paragraphs are joined with a blank
    line. Output order follows input order.
    """
    if not 0 < min_words <= max_words:
        raise ValueError(f"need 0 < min_words <= max_words, got {min_words}, {max_words}")
    chunks: list[str] = []
    for text in texts:
        parts: list[str] = []
        words = 0
        for piece, n, joiner in _units(text, max_words):
            if parts and words + n > max_words:
                if words >= min_words:
                    chunks.append("".join(parts))
                parts, words = [], 0
            parts.append(piece if not parts else joiner + piece)
            words += n
        if parts and words >= min_words:
            chunks.append("".join(parts))
    return chunks


# --- training --------------------------------------------------------------------------------------


def _dedupe(lines: list[str]) -> list[str]:
    seen: set[str] = set()
    out = []
    for line in lines:
        if line and line not in seen:
            seen.add(line)
            out.append(line)
    return out


def _binary_metrics(labels: np.ndarray, scores: np.ndarray, threshold: float) -> dict[str, float]:
    if labels.size == 0:
        return {"precision": math.nan, "recall": math.nan, "f1": math.nan, "roc_auc": math.nan}
    pred = scores >= threshold
    tp = int(np.sum(pred & labels))
    fp = int(np.sum(pred & ~labels))
    fn = int(np.sum(~pred & labels))
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1, "roc_auc": roc_auc(labels, scores)}


def train_quality_classifier(
    positives: list[str], negatives: list[str], out_path: str | Path, cfg: QualityTrainConfig = QualityTrainConfig()
) -> dict[str, Any]:
    """Train a binary fastText quality classifier, save it to out_path, evaluate it on a held-out split.

    Steps, all deterministic given cfg.seed: normalize each text to one line (normalize_for_fasttext);
    drop empty texts and exact duplicates within a class (so that a text cannot be both in training
    and validation); balance by downsampling both classes to the smaller class size (and to
    max_docs_per_class); hold out validation_fraction of each class; shuffle the training examples;
    train fastText (softmax, thread=1, seed) in a fresh interpreter; score the validation split.

    Returns model_path, sha256 (of the saved model), train_docs / validation_docs (per label),
    precision / recall / f1 at threshold 0.5 (a document is predicted positive when
    P(positive) >= 0.5), roc_auc, threshold, scores (one (label, P(positive)) per validation doc,
    for plots), train_seconds and config. Metrics are NaN when there is no validation split.
    """
    cfg.validate()
    rng = random.Random(cfg.seed)
    classes = {
        cfg.positive_label: _dedupe([normalize_for_fasttext(t) for t in positives]),
        cfg.negative_label: _dedupe([normalize_for_fasttext(t) for t in negatives]),
    }
    n = min(len(docs) for docs in classes.values())
    if cfg.max_docs_per_class is not None:
        n = min(n, cfg.max_docs_per_class)
    if n < 2:
        raise ValueError(f"need at least 2 distinct non-empty documents per class, got {n}")
    n_val = int(round(n * cfg.validation_fraction))
    if n_val >= n:
        n_val = n - 1

    train_examples: list[str] = []
    validation: list[tuple[str, str]] = []  # (label, text)
    train_docs, validation_docs = {}, {}
    for label, docs in classes.items():  # positive first, then negative: a fixed rng sequence
        chosen = rng.sample(docs, n)  # a random sample in random order
        validation.extend((label, text) for text in chosen[:n_val])
        train_examples.extend(f"__label__{label} {text}" for text in chosen[n_val:])
        train_docs[label] = n - n_val
        validation_docs[label] = n_val
    rng.shuffle(train_examples)  # fastText is SGD: interleave the classes

    dest = storage.path(out_path)
    out_path = storage.scratch_for(dest)  # fastText writes a local file; published (uploaded) once validated
    args = {
        "dim": cfg.dim,
        "epoch": cfg.epoch,
        "lr": cfg.lr,
        "wordNgrams": cfg.word_ngrams,
        "minCount": cfg.min_count,
        "bucket": cfg.bucket,
        "loss": "softmax",
        "seed": cfg.seed,
        "thread": 1,
        "verbose": 0,
    }
    with tempfile.TemporaryDirectory(dir=out_path.parent, prefix=".quality-train-") as tmp:
        train_file = Path(tmp) / "train.txt"
        train_file.write_text("\n".join(train_examples) + "\n", encoding="utf-8")
        start = time.perf_counter()
        error = _train_in_subprocess(train_file, out_path, args)
        train_seconds = time.perf_counter() - start
    if error is not None:
        raise RuntimeError(f"fastText training failed: {error}")

    threshold = 0.5
    scorer = QualityScorer(str(out_path), positive_label=cfg.positive_label)
    val_scores = scorer.score([text for _, text in validation])
    val_labels = np.array([label == cfg.positive_label for label, _ in validation], dtype=bool)
    metrics = _binary_metrics(val_labels, val_scores, threshold)
    try:
        refuse_chance_level(metrics["roc_auc"], int(val_labels.sum()), int((~val_labels).sum()))
    except ModelRejected:
        out_path.unlink(missing_ok=True)  # never published: nothing can take it for a trained model
        raise
    sha256 = sha256_file(out_path)
    storage.publish(out_path, dest)
    return {
        "model_path": str(dest),
        "sha256": sha256,
        "train_docs": train_docs,
        "validation_docs": validation_docs,
        **metrics,
        "threshold": threshold,
        "scores": [(label, float(s)) for (label, _), s in zip(validation, val_scores)],
        "train_seconds": train_seconds,
        "config": asdict(cfg),
    }


class ModelRejected(ValueError):
    """A trained classifier that does not separate its classes on the held-out split: a failed training."""


CHANCE_Z = 2.0  # an AUC within 2 standard errors of 0.5 (under the null hypothesis) is chance


def refuse_chance_level(roc_auc: float, n_pos: int, n_neg: int) -> None:
    """Raise ModelRejected when the held-out ROC AUC is within noise of 0.5. Under no separation the AUC (the
    Mann-Whitney U over n_pos x n_neg) has standard error sqrt((n_pos + n_neg + 1) / (12 n_pos n_neg)); an AUC
    closer to 0.5 than CHANCE_Z of those is indistinguishable from a coin. (No validation split, or one too small
    for even AUC 1.0 to stand out: not judged.)"""
    if math.isnan(roc_auc) or n_pos == 0 or n_neg == 0:
        return
    se = math.sqrt((n_pos + n_neg + 1) / (12 * n_pos * n_neg))
    if CHANCE_Z * se >= 0.5:
        return  # too few documents to tell even a perfect classifier from chance
    if abs(roc_auc - 0.5) < CHANCE_Z * se:
        raise ModelRejected(f"the quality classifier does not separate its classes: held-out ROC AUC {roc_auc:.3f} "
                            f"is within {CHANCE_Z:g} standard errors ({se:.3f}) of chance on {n_pos} positive and "
                            f"{n_neg} negative documents; check that the positive and negative sources differ, or "
                            "give more documents")


# --- scoring ---------------------------------------------------------------------------------------


class QualityScorer:
    """P(positive label) per document from a supervised fastText model.

    Any label set works as long as positive_label is one of the model's labels (checked on load):
    a model from train_quality_classifier ("hq"/"lq"), or DCLM's published bigram model
    ("hq"/"cc"). Picklable: the model is not pickled, a worker reloads it from model_path.
    """

    def __init__(self, model_path: str | Path, positive_label: str = "hq"):
        self.model_path = str(model_path)
        self.positive_label = positive_label
        self._model = None
        self._target = ""

    @property
    def model(self):
        if self._model is None:
            model = _load_fasttext(self.model_path)
            target = model.f.getArgs().label + self.positive_label
            labels = model.get_labels()
            if target not in labels:
                raise ValueError(
                    f"{self.model_path}: positive label {self.positive_label!r} is not one of the model's "
                    f"labels {labels}"
                )
            self._model, self._target = model, target
        return self._model

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_model": None}

    def score(self, texts: list[str]) -> np.ndarray:
        """float32 P(positive label) per text, one batched predict over all labels (k=-1).
        A text with no words scores 0.0."""
        out = np.zeros(len(texts), dtype=np.float32)
        if not texts:
            return out
        model = self.model
        lines = [normalize_for_fasttext(t) for t in texts]
        try:
            labels, probs = model.predict(lines, k=-1)
        except (TypeError, UnicodeEncodeError):  # lone surrogates: the binding rejects non-UTF-8 str
            lines = [t.encode("utf-8", "replace").decode("utf-8") for t in lines]
            labels, probs = model.predict(lines, k=-1)
        target = self._target
        for i, (line, row_labels, row_probs) in enumerate(zip(lines, labels, probs)):
            if not line:
                continue
            for label, prob in zip(row_labels, row_probs):
                if label == target:
                    # fastText can return a probability a hair above 1.0 (softmax + epsilon)
                    out[i] = min(float(prob), 1.0)
                    break
        return out


# --- metrics and cut-offs --------------------------------------------------------------------------


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve by ranks (Mann-Whitney U / (n_pos * n_neg)); tied scores get their
    average rank, i.e. a positive tied with a negative counts 1/2. NaN when a class is absent."""
    labels = np.asarray(labels).astype(bool).ravel()
    scores = np.asarray(scores, dtype=np.float64).ravel()
    if labels.shape != scores.shape:
        raise ValueError(f"labels and scores differ in length: {labels.size} vs {scores.size}")
    if np.isnan(scores).any():
        raise ValueError("scores contain NaN")
    n_pos = int(labels.sum())
    n_neg = labels.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return math.nan
    _, inverse, counts = np.unique(scores, return_inverse=True, return_counts=True)
    # 1-based average rank of each distinct value: (first rank + last rank) / 2
    last = np.cumsum(counts)
    avg_rank = last - (counts - 1) / 2.0
    rank_sum = float(avg_rank[inverse][labels].sum())
    return (rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg)


__all__ = [
    "QualityScorer",
    "QualityTrainConfig",
    "normalize_for_fasttext",
    "roc_auc",
    "book_documents",
    "split_documents",
    "train_quality_classifier",
]
