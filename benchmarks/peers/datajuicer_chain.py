"""data-juicer 1.6.1 (PyPI `py-data-juicer`, CPU, standalone DefaultExecutor) run of the FineWeb-style chain.

Usage (with data-juicer's venv python):
    python datajuicer_chain.py --input DIR --output DIR --workers 2

It writes two YAML configs (OUTPUT/_work/filters.yaml, dedup.yaml; `np: --workers`, a fresh HF-datasets cache under
OUTPUT/_work, `skip_op_error: false`) and runs them with data_juicer's own API (init_configs + DefaultExecutor):
1. filters  (loads DIR/*.jsonl.gz)
   word_repetition_filter(rep_len=5, max_ratio=0.15)          Gopher repetition (one n only, see MISMATCHES.md)
   words_num_filter(50..100000)                               Gopher word count
   stopwords_filter(local list of the 8 Gopher stop words, ratio > 0)   Gopher stop words (>=1 occurrence)
   replace_content_mapper(regexes)                            C4 line rules: citations, javascript / policy lines,
                                                              lines with <3 words; lorem-ipsum docs emptied
   general_field_filter("text != '' and '{' not in text")     C4 doc rules: curly bracket, emptied docs
2. dedup (on the filtered dataset, in memory)
   document_deduplicator                                      exact dedup (md5 of the stripped text)
   document_minhash_deduplicator(space 5-grams, 14 bands x 8 rows = 112 permutations)
3. export   the kept documents -> OUTPUT/kept.jsonl ({"id", "text"})

Not run (see "not_done"): Gopher mean word length / symbol ratio / bullets / ellipsis / alpha-word rules, the other
Gopher repetition rules, C4 <5 sentences, all four FineWeb rules (no built-in operator), and tokenization (data-juicer
has no operator that emits token ids). Nothing is downloaded: the stop-word list is written locally, and no operator
used needs a model.

Last stdout line: {"system", "wall_s", "phases", "docs_in", "kept_after_filters", "kept_after_dedup",
"tokenized", "not_done"}.
"""

import glob
import argparse
import json
import os
import shutil
import sys
import time

from common import count_lines, parser  # benchmarks/peers/common.py

REAL_STDOUT = sys.stdout  # data-juicer's logger setup redirects sys.stdout/sys.stderr into loguru
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import yaml  # noqa: E402
from data_juicer import __version__ as dj_version  # noqa: E402
from data_juicer.config import init_configs  # noqa: E402
from data_juicer.core import DefaultExecutor  # noqa: E402

GOPHER_STOP_WORDS = ["the", "be", "to", "of", "and", "that", "have", "with"]
C4_POLICY = ["terms of use", "privacy policy", "cookie policy", "uses cookies", "use of cookies", "use cookies"]
# replace_content_mapper applies these in order to the whole text (compiled with regex.DOTALL; [^\n] keeps a match
# inside one line). Together they emulate datatrove's C4QualityFilter line loop with filter_no_terminal_punct=False.
C4_PATTERNS = [
    (r"(?m)^[^\S\n]+|[^\S\n]+$", ""),  # strip each line (datatrove: line.strip() first)
    (r"(?m)^(?:\S+[^\S\n]+)?\S*(?:\n|\Z)", ""),  # drop lines with < 3 words, counted before citation removal
    (r"\[\d*\]|\[edit\]|\[citation needed\]", ""),  # remove citations (datatrove's CITATION_REGEX)
    (r"(?im)^[^\n]*javascript[^\n]*(?:\n|\Z)", ""),  # drop lines mentioning javascript
    (r"(?im)^[^\n]*(?:" + "|".join(C4_POLICY) + r")[^\n]*(?:\n|\Z)", ""),  # drop policy lines
    (r"\A\s+|\s+\Z", ""),  # strip the document ("\n".join(kept_lines).strip())
    (r"(?is)\A.*lorem ipsum.*\Z", ""),  # doc with "lorem ipsum" (any case) -> "" -> dropped below
]
NOT_DONE = [
    "Gopher repetition: dup line/paragraph fractions, dup line/paragraph char fractions, top 2/3/4-gram char "
    "fractions, duplicated 6..10-gram fractions (word_repetition_filter caches one 'word_rep_ratio' stat per sample, "
    "so only one n can be applied: 5)",
    "Gopher quality: mean word length 3..10, symbol/word ratio, bullet lines, ellipsis lines, alpha-word ratio "
    "- no built-in operator without a downloaded tokenizer",
    "Gopher quality: stop words is '>=1 stop-word occurrence' (stopwords_filter is a ratio), not '>=2 distinct'",
    "C4: drop docs with <5 sentences - no built-in sentence-count filter",
    "FineWeb: line punctuation ratio, short line ratio, char duplicate ratio, newline ratio - no built-in operator",
    "tokenization into token ids - data-juicer has no such operator (token_num_filter only counts tokens)",
]


