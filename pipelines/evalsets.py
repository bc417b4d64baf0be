"""Evaluation sets: held-out text and multiple-choice / language-modelling tasks, read into one shape.

A suite (`configs/eval/*.yaml`, `EvalSuiteConfig`) names text sets and task sets:

- A **text set** is documents (jsonl or parquet with a text field, a plain-text file as one document, or a
  tokenmill stage's kept documents through its manifest). It is scored in bits per byte: the model's negative
  log-likelihood of every token, in bits, over the documents' UTF-8 bytes.
- A **task set** is one JSON object a line in one of the three schemas of `../shared/evals/README.md`
  (llm-foundry's local evaluation data):
  - `mc`: `{"query", "choices": [...], "gold"}`: candidates `query + " " + choice`;
  - `schema`: `{"context_options": [...], "continuation", "gold"}`: candidates `context + " " + continuation`;
  - `lm`: `{"context", "continuation"}`: one candidate; correct when greedy decoding gives the continuation.
  Each item becomes a `TaskItem`: its candidates as (context, continuation) strings, the gold index and the
  strings whose character length normalizes `acc_norm`. The delimiter is one space, as llm-foundry's
  `continuation_delimiter` and lm-evaluation-harness's `target_delimiter`.

A cap (`max_items`, `max_docs`) keeps items evenly spread over the file (index `floor(k * n / cap)`), so a
capped suite is deterministic and still covers the whole set.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Literal

from pipelines import storage
from pipelines.hashing import canonical_sha256, sha256_file
from pipelines.typed_config import ConfigError, PathStr, PositiveInt

DELIMITER = " "
Schema = Literal["mc", "schema", "lm"]


class EvalSetError(ValueError):
    """A malformed evaluation file: the message names the file and the line."""


@dataclass(frozen=True)
class TextSetConfig:
    name: str
    path: PathStr
    format: Literal["jsonl", "parquet", "text", "stage"] = "jsonl"  # stage: a stage manifest's kept documents
    text_field: str = "text"
    max_docs: PositiveInt | None = None  # evenly spread over the set
    max_doc_chars: PositiveInt | None = None  # each document cut to its first characters (a long book or a dump)


@dataclass(frozen=True)
class TaskConfig:
    name: str
    path: PathStr
    schema: Schema
    max_items: PositiveInt | None = None  # evenly spread over the file


@dataclass(frozen=True)
class EvalSuiteConfig:
    name: str
    texts: list[TextSetConfig] = field(default_factory=list)
    tasks: list[TaskConfig] = field(default_factory=list)
    # sequences per forward pass: its logits take batch_size x seq_len x vocabulary x 4 bytes (8 x 1024 x 50,257:
    # 1.6 GB), so lower it for a large vocabulary and a long context
    batch_size: PositiveInt = 8
    seq_len: PositiveInt | None = None  # window of a long text; default: the model's max_seq_len

    def validate(self, key: str = "") -> None:
        if not self.texts and not self.tasks:
            raise ConfigError(f"{key + '.' if key else ''}texts, tasks: an evaluation suite needs at least one text "
                              "set or task")
        names = [s.name for s in self.texts] + [t.name for t in self.tasks]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ConfigError(f"{key + '.' if key else ''}texts, tasks: names must be unique, {dup[0]!r} is used twice")


@dataclass(frozen=True)
class TaskItem:
    candidates: tuple[tuple[str, str], ...]  # (context, continuation), the delimiter already on the continuation
    gold: int
    norm_chars: tuple[int, ...]  # per candidate: the characters acc_norm divides by (the choice, no delimiter)


def spread(n: int, cap: int | None) -> list[int]:
    """Indices of at most `cap` of n items, evenly spread (all of them without a cap)."""
    if cap is None or n <= cap:
        return list(range(n))
    return [k * n // cap for k in range(cap)]


def _field(obj: dict, key: str, kind, where: str):
    if key not in obj:
        raise EvalSetError(f"{where}: no {key!r} (the schema needs it)")
    value = obj[key]
    if kind is list:
        if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
            raise EvalSetError(f"{where}: {key!r} must be a non-empty list of strings, got {value!r:.80}")
    elif kind is int:
        if not isinstance(value, int) or isinstance(value, bool):
            raise EvalSetError(f"{where}: {key!r} must be an integer, got {value!r:.80}")
    elif not isinstance(value, kind):
        raise EvalSetError(f"{where}: {key!r} must be a {kind.__name__}, got {value!r:.80}")
    return value


def parse_item(obj, schema: Schema, where: str) -> TaskItem:
    if not isinstance(obj, dict):
        raise EvalSetError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    if schema == "mc":
        query, choices = _field(obj, "query", str, where), _field(obj, "choices", list, where)
        gold = _field(obj, "gold", int, where)
        candidates = tuple((query, DELIMITER + c) for c in choices)
        norm = tuple(len(c) for c in choices)
    elif schema == "schema":
        contexts, cont = _field(obj, "context_options", list, where), _field(obj, "continuation", str, where)
        gold = _field(obj, "gold", int, where)
        candidates = tuple((c, DELIMITER + cont) for c in contexts)
        norm = tuple(len(cont) for _ in contexts)
    elif schema == "lm":
        context, cont = _field(obj, "context", str, where), _field(obj, "continuation", str, where)
        candidates, gold, norm = ((context, DELIMITER + cont),), 0, (len(cont),)
    else:
        raise EvalSetError(f"{where}: unknown schema {schema!r} (mc, schema or lm)")
    if not 0 <= gold < len(candidates):
        raise EvalSetError(f"{where}: gold {gold} is not an index of its {len(candidates)} candidates")
    return TaskItem(candidates, gold, norm)


def read_task(cfg: TaskConfig) -> list[TaskItem]:
    """The task's items (capped, evenly spread); a malformed line is an EvalSetError naming file and line."""
    path = storage.path(cfg.path)
    items = []
    with open(storage.local_copy(path), encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"{path}:{n}"
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise EvalSetError(f"{where}: not JSON ({exc.msg} at column {exc.colno})") from None
            items.append(parse_item(obj, cfg.schema, where))
    if not items:
        raise EvalSetError(f"{path}: no items")
    return [items[i] for i in spread(len(items), cfg.max_items)]


def read_texts(cfg: TextSetConfig) -> list[str]:
    """The set's documents (capped, evenly spread); empty documents are left out (they have no bytes)."""
    path = storage.path(cfg.path)
    if cfg.format == "text":
        docs = [storage.local_copy(path).read_text(encoding="utf-8")]
    elif cfg.format == "jsonl":
        docs = []
        with open(storage.local_copy(path), encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise EvalSetError(f"{path}:{n}: not JSON ({exc.msg} at column {exc.colno})") from None
                text = obj.get(cfg.text_field) if isinstance(obj, dict) else None
                if not isinstance(text, str):
                    raise EvalSetError(f"{path}:{n}: no string {cfg.text_field!r} field")
                docs.append(text)
    elif cfg.format == "parquet":
        import pyarrow.parquet as pq

        table = pq.read_table(storage.local_copy(path))
        if cfg.text_field not in table.column_names:
            raise EvalSetError(f"{path}: no column {cfg.text_field!r} (has {', '.join(table.column_names)})")
        docs = [t for t in table.column(cfg.text_field).to_pylist() if isinstance(t, str)]
    elif cfg.format == "stage":
        docs = _stage_texts(path)
    else:
        raise EvalSetError(f"{path}: unknown text format {cfg.format!r}")
    docs = [d[:cfg.max_doc_chars] if cfg.max_doc_chars else d for d in docs if d]
    if not docs:
        raise EvalSetError(f"{path}: no documents")
    return [docs[i] for i in spread(len(docs), cfg.max_docs)]


def _stage_texts(manifest_path) -> list[str]:
    """The kept documents of a stage, in the manifest's file order (a held-out split written by a pipeline)."""
    from pipelines.manifest import load_manifest
    from pipelines.stage_files import read_shard

    manifest = load_manifest(manifest_path)
    root = storage.path(manifest_path).parents[2]  # WORKDIR/stages/NAME/manifest.json
    docs = []
    for f in manifest["files"]:
        if f["kind"] == "kept":
            for t in read_shard(root / f["path"], 1000):
                docs += t.column("text").to_pylist()
    return docs


def suite_files(cfg: EvalSuiteConfig) -> list[dict]:
    """Every file the suite reads, with its sha256 (what an evaluation run logs as its inputs)."""
    return [{"name": s.name, "path": str(s.path), "sha256": sha256_file(storage.path(s.path))}
            for s in [*cfg.texts, *cfg.tasks]]


def suite_digest(cfg: EvalSuiteConfig, files: list[dict] | None = None) -> str:
    """What the suite is: its files' content and every option that changes a number (not where files are)."""
    files = files if files is not None else suite_files(cfg)
    body = {"texts": [{k: v for k, v in vars(s).items() if k != "path"} for s in cfg.texts],
            "tasks": [{k: v for k, v in vars(t).items() if k != "path"} for t in cfg.tasks],
            "seq_len": cfg.seq_len, "files": [f["sha256"] for f in files]}
    return canonical_sha256(body)


# --- requests and metrics ---------------------------------------------------------------------------------


def text_windows(ids: list[int], seq_len: int) -> list[tuple[tuple[int, ...], tuple[int, ...]]]:
    """(context, continuation) requests that score every token of `ids[1:]` exactly once (ids[0] is the eos
    before the document): windows of `seq_len` predictions, each after the first advancing by `seq_len // 2` and
    scoring only its new tokens (so each has at least `seq_len // 2` tokens of context), the last one aligned to
    the end."""
    if seq_len < 2:
        raise ValueError(f"seq_len must be at least 2, got {seq_len}")
    n = len(ids) - 1  # tokens to score: ids[1..n]
    out, done, stride = [], 0, seq_len // 2
    while done < n:
        stop = min(n, seq_len if done == 0 else done + stride)  # score targets (done, stop]
        start = max(0, stop - seq_len)  # the window's first input position
        out.append((tuple(ids[start:done + 1]), tuple(ids[done + 1:stop + 1])))
        done = stop
    return out


@dataclass
class PreparedSet:
    name: str
    kind: Literal["text", "task"]
    schema: str | None = None
    # text: per document (first request, end request, UTF-8 bytes); task: per item (first request, gold,
    # norm_chars, gold continuation's UTF-8 bytes), the item's candidates being consecutive requests
    docs: list[tuple[int, int, int]] = field(default_factory=list)
    items: list[tuple[int, int, tuple[int, ...], int]] = field(default_factory=list)


@dataclass
class PreparedSuite:
    requests: list[tuple[tuple[int, ...], tuple[int, ...]]]
    sets: list[PreparedSet]


def read_suite(cfg: EvalSuiteConfig) -> tuple[list[list[str]], list[list[TaskItem]]]:
    """Every set of the suite read and checked (a malformed line fails here, before any model is loaded)."""
    return [read_texts(ts) for ts in cfg.texts], [read_task(t) for t in cfg.tasks]


def prepare_suite(cfg: EvalSuiteConfig, tokenizer, seq_len: int, read=None) -> PreparedSuite:
    """Every request of the suite, tokenized (`tokenizer`: pipelines.tokenizer.Tokenizer or anything with
    `encode_batch` and `eos_id`). A context starts with the eos (what precedes a document in training). `read`:
    `read_suite`'s outcome, when the caller read the sets already."""
    eos = int(tokenizer.eos_id)
    texts, tasks = read if read is not None else read_suite(cfg)
    requests: list = []
    sets = []
    for ts, docs in zip(cfg.texts, texts):
        prepared = PreparedSet(ts.name, "text")
        for doc, ids in zip(docs, tokenizer.encode_batch(docs)):
            first = len(requests)
            requests += text_windows([eos, *map(int, ids)], seq_len)
            prepared.docs.append((first, len(requests), len(doc.encode("utf-8"))))
        sets.append(prepared)
    for task, items in zip(cfg.tasks, tasks):
        strings = [s for item in items for pair in item.candidates for s in pair]
        encoded = iter(tokenizer.encode_batch(strings))
        prepared = PreparedSet(task.name, "task", task.schema)
        for item in items:
            first = len(requests)
            for _ in item.candidates:
                context, continuation = next(encoded), next(encoded)
                if len(continuation) == 0:
                    raise EvalSetError(f"{task.path}: an item's continuation has no tokens")
                requests.append(((eos, *map(int, context)), tuple(map(int, continuation))))
            gold_bytes = len(item.candidates[item.gold][1].encode("utf-8"))
            prepared.items.append((first, item.gold, item.norm_chars, gold_bytes))
        sets.append(prepared)
    return PreparedSuite(requests, sets)


LN2 = 0.6931471805599453


def suite_metrics(prepared: PreparedSuite, scores) -> dict:
    """Per set: bits per byte (sum of NLL in bits over sum of UTF-8 bytes: of the documents, or of the gold
    continuations); per task also `acc` (the candidate with the highest log-likelihood is the gold one),
    `acc_norm` (the same after dividing each log-likelihood by its choice's length in characters, as
    lm-evaluation-harness's `ConfigurableTask.process_results` does for multiple choice, lm_eval/api/task.py),
    `acc_centered` ((acc - chance) / (1 - chance), chance the mean of 1 / candidates: DCLM's CORE) and, for `lm`
    tasks, acc is greedy decoding reproducing the continuation (chance 0). `scores[i]` has `.nll` (nats) and
    `.greedy`. `mean_bpb` is the mean of the sets' bits per byte, each set weighing the same."""
    out: dict = {}
    for s in prepared.sets:
        if s.kind == "text":
            nll = sum(scores[i].nll for first, end, _ in s.docs for i in range(first, end))
            size = sum(b for _, _, b in s.docs)
            tokens = sum(scores[i].tokens for first, end, _ in s.docs for i in range(first, end))
            out[s.name] = {"bpb": nll / LN2 / size, "documents": len(s.docs), "bytes": size, "tokens": tokens}
            continue
        acc = acc_norm = chance = gold_nll = gold_bytes = 0.0
        for first, gold, norm, nbytes in s.items:
            n = len(norm)
            ll = [-scores[first + k].nll for k in range(n)]
            gold_nll += scores[first + gold].nll
            gold_bytes += nbytes
            if s.schema == "lm":
                acc += scores[first].greedy
                acc_norm += scores[first].greedy
                continue
            best = max(range(n), key=lambda k: (ll[k], -k))  # ties: the first candidate, as numpy's argmax
            best_norm = max(range(n), key=lambda k: (ll[k] / max(norm[k], 1), -k))
            acc += best == gold
            acc_norm += best_norm == gold
            chance += 1.0 / n
        items = len(s.items)
        acc, acc_norm, chance = acc / items, acc_norm / items, chance / items
        out[s.name] = {"bpb": gold_nll / LN2 / gold_bytes, "acc": acc, "acc_norm": acc_norm,
                       "acc_centered": (acc - chance) / (1.0 - chance), "chance": chance, "items": items}
    out["mean_bpb"] = sum(v["bpb"] for v in out.values()) / len(prepared.sets)
    return out


def suite_texts(cfg: EvalSuiteConfig) -> list[tuple[str, str, list[str]]]:
    """(set name, item id, texts) of every item of every task file (all of it, whatever `max_items`: a cap chooses
    what is scored, not what training may see) and every held-out document (`max_doc_chars` and `max_docs` ignored
    too): what decontamination keeps out of training. A task item's texts are its candidates, context and
    continuation joined; its id is its position in the file."""
    import dataclasses

    out = []
    for task in cfg.tasks:
        for k, item in enumerate(read_task(dataclasses.replace(task, max_items=None))):
            out.append((task.name, str(k), [context + continuation for context, continuation in item.candidates]))
    for ts in cfg.texts:
        for k, doc in enumerate(read_texts(dataclasses.replace(ts, max_docs=None, max_doc_chars=None))):
            out.append((ts.name, str(k), [doc]))
    return out
