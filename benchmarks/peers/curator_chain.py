"""NeMo Curator 1.4.0 (CPU, `nemo-curator[text-cpu]`) run of the FineWeb-style chain, built-in stages only.

Usage (with the Curator venv's python):
    python curator_chain.py --input DIR --output DIR --workers 2 [--executor xenna|ray_data]

What it runs (a local Ray instance with --workers CPUs per pipeline, XennaExecutor in batch mode by default):
1. filters   Pipeline: JsonlReader(DIR/*.jsonl.gz, one file per task)
               -> ScoreFilter[Gopher quality + repetition stand-ins: WordCountFilter, RepeatedLines/Paragraphs(ByChar)
                  Filter, RepeatingTopNGramsFilter n=2,3,4, RepeatingDuplicateNGramsFilter n=5..10, MeanWordLength,
                  SymbolsToWords, Bullets, Ellipsis, WordsWithoutAlphabets, CommonEnglishWords]
               -> Modify(BoilerPlateStringModifier)            (C4: policy paragraphs at top/bottom, lorem ipsum)
               -> ScoreFilter[WordCountFilter(min 1) (docs emptied by lorem ipsum), SubstringFilter("{") inverted
                  (C4 curly bracket), PunctuationFilter(0.88) and RepeatedLinesByCharFilter(0.99) (FineWeb line
                  punctuation / char duplicates)]
               -> JsonlWriter(OUTPUT/kept/*.jsonl)
2. tokenizer_train (not a Curator stage; nothing can be downloaded): an HF `tokenizers` byte-level BPE
   (--vocab-size, EOS "<|endoftext|>") trained on the first --sample-docs kept documents, saved with
   transformers' PreTrainedTokenizerFast as a local tokenizer folder (OUTPUT/tokenizer).
3. tokenize  Pipeline: JsonlReader(OUTPUT/kept) -> MegatronTokenizerWriter(local tokenizer, append_eod=True)
   -> OUTPUT/tokens/*.bin + *.idx (token ids).

What it does NOT run (listed in the JSON's "not_done"): exact dedup and MinHash/LSH near-dedup (Curator 1.4.0's
ExactDuplicateIdentification and MinHashStage/LSHStage import cudf and request a GPU), and the reference rules
Curator has no built-in for (C4 per-line rules, <5 sentences, FineWeb short-line and newline ratios).
See MISMATCHES.md for each stand-in and how it differs from datatrove's filters.

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

# Before anything imports loguru / transformers / ray: quiet logs, no hub access, the venv's bin/ on PATH.
os.environ.setdefault("LOGURU_LEVEL", "WARNING")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ["PATH"] = os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")

import psutil  # noqa: E402

from nemo_curator.pipeline import Pipeline  # noqa: E402
from nemo_curator.stages.text.filters import ScoreFilter  # noqa: E402
from nemo_curator.stages.text.filters.heuristic import (  # noqa: E402
    BulletsFilter,
    CommonEnglishWordsFilter,
    EllipsisFilter,
    MeanWordLengthFilter,
    PunctuationFilter,
    SubstringFilter,
    SymbolsToWordsFilter,
    WordCountFilter,
    WordsWithoutAlphabetsFilter,
)
from nemo_curator.stages.text.filters.heuristic.repetition import (  # noqa: E402
    RepeatedLinesByCharFilter,
    RepeatedLinesFilter,
    RepeatedParagraphsByCharFilter,
    RepeatedParagraphsFilter,
    RepeatingDuplicateNGramsFilter,
    RepeatingTopNGramsFilter,
)
from nemo_curator.stages.text.io.reader import JsonlReader  # noqa: E402
from nemo_curator.stages.text.io.writer import JsonlWriter  # noqa: E402
from nemo_curator.stages.text.modifiers import BoilerPlateStringModifier, Modify  # noqa: E402

EOS = "<|endoftext|>"
NOT_DONE = [
    "exact dedup: Curator 1.4.0 ExactDuplicateIdentification is cudf/GPU-only",
    "MinHash/LSH near-dedup (14x8, word 5-grams): Curator 1.4.0 MinHashStage/LSHStage are cudf/GPU-only",
    "C4: drop lines with <3 words, drop lines mentioning javascript, remove citations - no built-in line filter",
    "C4: policy phrases only removed as whole paragraphs at the top/bottom (BoilerPlateStringModifier), not per line",
    "C4: drop docs with <5 sentences - no built-in sentence-count filter",
    "FineWeb: short line ratio (>0.67 of lines <=30 chars) - no built-in",
    "FineWeb: newline/word ratio 0.3 - no built-in",
]


def gopher_filters() -> list:
    """Gopher quality + repetition stand-ins (all pure predicates, so their order does not change the kept set;
    WordCountFilter goes first so that the ratio filters below never see an empty document)."""
    return [
        WordCountFilter(min_words=50, max_words=100000),
        RepeatedLinesFilter(max_repeated_line_fraction=0.7),  # keeps unique/total lines >= 0.7 (dup frac <= 0.3)
        RepeatedParagraphsFilter(max_repeated_paragraphs_ratio=0.7),
        RepeatedLinesByCharFilter(max_repeated_lines_char_ratio=0.8),  # dup line chars <= 0.2
        RepeatedParagraphsByCharFilter(max_repeated_paragraphs_char_ratio=0.8),
        *[RepeatingTopNGramsFilter(n=n, max_repeating_ngram_ratio=r) for n, r in ((2, 0.20), (3, 0.18), (4, 0.16))],
        *[RepeatingDuplicateNGramsFilter(n=n, max_repeating_duplicate_ngram_ratio=r)
          for n, r in ((5, 0.15), (6, 0.14), (7, 0.13), (8, 0.12), (9, 0.11), (10, 0.10))],
        MeanWordLengthFilter(min_mean_word_length=3, max_mean_word_length=10),
        SymbolsToWordsFilter(max_symbol_to_word_ratio=0.1),
        BulletsFilter(max_bullet_lines_ratio=0.9),
        EllipsisFilter(max_num_lines_ending_with_ellipsis_ratio=0.3),
        WordsWithoutAlphabetsFilter(min_words_with_alphabets=0.8),
        CommonEnglishWordsFilter(min_num_common_words=2),
    ]


def post_c4_filters() -> tuple[list, list[bool]]:
    """After the C4 modifier: drop emptied docs, C4's curly bracket rule, FineWeb line-punct and char-dup rules."""
    filters = [
        WordCountFilter(min_words=1, max_words=sys.maxsize),  # BoilerPlateStringModifier empties lorem-ipsum docs
        SubstringFilter(substring="{", position="any"),  # inverted below: drop docs containing "{"
        PunctuationFilter(max_num_sentences_without_endmark_ratio=0.88),  # >= 12% of lines end in . ? ! " '
        RepeatedLinesByCharFilter(max_repeated_lines_char_ratio=0.99),  # duplicated-line chars <= 1%
    ]
    return filters, [False, True, False, False]


