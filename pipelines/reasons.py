"""Every drop and quarantine reason tokenmill's own stages give, in one place (`records.REASON` holds them).

A reason is "" for a kept document, a drop reason otherwise, or "quarantine:" + a reason when the input itself
was unusable. Reasons named elsewhere, by rule:
- the heuristic filters: "<filter>:<datatrove's reason>" (e.g. "gopher_quality:gopher_short_doc",
  "c4:too_few_sentences"; pipelines/filters/chain.py), and "<filter>:empty" for a text a ratio cannot be taken of;
- a user's stage: its own reason; a datatrove filter added by name: "<stage name>:<datatrove's reason>", or the
  stage name alone when the filter gives none; a `keep(doc)` function: the string it returns, or the stage name
  (pipelines/stages/user.py).
"""

from __future__ import annotations

REASON_EXACT = "exact_duplicate"  # exact_dedup: the same normalized text as a document that survives
REASON_NEAR = "near_duplicate"  # minhash: in a near-duplicate cluster whose smallest key survives
REASON_QUALITY = "quality"  # quality: the classifier's score is under the cut-off
REASON_DECONTAM = "decontaminated"  # decontaminate: shares a word n-gram with an evaluation suite's item
LANGUAGE = "language"  # filter: language ID's label is not one asked for, or its score is under min_score
EXTRACT_EMPTY = "extract_empty"  # extract: no main text in the HTML
EXTRACT_TIMEOUT = "extract_timeout"  # extract: trafilatura ran past extract.timeout_s
EXTRACT_ERROR = "extract_error"  # extract: trafilatura raised

# quarantine reasons (the readers; "quarantine:" is prepended by records.quarantine)
BAD_JSON = "bad_json"  # a JSON line that does not parse
NOT_OBJECT = "not_object"  # a JSON line that is not an object
MISSING_TEXT = "missing_text"  # no text field
TEXT_NOT_STRING = "text_not_string"  # a text field that is not a string
INVALID_UTF8 = "invalid_utf8"  # bytes that are not UTF-8 (the record is kept, replaced, for inspection)
TOO_LARGE = "too_large"  # a record over inputs.N.max_doc_mb, never read whole
UNREADABLE_FILE = "unreadable_file"  # a parquet file that does not open
UNREADABLE_ROW_GROUP = "unreadable_row_group"  # a parquet row group that does not decode
CORRUPT_STREAM = "corrupt_stream"  # a compressed stream cut short or damaged: the records after it are lost
