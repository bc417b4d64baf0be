"""The comparison baseline: the same corpus pipeline run with datatrove 0.10.1, as a user would run it.

`run_datatrove(input_dir, workdir, workers, filter_cfg, minhash, tokenizer)` runs, one
`LocalPipelineExecutor` per step, each timed with `time.perf_counter` around its `run()`:

1. filters: JsonlReader -> the enabled datatrove filters (GopherRepetitionFilter, GopherQualityFilter,
   C4QualityFilter, FineWebQualityFilter, in tokenmill's FILTER_CLASSES order; datatrove's own spaCy
   word splitting) -> JsonlWriter (workdir/filtered).
2. exact dedup: datatrove's hash-based ExactDedupSignature / ExactFindDedups / ExactDedupFilter on the
   text with runs of whitespace collapsed and the ends stripped (tokenmill's default "whitespace"
   normalization) -> JsonlWriter (workdir/exact_dedup).
3. MinHash: MinhashDedupSignature / MinhashDedupBuckets / MinhashDedupCluster / MinhashDedupFilter with
   MinhashConfig(n_grams, num_buckets=bands, hashes_per_bucket=rows) -> JsonlWriter (workdir/deduped).
4. tokenizer training: the texts of the first `sample_docs` deduplicated documents (in output-file
   order) train an HF `tokenizers` byte-level BPE (vocab_size, eos special token), saved as
   workdir/tokenizer/tokenizer.json.
5. tokenize: JsonlReader -> DocumentTokenizer (local tokenizer.json, eos appended to each document,
   no document shuffling) -> workdir/tokens/*.ds.

Nothing downloads: the filters used need no model or word list (spaCy's blank pipeline, built in code),
DocumentTokenizer loads the local tokenizer.json (`Tokenizer.from_file` when the path is a file).

Run `python benchmarks/datatrove_baseline.py` for a small smoke run on one dolma fixture file.
"""

import glob
import gzip
import json
import os
import re
import time
import unicodedata
from pathlib import Path
from typing import Any

import xxhash

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # belt and braces: nothing here may reach a hub

from datatrove.data import Document  # noqa: E402
from datatrove.executor import LocalPipelineExecutor  # noqa: E402
from datatrove.pipeline.filters import (  # noqa: E402
    C4QualityFilter,
    FineWebQualityFilter,
    GopherQualityFilter,
    GopherRepetitionFilter,
)
from datatrove.pipeline.readers import JsonlReader  # noqa: E402
from datatrove.pipeline.writers import JsonlWriter  # noqa: E402

# tokenmill's order (pipelines/filters/chain.py FILTER_CLASSES: FineWeb's recipe)
FILTER_CLASSES = {
    "gopher_repetition": GopherRepetitionFilter,
    "gopher_quality": GopherQualityFilter,
    "c4": C4QualityFilter,
    "fineweb": FineWebQualityFilter,
}
EOS_TOKEN = "<|endoftext|>"
_WS = re.compile(r"\s+")
_OUT_NAME = "${rank}.jsonl.gz"


# ------------------------------------------------------------------ exact-dedup content getters
# module-level functions (picklable). They return bytes: with xxhash >= 4 a str content would fail
# (see below); ExactDedupSignature reads the return annotation, and hashes bytes the same way.
def _text_none(doc: Document) -> bytes:
    return doc.text.encode("utf-8")


def _text_whitespace(doc: Document) -> bytes:
    return _WS.sub(" ", doc.text).strip().encode("utf-8")


def _text_lower(doc: Document) -> bytes:
    return unicodedata.normalize("NFKC", _WS.sub(" ", doc.text).strip()).lower().encode("utf-8")


# xxhash >= 4 (this venv pins 4.1.0; datatrove 0.10.1 asks for xxhash<4) refuses str: "Strings must be
# encoded before hashing". xxhash 3 hashed a str as its UTF-8 bytes, so these give datatrove's intended
# values. MinhashDedupSignature hashes each shingle as a str with its default HashConfig(hash_fc="xxhash").
def _xxhash32_str(data: str) -> int:
    return xxhash.xxh32_intdigest(data.encode("utf-8") if isinstance(data, str) else data)


