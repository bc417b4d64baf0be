"""The README's example of stages of your own (configs/custom_stages.yaml runs them)."""

from dataclasses import dataclass

import pyarrow.compute as pc

from pipelines.records import REASON
from pipelines.stages.base import Stage, set_column
from pipelines.typed_config import PositiveInt


@dataclass(frozen=True)
class ShortDocsConfig:
    min_words: PositiveInt = 50          # checked when the config loads: `min_words: 0` is refused


class ShortDocs(Stage):
    """Drops documents of fewer than min_words whitespace-separated words."""
    name = "short_docs"
    Config = ShortDocsConfig

    def apply(self, batch, ctx):
        # the same rows in the same order; a drop is a reason in REASON ("" keeps the document)
        words = pc.list_value_length(pc.utf8_split_whitespace(batch.column("text")))
        keep = pc.greater_equal(words, self.cfg.min_words)
        return set_column(batch, REASON, pc.if_else(keep, "", "too_few_words"))


def long_enough(doc):                    # doc: id, text, source, url, metadata (a dict)
    return len(doc["text"]) >= 200 or "under_200_chars"
