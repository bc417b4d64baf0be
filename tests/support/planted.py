"""A stage that damages data on purpose, for the ablation honesty check (a planted difference must be found):
a seeded `fraction` of the documents get their words shuffled. The same words and bytes remain (filters and
token counts barely move); only their order, which is what a language model learns, is gone."""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np

from pipelines.hashing import document_keys, splitmix64
from pipelines.stages.base import Stage, set_column
from pipelines.typed_config import Fraction


@dataclass(frozen=True)
class ShuffleWordsConfig:
    fraction: Fraction = 0.5
    seed: int = 0


class ShuffleWords(Stage):
    """Shuffles the words (whitespace-separated; lines joined by spaces) of the documents whose hash of (seed, id)
    falls below `fraction`; keeps every document."""
    name = "shuffle_words"
    Config = ShuffleWordsConfig

    def apply(self, batch, ctx):
        ids = batch.column("id").to_pylist()
        keys = splitmix64(document_keys(ids) ^ np.uint64(self.cfg.seed))
        chosen = (keys >> np.uint64(11)).astype(np.float64) / float(1 << 53) < self.cfg.fraction
        texts = batch.column("text").to_pylist()
        for i, (key, hit) in enumerate(zip(keys.tolist(), chosen.tolist())):
            if hit:
                words = texts[i].split()
                random.Random(key).shuffle(words)
                texts[i] = " ".join(words)
        return set_column(batch, "text", texts)