def _xxhash64_str(data: str) -> int:
    return xxhash.xxh64_intdigest(data.encode("utf-8") if isinstance(data, str) else data)


def _minhash_signature(output_folder: str, config):
    from datatrove.pipeline.dedup import MinhashDedupSignature

    step = MinhashDedupSignature(output_folder=output_folder, config=config)
    if config.hash_config.hash_fc == "xxhash":
        step._hash_func = _xxhash32_str if config.hash_config.precision == 32 else _xxhash64_str
    return step


_CONTENT_GETTERS = {"none": _text_none, "whitespace": _text_whitespace, "lower": _text_lower}


# ------------------------------------------------------------------ helpers
def _reader(folder: str, glob_pattern: str = "*.jsonl.gz") -> JsonlReader:
    return JsonlReader(folder, glob_pattern=glob_pattern, text_key="text", id_key="id", recursive=False)


def _writer(folder: str) -> JsonlWriter:
    return JsonlWriter(folder, output_filename=_OUT_NAME, compression="gzip")


def _jsonl_files(folder: str) -> list[str]:
    return sorted(glob.glob(os.path.join(folder, "*.jsonl.gz")))


def _read_field(folder: str, key: str, limit: int | None = None) -> list[str]:
    """`key` of each line of the folder's *.jsonl.gz files (sorted file order, file line order)."""
    out: list[str] = []
    for path in _jsonl_files(folder):
        with gzip.open(path, "rt", encoding="utf-8") as f:
            for line in f:
                if line.strip():
                    out.append(json.loads(line)[key])
                    if limit is not None and len(out) >= limit:
                        return out
    return out


def _count_lines(folder: str) -> int:
    n = 0
    for path in _jsonl_files(folder):
        with gzip.open(path, "rt", encoding="utf-8") as f:
            n += sum(1 for line in f if line.strip())
    return n


def _timed_run(executor: LocalPipelineExecutor) -> tuple[float, Any]:
    t0 = time.perf_counter()
    stats = executor.run()
    return time.perf_counter() - t0, stats


def _executor(pipeline: list, tasks: int, workers: int, logs: str) -> LocalPipelineExecutor:
    # skip_completed=False: a re-run in the same workdir must do the work again, never skip it
    return LocalPipelineExecutor(pipeline=pipeline, tasks=tasks, workers=max(1, min(workers, tasks)),
                                 logging_dir=logs, skip_completed=False)


def _filters(filter_cfg: dict) -> tuple[list, list[str]]:
    unknown = set(filter_cfg) - set(FILTER_CLASSES) - {"order", "word_splitter"}
    if unknown:
        raise ValueError(f"unknown filter config keys {sorted(unknown)}; known: {list(FILTER_CLASSES)}")
    order = filter_cfg.get("order") or list(FILTER_CLASSES)
    steps, names = [], []
    for name in order:
        kwargs = filter_cfg.get(name)
        if kwargs is None or kwargs is False:
            continue
        kwargs = {} if kwargs is True else dict(kwargs)
        kwargs.pop("exclusion_writer", None)
        steps.append(FILTER_CLASSES[name](**kwargs))  # default language "en": datatrove's spaCy splitter
        names.append(name)
    return steps, names


def _step_stats(stats: Any) -> dict[str, dict[str, int]]:
    """{step name: {"dropped": n, "forwarded": n, "dropped_<reason>": n ...}} from PipelineStats."""
    out: dict[str, dict[str, int]] = {}
    for step in getattr(stats, "stats", None) or []:
        counts = {}
        for key, metric in step.stats.items():
            if key == "dropped" or key == "forwarded" or key.startswith("dropped_"):
                counts[key] = int(getattr(metric, "total", 0))
        if counts:
            out[step.name] = counts
    return out


def _train_tokenizer(texts: list[str], vocab_size: int, path: str) -> None:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[EOS_TOKEN],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts, trainer=trainer, length=len(texts))
    tok.save(path)


