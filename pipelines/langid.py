"""fastText language identification: classify a batch of texts, and train a small LID model.

Works with any supervised fastText LID model: lid.176.bin (labels `__label__en`), GlotLID
(`__label__eng_Latn`) or one trained with `train_langid_model`. The model is loaded from a local
path only; nothing is downloaded.
"""

from __future__ import annotations

import json
import os
import random
import re
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

from pipelines.reasons import LANGUAGE as LANGUAGE_REASON
_NEWLINES = re.compile(r"[\r\n\v\f\u2028\u2029\x85]+")
# udhr2-style file name suffixes that name a script: kept in the label, GlotLID style (azj_Cyrl)
_SCRIPT_SUFFIXES = {"arab", "cyrl", "latn", "hans", "hant", "mong", "tfng", "tglg"}


def normalize_text(text: str) -> str:
    """One line, as fastText's predict requires (it splits words on whitespace itself)."""
    return _NEWLINES.sub(" ", text).strip()


def _load_fasttext(model_path: str | os.PathLike):
    # _FastText directly: fasttext.load_model prints a deprecation warning on every load
    from fasttext.FastText import _FastText

    from pipelines import storage

    return _FastText(model_path=str(storage.local_copy(model_path)))  # fastText reads local files only


class LanguageIdentifier:
    """Top-1 fastText language per text; a text is dropped ("language") when its language is not
    in `languages` (if given) or its score is below `min_score`.

    `languages` entries match a label exactly or its part before "_": "eng" matches GlotLID's
    "eng_Latn". Labels are returned without the `__label__` prefix.
    """

    def __init__(self, model_path: str | os.PathLike, languages: list[str] | None = None, min_score: float = 0.0):
        self.model_path = str(model_path)
        self.languages = frozenset(languages) if languages else None
        self.min_score = float(min_score)
        self._model = None
        self._label_prefix = "__label__"

    @property
    def model(self):
        if self._model is None:
            self._model = _load_fasttext(self.model_path)
            self._label_prefix = self._model.f.getArgs().label
        return self._model

    def __getstate__(self) -> dict[str, Any]:
        # the fastText model is not picklable: workers reload it from model_path
        return {**self.__dict__, "_model": None}

    def accepts(self, lang: str) -> bool:
        return self.languages is None or lang in self.languages or lang.split("_", 1)[0] in self.languages

    def predict(self, texts: list[str]) -> tuple[list[str], list[float]]:
        """Top-1 label and probability per text ("" and 0.0 for a text with no words)."""
        if not texts:
            return [], []
        model = self.model
        lines = [normalize_text(t) for t in texts]
        try:
            labels, probs = model.predict(lines, k=1)
        except (TypeError, UnicodeEncodeError):  # lone surrogates: the binding rejects non-UTF-8 str
            lines = [t.encode("utf-8", "replace").decode("utf-8") for t in lines]
            labels, probs = model.predict(lines, k=1)
        n = len(self._label_prefix)
        langs, scores = [], []
        for line, label, prob in zip(lines, labels, probs):
            if not line or not label:
                langs.append("")
                scores.append(0.0)
            else:
                langs.append(label[0][n:] if label[0].startswith(self._label_prefix) else label[0])
                # fastText can return a probability a hair above 1.0 (softmax + epsilon)
                scores.append(min(float(prob[0]), 1.0))
        return langs, scores

    def classify(self, texts: list[str]) -> tuple[list[str], list[float], list[str]]:
        """(langs, scores, reasons); reason "" = kept, "language" = wrong language or low score."""
        langs, scores = self.predict(texts)
        reasons = [
            "" if lang and score >= self.min_score and self.accepts(lang) else LANGUAGE_REASON
            for lang, score in zip(langs, scores)
        ]
        return langs, scores, reasons


def label_from_filename(stem: str) -> str:
    """udhr2-style file stem -> label: "eng" -> "eng", "por_BR"/"deu_1901"/"ron_1953" -> "por"/"deu"/
    "ron" (regional, orthographic and numbered variants are one language), "azj_cyrl" -> "azj_Cyrl"
    (a script suffix stays, GlotLID style)."""
    code, _, suffix = stem.partition("_")
    if suffix.lower() in _SCRIPT_SUFFIXES:
        return f"{code}_{suffix.title()}"
    return code


def load_samples_from_folder(
    folder: str | os.PathLike, label_fn: Callable[[str], str] = label_from_filename, min_chars: int = 1
) -> dict[str, list[str]]:
    """One text file per language (udhr2 layout): label -> its non-empty lines, files in name order."""
    samples: dict[str, list[str]] = {}
    for path in sorted(Path(folder).glob("*.txt")):
        lines = [ln.strip() for ln in path.read_text(encoding="utf-8", errors="replace").splitlines()]
        samples.setdefault(label_fn(path.stem), []).extend(ln for ln in lines if len(ln) >= min_chars)
    return samples