def base_cfg(args: argparse.Namespace, work: str, name: str) -> dict:
    return {
        "project_name": f"peer-chain-{name}",
        "dataset_path": os.path.join(work, "input"),  # the *.jsonl.gz only: a folder's other JSON would load too
        "export_path": os.path.join(os.path.abspath(args.output), "kept.jsonl"),
        "work_dir": os.path.join(work, name),
        "np": args.workers,
        "text_keys": "text",
        "use_cache": True,  # data-juicer's default; a fresh cache dir per run, so nothing is reused across runs
        "ds_cache_dir": os.path.join(work, "hf_cache"),
        "skip_op_error": False,  # default True drops a whole batch on an op exception and carries on
        "open_tracer": False,
        "keep_stats_in_res_ds": False,
        "keep_hashes_in_res_ds": False,
    }


def filter_ops(stopwords_dir: str) -> list:
    return [
        {"word_repetition_filter": {"lang": "en", "tokenization": False, "rep_len": 5, "min_ratio": 0.0,
                                    "max_ratio": 0.15}},
        {"words_num_filter": {"lang": "en", "tokenization": False, "min_num": 50, "max_num": 100000}},
        {"stopwords_filter": {"lang": "en", "tokenization": False, "stopwords_dir": stopwords_dir,
                              "min_ratio": 0.0, "min_closed_interval": False, "max_ratio": 1.0}},
        {"replace_content_mapper": {"pattern": [p for p, _ in C4_PATTERNS], "repl": [r for _, r in C4_PATTERNS]}},
        {"general_field_filter": {"filter_condition": "text != '' and '{' not in text"}},
    ]


def dedup_ops() -> list:
    return [
        {"document_deduplicator": {"lowercase": False, "ignore_non_character": False}},
        {"document_minhash_deduplicator": {"tokenization": "space", "window_size": 5, "lowercase": True,
                                           "num_permutations": 112, "num_bands": 14, "num_rows_per_band": 8,
                                           "jaccard_threshold": 0.72}},  # threshold unused: bands/rows given
    ]


def write_yaml(cfg: dict, path: str) -> str:
    with open(path, "w", encoding="utf-8") as f:
        yaml.safe_dump(cfg, f, sort_keys=False, allow_unicode=True)
    return path


def main() -> None:
    ap = parser(__doc__, "output folder: kept.jsonl, and _work/ (configs, logs, cache)", "data-juicer np (worker processes)")
    args = ap.parse_args()

    in_files = sorted(glob.glob(os.path.join(args.input, "*.jsonl.gz")))
    if not in_files:
        raise SystemExit(f"no *.jsonl.gz files in {args.input}")
    out = os.path.abspath(args.output)
    work = os.path.join(out, "_work")
    shutil.rmtree(work, ignore_errors=True)  # a stale HF cache would make a re-run reuse earlier results
    for stale in glob.glob(os.path.join(out, "kept*.jsonl")):
        os.remove(stale)
    os.makedirs(os.path.join(work, "input"))
    for f in in_files:
        os.symlink(os.path.abspath(f), os.path.join(work, "input", os.path.basename(f)))
    stopwords_dir = os.path.join(work, "stopwords")
    os.makedirs(stopwords_dir)
    with open(os.path.join(stopwords_dir, "stopwords.json"), "w") as f:
        json.dump({"en": GOPHER_STOP_WORDS}, f)  # load_words_asset reads *stopwords*.json from stopwords_dir

    cfg_f = write_yaml({**base_cfg(args, work, "filters"), "process": filter_ops(stopwords_dir)},
                       os.path.join(work, "filters.yaml"))
    cfg_d = write_yaml({**base_cfg(args, work, "dedup"), "process": dedup_ops()}, os.path.join(work, "dedup.yaml"))

    phases: dict[str, float] = {}
    t_start = time.perf_counter()

    # 1. filters (includes loading the input) -----------------------------------------------------------------------
    t = time.perf_counter()
    filtered = DefaultExecutor(init_configs(args=["--config", cfg_f])).run(skip_export=True)
    phases["filters"] = time.perf_counter() - t
    kept_after_filters = len(filtered)

    # 2. exact + MinHash dedup on the filtered dataset, then 3. export -----------------------------------------------
    t = time.perf_counter()
    dedup_exec = DefaultExecutor(init_configs(args=["--config", cfg_d]))
    deduped = dedup_exec.run(dataset=filtered, skip_export=True)
    phases["dedup"] = time.perf_counter() - t
    t = time.perf_counter()
    dedup_exec.exporter.export(deduped)
    phases["export"] = time.perf_counter() - t
    wall = time.perf_counter() - t_start

    result = {
        "system": f"data-juicer {dj_version}",
        "wall_s": round(wall, 3),
        "phases": {k: round(v, 3) for k, v in phases.items()},
        "docs_in": count_lines(in_files),
        "kept_after_filters": kept_after_filters,
        "kept_after_dedup": len(deduped),
        "tokenized": False,
        "not_done": NOT_DONE,
    }
    print(json.dumps(result), file=REAL_STDOUT, flush=True)


if __name__ == "__main__":
    main()