# ------------------------------------------------------------------ the baseline
def run_datatrove(input_dir: str, workdir: str, workers: int, filter_cfg: dict, minhash: dict,
                  tokenizer: dict, exact_normalize: str = "whitespace") -> dict:
    """Run filters -> exact dedup -> MinHash dedup -> BPE training -> tokenization with datatrove.

    input_dir: *.jsonl.gz files of {"id", "text"}; workdir: an empty scratch folder; workers: parallel
    worker processes per step; filter_cfg: tokenmill's filter settings ({name: kwargs or None});
    minhash: {"ngram", "bands", "rows"}; tokenizer: {"vocab_size", "sample_docs"};
    exact_normalize: "whitespace" (tokenmill's default), "none", "lower", or None to skip exact dedup.
    """
    from datatrove.pipeline.dedup import (
        ExactDedupConfig,
        ExactDedupFilter,
        ExactDedupSignature,
        ExactFindDedups,
        MinhashConfig,
        MinhashDedupBuckets,
        MinhashDedupCluster,
        MinhashDedupFilter,
    )
    from datatrove.pipeline.tokens import DocumentTokenizer

    workers = max(1, int(workers))
    wd = Path(workdir)
    wd.mkdir(parents=True, exist_ok=True)
    d = {k: str(wd / k) for k in ("filtered", "exact_sigs", "exact_dups", "exact_dedup", "mh_sigs",
                                  "mh_buckets", "mh_remove", "deduped", "tokenizer", "tokens", "logs")}
    logs = lambda name: os.path.join(d["logs"], name)  # noqa: E731
    notes: list[str] = []
    timings: dict[str, float | None] = {"filters": 0.0, "exact_dedup": None, "minhash": 0.0,
                                        "tokenizer_train": 0.0, "tokenize": 0.0}

    n_files = len(glob.glob(os.path.join(input_dir, "*.jsonl.gz")))
    if n_files == 0:
        raise FileNotFoundError(f"no *.jsonl.gz files in {input_dir}")
    if n_files < workers:
        notes.append(f"filters step: {n_files} input files -> {n_files} tasks, so at most {n_files} of "
                     f"{workers} workers busy (datatrove shards by file)")
    t_start = time.perf_counter()

    # 1. filters -------------------------------------------------------------------------------
    filter_steps, filter_names = _filters(filter_cfg)
    if filter_cfg.get("word_splitter") not in (None, "spacy"):
        notes.append(f"word_splitter={filter_cfg['word_splitter']!r} ignored: datatrove runs its own spaCy "
                     "word splitting")
    timings["filters"], fstats = _timed_run(_executor(
        [_reader(input_dir), *filter_steps, _writer(d["filtered"])], n_files, workers, logs("filters")))

    # 2. exact dedup (datatrove's hash-based 3-step exact dedup) ---------------------------------
    minhash_input = d["filtered"]
    if exact_normalize is not None and _jsonl_files(d["filtered"]):
        cfg = ExactDedupConfig(content_getter=_CONTENT_GETTERS[exact_normalize])
        tasks = len(_jsonl_files(d["filtered"]))
        t = time.perf_counter()
        _executor([_reader(d["filtered"]),
                   ExactDedupSignature(output_folder=d["exact_sigs"], config=cfg, finder_workers=workers)],
                  tasks, workers, logs("exact_1_signature")).run()
        _executor([ExactFindDedups(data_folder=d["exact_sigs"], output_folder=d["exact_dups"], config=cfg)],
                  workers, workers, logs("exact_2_find")).run()
        _executor([_reader(d["filtered"]), ExactDedupFilter(data_folder=d["exact_dups"], config=cfg),
                   _writer(d["exact_dedup"])], tasks, workers, logs("exact_3_filter")).run()
        timings["exact_dedup"] = time.perf_counter() - t
        minhash_input = d["exact_dedup"]
        notes.append(f"exact dedup: datatrove ExactDedupSignature/ExactFindDedups/ExactDedupFilter, 64-bit "
                     f"xxhash of the {exact_normalize!r}-normalized text; survivor = first by (doc index in "
                     f"its file), not tokenmill's smallest id")
    elif exact_normalize is None:
        notes.append("exact dedup skipped (exact_normalize=None)")

    # 3. MinHash ---------------------------------------------------------------------------------
    mh_cfg = MinhashConfig(n_grams=int(minhash.get("ngram", 5)), num_buckets=int(minhash.get("bands", 14)),
                           hashes_per_bucket=int(minhash.get("rows", 8)))
    if _jsonl_files(minhash_input):
        tasks = len(_jsonl_files(minhash_input))
        t = time.perf_counter()
        _executor([_reader(minhash_input), _minhash_signature(d["mh_sigs"], mh_cfg)],
                  tasks, workers, logs("minhash_1_signature")).run()
        _executor([MinhashDedupBuckets(input_folder=d["mh_sigs"], output_folder=d["mh_buckets"], config=mh_cfg)],
                  mh_cfg.num_buckets, workers, logs("minhash_2_buckets")).run()
        _executor([MinhashDedupCluster(input_folder=d["mh_buckets"], output_folder=d["mh_remove"], config=mh_cfg)],
                  1, 1, logs("minhash_3_cluster")).run()
        _executor([_reader(minhash_input), MinhashDedupFilter(input_folder=d["mh_remove"]), _writer(d["deduped"])],
                  tasks, workers, logs("minhash_4_filter")).run()
        timings["minhash"] = time.perf_counter() - t
        notes.append("minhash: MinhashDedupSignature's xxhash64 is given UTF-8 bytes (xxhash>=4 rejects str; "
                     "datatrove 0.10.1 expects xxhash<4, which hashed str as UTF-8): same hash values")

    # 4. tokenizer training on the first sample_docs deduplicated documents -----------------------
    vocab_size = int(tokenizer.get("vocab_size", 8000))
    sample_docs = int(tokenizer.get("sample_docs", 20000))
    tok_path = os.path.join(d["tokenizer"], "tokenizer.json")
    token_count = 0
    if _jsonl_files(d["deduped"]):
        os.makedirs(d["tokenizer"], exist_ok=True)
        t = time.perf_counter()
        sample = _read_field(d["deduped"], "text", limit=sample_docs)
        _train_tokenizer(sample, vocab_size, tok_path)
        timings["tokenizer_train"] = time.perf_counter() - t

        # 5. tokenize ------------------------------------------------------------------------------
        tasks = len(_jsonl_files(d["deduped"]))
        timings["tokenize"], _ = _timed_run(_executor(
            [_reader(d["deduped"]),
             DocumentTokenizer(output_folder=d["tokens"], tokenizer_name_or_path=tok_path, eos_token=EOS_TOKEN,
                               shuffle_documents=False)],
            tasks, workers, logs("tokenize")))
        from tokenizers import Tokenizer

        token_size = 4 if Tokenizer.from_file(tok_path).get_vocab_size() > 65536 else 2
        token_count = sum(os.path.getsize(p) for p in glob.glob(os.path.join(d["tokens"], "*.ds"))) // token_size
    timings_total = time.perf_counter() - t_start

    # read back (outside the timings) ---------------------------------------------------------------
    ids_filters = _read_field(d["filtered"], "id")
    ids_exact = _read_field(d["exact_dedup"], "id") if timings["exact_dedup"] is not None else ids_filters
    ids_dedup = _read_field(d["deduped"], "id")
    docs_in = _count_lines(input_dir)
    fsteps = _step_stats(fstats)
    first = next(iter(fsteps.values()), None)
    docs_read = first.get("forwarded", 0) + first.get("dropped", 0) if first else len(ids_filters)
    if docs_read < docs_in:
        notes.append(f"{docs_in - docs_read} input documents with empty text were skipped by JsonlReader "
                     "(never reach the filters; tokenmill drops them too, as 'empty')")
    return {
        **timings,
        "total": timings_total,
        "docs_in": docs_in,
        "after_filters": len(ids_filters),
        "after_exact_dedup": len(ids_exact),
        "after_dedup": len(ids_dedup),
        "ids_after_filters": ids_filters,
        "ids_after_dedup": ids_dedup,
        "token_count": token_count,
        "filters_run": filter_names,
        "filter_stats": fsteps,
        "tokenizer_path": tok_path if token_count else None,
        "notes": notes + [
            f"tokenizer: HF tokenizers byte-level BPE, vocab_size={vocab_size}, eos {EOS_TOKEN!r} appended to "
            f"each document by DocumentTokenizer; trained on the first {sample_docs} deduplicated docs in output "
            "order (timing includes reading them)",
            "tokenize: DocumentTokenizer with shuffle_documents=False (tokenmill never shuffles documents)",
        ],
    }