# fastText keeps state between trainings in one process: after training a model with loss "hs",
# the next training in the same process can diverge (NaN) where a fresh process does not (seen with
# fasttext-numpy2-wheel 0.9.2). Each training therefore runs in its own interpreter.
# fastText's save_model writes through a C++ stream that does not report a failed write: on a full disk it left a
# truncated model (20.5 of 51 MB) and exited 0. The script checks the saved size against the model's matrices (a
# lower bound: 4 bytes a weight), then reads the file back, before the caller may use or publish it.
_TRAIN_SCRIPT = """
import json, os, sys
import fasttext
args = json.loads(sys.argv[1])
out = args.pop("output_path")
model = fasttext.train_supervised(**args)
model.save_model(out)
need = 4 * (model.get_input_matrix().size + model.get_output_matrix().size)
size = os.path.getsize(out)
if size < need:
    sys.exit(f"TRUNCATED {size} {need}")
fasttext.load_model(out)
"""


class ModelWriteError(OSError):
    """A model file that was written short (a full disk, most likely) or does not read back."""


def _train_in_subprocess(train_file: Path, out_path: Path, args: dict[str, Any]) -> str | None:
    """Train and save; returns None on success, else the error text."""
    payload = json.dumps({**args, "input": str(train_file), "output_path": str(out_path)})
    proc = subprocess.run([sys.executable, "-c", _TRAIN_SCRIPT, payload], capture_output=True, text=True)
    if proc.returncode == 0:
        return None
    last = proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"exit code {proc.returncode}"
    if last.startswith("TRUNCATED "):
        import errno
        import shutil

        size, need = map(int, last.split()[1:])
        free = shutil.disk_usage(out_path.parent).free
        out_path.unlink(missing_ok=True)
        raise ModelWriteError(errno.ENOSPC if free < need else errno.EIO,
                              f"the fastText model was written short ({size:,} bytes; its weights alone are {need:,}; "
                              f"{free:,} bytes free there)", str(out_path))
    return last


# small, fast defaults for a LID model: character n-grams carry most of the signal. Measured on
# udhr2 (train on half of each file, ~370 labels): softmax generalizes to other text (Gutenberg
# chunks: 0.92 English identified) far better than hierarchical softmax (0.39) at equal accuracy
# on held-out udhr2 lines (0.92).
TRAIN_DEFAULTS: dict[str, Any] = {
    "dim": 16,
    "epoch": 20,
    "lr": 0.5,
    "minn": 2,
    "maxn": 4,
    "wordNgrams": 1,
    "bucket": 50_000,
    "loss": "softmax",
    "minCount": 1,
    "verbose": 0,
}


def train_langid_model(
    samples: dict[str, list[str]] | str | os.PathLike,
    out_path: str | os.PathLike,
    seed: int = 0,
    **fasttext_args: Any,
) -> Path:
    """Train a supervised fastText LID model and save it to out_path; returns out_path.

    samples: label -> texts, or a folder with one <label>.txt per language (see
    load_samples_from_folder). Deterministic: the examples are shuffled with `seed`, fastText runs
    with thread=1 and the same seed. fasttext_args override TRAIN_DEFAULTS (dim, epoch, lr, ...);
    if training diverges (NaN) the lr is halved and training restarts, up to 3 times.
    """
    if not isinstance(samples, dict):
        samples = load_samples_from_folder(samples)
    for label in samples:
        if not label or any(c.isspace() for c in label):
            raise ValueError(f"labels must be non-empty without whitespace: {label!r}")
    examples = [
        f"__label__{label} {line}"
        for label in sorted(samples)
        for line in map(normalize_text, samples[label])
        if line
    ]
    if not examples:
        raise ValueError("no training text")
    random.Random(seed).shuffle(examples)  # fastText is SGD: interleave languages

    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    train_file = out_path.with_name(out_path.name + ".train.txt")
    train_file.write_text("\n".join(examples) + "\n", encoding="utf-8")
    try:
        args = {**TRAIN_DEFAULTS, **fasttext_args, "seed": seed, "thread": 1}
        for attempt in range(4):
            error = _train_in_subprocess(train_file, out_path, args)
            if error is None:
                break
            # SGD diverges on tiny corpora at a high lr: retry with half of it (still deterministic)
            if "NaN" not in error or attempt == 3:
                raise RuntimeError(f"fastText training failed: {error}")
            args["lr"] /= 2
    finally:
        train_file.unlink(missing_ok=True)
    return out_path


__all__ = [
    "LANGUAGE_REASON",
    "LanguageIdentifier",
    "label_from_filename",
    "load_samples_from_folder",
    "normalize_text",
    "train_langid_model",
]
