"""Heuristic quality filters (datatrove's) with a fast word splitter."""

from pipelines.filters.chain import FILTER_CLASSES, FilterChain
from pipelines.filters.words import FastWordTokenizer, fast_tokenizer_for

__all__ = ["FILTER_CLASSES", "FastWordTokenizer", "FilterChain", "fast_tokenizer_for"]