def make_executor(kind: str):
    if kind == "xenna":
        from nemo_curator.backends.xenna import XennaExecutor

        return XennaExecutor(config={"execution_mode": "batch"})  # streaming mode stalls with 2 CPUs
    from nemo_curator.backends.ray_data import RayDataExecutor

    return RayDataExecutor()


def read_texts(paths: list[str], limit: int) -> list[str]:
    out: list[str] = []
    for p in paths:
        with open(p, encoding="utf-8") as f:
            for line in f:
                if line.strip():
                    out.append(json.loads(line)["text"])
                    if len(out) >= limit:
                        return out
    return out


def build_local_tokenizer(texts: list[str], vocab_size: int, out_dir: str) -> None:
    """Byte-level BPE (as the datatrove baseline trains it), wrapped so that AutoTokenizer can load the folder."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[EOS],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts, trainer=trainer, length=len(texts))
    PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOS).save_pretrained(out_dir)


def ray_up(workers: int, temp_dir: str) -> None:
    """A fresh local Ray instance with --workers CPUs. (Curator's RayClient is not used: it starts `ray start --head`
    on socket.gethostbyname(hostname), which is 127.0.0.1 here, while Ray's `ray status`/clients rewrite 127.0.0.1 to
    the node's routable IP, so RayClient.start() waits 5 min and fails.) The executors' own ray.init(...,
    ignore_reinit_error=True) then reuse it, and their ray.shutdown() ends it after each pipeline."""
    import ray

    os.environ.pop("RAY_ADDRESS", None)  # else ray.init would reconnect to the previous (ended) instance
    ctx = ray.init(address="local", num_cpus=workers, _temp_dir=temp_dir)
    # Xenna's monitor calls Ray's state API (via the dashboard), which needs RAY_ADDRESS when other Ray instances
    # run on the machine ("Found multiple active Ray instances").
    os.environ["RAY_ADDRESS"] = ctx.address_info["gcs_address"]


def become_subreaper() -> None:
    """Ray worker processes orphaned by ray.shutdown() are re-parented to this process (Linux), so that
    end_leftovers() can find them; without it they would go to init and keep running."""
    import ctypes

    try:
        if ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0) != 0:  # PR_SET_CHILD_SUBREAPER
            print("warning: PR_SET_CHILD_SUBREAPER failed; orphaned Ray workers may outlive this run", file=sys.stderr)
    except (OSError, AttributeError):
        print("warning: no prctl; orphaned Ray workers may outlive this run", file=sys.stderr)


def end_leftovers() -> None:
    """After a pipeline's ray.shutdown(): end the Ray processes this run started that are still alive, by pid."""
    procs = psutil.Process().children(recursive=True)
    _, alive = psutil.wait_procs(procs, timeout=3)
    if alive:
        print(f"ending {len(alive)} Ray processes left after ray.shutdown(): {[p.pid for p in alive]}", file=sys.stderr)
    for sig in ("terminate", "kill"):
        for p in alive:
            try:
                getattr(p, sig)()
            except psutil.NoSuchProcess:
                pass
        _, alive = psutil.wait_procs(alive, timeout=5)


def run_pipeline(pipeline: Pipeline, args: argparse.Namespace, temp_dir: str, phases: dict, name: str) -> list:
    """Start Ray, run the pipeline (its executor shuts Ray down), end leftovers; time each part."""
    t = time.perf_counter()
    ray_up(args.workers, temp_dir)
    phases["ray_start"] = phases.get("ray_start", 0.0) + time.perf_counter() - t
    t = time.perf_counter()
    try:
        out = pipeline.run(executor=make_executor(args.executor))
    finally:
        phases[name] = time.perf_counter() - t
        t = time.perf_counter()
        import ray

        ray.shutdown()  # no-op when the executor already did it
        end_leftovers()
        phases["ray_stop"] = phases.get("ray_stop", 0.0) + time.perf_counter() - t
    return out


def main() -> None:
    ap = parser(__doc__, "output folder (kept/, tokenizer/, tokens/ are written in it)", "CPUs given to the Ray cluster")
    ap.add_argument("--executor", choices=["xenna", "ray_data"], default="xenna")
    ap.add_argument("--vocab-size", type=int, default=8000)
    ap.add_argument("--sample-docs", type=int, default=20000, help="kept docs the BPE tokenizer is trained on")
    ap.add_argument("--no-tokenize", action="store_true")
    args = ap.parse_args()

    in_files = sorted(glob.glob(os.path.join(args.input, "*.jsonl.gz")))
    if not in_files:
        raise SystemExit(f"no *.jsonl.gz files in {args.input}")
    out = os.path.abspath(args.output)
    kept_dir, tok_dir, tokens_dir = (os.path.join(out, d) for d in ("kept", "tokenizer", "tokens"))
    for d in (kept_dir, tok_dir, tokens_dir):
        shutil.rmtree(d, ignore_errors=True)
    os.makedirs(out, exist_ok=True)
    ray_tmp = f"/tmp/ray_cur_{os.getpid()}"  # private, short (Ray's unix socket paths have a length limit)

    phases: dict[str, float] = {}
    not_done = list(NOT_DONE)
    become_subreaper()
    t_start = time.perf_counter()

    # 1. filters --------------------------------------------------------------------------------------------------
    post_filters, post_invert = post_c4_filters()
    filters = Pipeline(name="fineweb_filters", stages=[
        # file_extensions: Curator matches the last suffix only ("gz"); files_per_partition=1: one task per file
        JsonlReader(file_paths=args.input, files_per_partition=1, file_extensions=[".gz"], fields=["id", "text"]),
        ScoreFilter(gopher_filters(), text_field="text"),
        Modify(BoilerPlateStringModifier(remove_if_at_top_or_bottom=True), input_fields="text"),
        ScoreFilter(post_filters, text_field="text", invert=post_invert),
        JsonlWriter(path=kept_dir),
    ])
    run_pipeline(filters, args, ray_tmp, phases, "filters")

    kept_files = sorted(p for p in glob.glob(os.path.join(kept_dir, "*.jsonl")) if os.path.getsize(p) > 0)
    tokenized = False
    if args.no_tokenize:
        not_done.append("tokenization skipped (--no-tokenize)")
    elif not kept_files:
        not_done.append("tokenization skipped: no document kept")
    else:
        # 2. local tokenizer (no download possible) ------------------------------------------------------------
        t = time.perf_counter()
        build_local_tokenizer(read_texts(kept_files, args.sample_docs), args.vocab_size, tok_dir)
        phases["tokenizer_train"] = time.perf_counter() - t

        # 3. tokenize: MegatronTokenizerWriter writes token ids (.bin) + Megatron index (.idx) ---------------------
        from nemo_curator.stages.text.io.writer.megatron_tokenizer import MegatronTokenizerWriter

        tokenize = Pipeline(name="tokenize", stages=[
            # explicit non-empty files: a task whose documents were all filtered out wrote an empty file, and the
            # reader refuses empty files
            JsonlReader(file_paths=kept_files, files_per_partition=1, fields=["text"]),
            MegatronTokenizerWriter(path=tokens_dir, model_identifier=tok_dir, append_eod=True),
        ])
        run_pipeline(tokenize, args, ray_tmp, phases, "tokenize")
        tokenized = bool(glob.glob(os.path.join(tokens_dir, "*.bin")))
    wall = time.perf_counter() - t_start
    shutil.rmtree(ray_tmp, ignore_errors=True)

    result = {
        "system": "nemo-curator 1.4.0",
        "wall_s": round(wall, 3),
        "phases": {k: round(v, 3) for k, v in phases.items()},
        "docs_in": count_lines(in_files),
        "kept_after_filters": count_lines(kept_files),
        "kept_after_dedup": None,
        "tokenized": tokenized,
        "not_done": not_done,
    }
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