# ------------------------------------------------------------------ MinHash alone
def run_datatrove_minhash(input_dir: str, workdir: str, workers: int, minhash: dict) -> dict:
    """datatrove's 4-stage MinHash dedup on raw *.jsonl.gz ({"id", "text"}), as its README runs it:
    signatures (one task per file) -> buckets (one task per band) -> cluster (one task) -> filter, writing
    the kept documents and, with their cluster ids (save_cluster_id / load_cluster_ids), the removed ones.
    Returns per-step seconds and the folders of the kept and of the removed documents (metadata
    minhash_cluster_id: -1 outside any cluster)."""
    from datatrove.pipeline.dedup import MinhashConfig, MinhashDedupBuckets, MinhashDedupCluster, MinhashDedupFilter

    wd = Path(workdir)
    d = {k: str(wd / k) for k in ("sigs", "buckets", "remove", "kept", "removed", "logs")}
    cfg = MinhashConfig(n_grams=int(minhash.get("ngram", 5)), num_buckets=int(minhash.get("bands", 14)),
                        hashes_per_bucket=int(minhash.get("rows", 8)))
    tasks = len(_jsonl_files(input_dir))
    steps = {}
    t0 = time.perf_counter()
    steps["1_signatures"], _ = _timed_run(_executor([_reader(input_dir), _minhash_signature(d["sigs"], cfg)],
                                                    tasks, workers, os.path.join(d["logs"], "1")))
    steps["2_buckets"], _ = _timed_run(_executor(
        [MinhashDedupBuckets(input_folder=d["sigs"], output_folder=d["buckets"], config=cfg)],
        cfg.num_buckets, workers, os.path.join(d["logs"], "2")))
    steps["3_cluster"], _ = _timed_run(_executor(
        [MinhashDedupCluster(input_folder=d["buckets"], output_folder=d["remove"], config=cfg, save_cluster_id=True)],
        1, 1, os.path.join(d["logs"], "3")))
    steps["4_filter"], _ = _timed_run(_executor(
        [_reader(input_dir), MinhashDedupFilter(input_folder=d["remove"], load_cluster_ids=True,
                                                exclusion_writer=_writer(d["removed"])), _writer(d["kept"])],
        tasks, workers, os.path.join(d["logs"], "4")))
    total = time.perf_counter() - t0
    return {"seconds": steps, "total": total, "kept_dir": d["kept"], "removed_dir": d["removed"]}


# ------------------------------------------------------------------ smoke run
if __name__ == "__main__":
    import pprint
    import tempfile

    fixture = (Path(__file__).resolve().parents[2] / "shared" / "corpora" / "dolma_fixtures"
               / "CC-MAIN-20190717121559-20190717143559-00140.jsonl.gz")
    with tempfile.TemporaryDirectory() as tmp:
        inp, work = Path(tmp) / "input", Path(tmp) / "work"
        inp.mkdir()
        with gzip.open(fixture, "rt", encoding="utf-8") as f:
            docs = [json.loads(line)["text"] for line in f if line.strip()]
        handles = [gzip.open(inp / f"part-{k:02d}.jsonl.gz", "wt", encoding="utf-8") for k in range(2)]
        for i, text in enumerate(docs):
            handles[i % 2].write(json.dumps({"id": f"dolma/{i:05d}", "text": text}, ensure_ascii=False) + "\n")
        for h in handles:
            h.close()
        result = run_datatrove(
            str(inp), str(work), workers=2,
            filter_cfg={"gopher_quality": {}, "gopher_repetition": {},
                        "c4": {"filter_no_terminal_punct": False}, "fineweb": {}},
            minhash={"ngram": 5, "bands": 14, "rows": 8},
            tokenizer={"vocab_size": 2000, "sample_docs": 200},
        )
    pprint.pprint({k: v for k, v in result.items() if not k.startswith("ids_")}, width=110, sort_dicts=False)
