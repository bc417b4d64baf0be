"""Errors at the door: everything a run will need from the filesystem, checked before Ray starts.

`tokenmill ... --check` and the start of every run call these, so a typo in a glob or a model path is
one line naming the key, not a Ray traceback after every earlier stage has run. Each check opens what
it names (fastText models by their magic number, SentencePiece models by loading them, dedup indexes
by their manifests) and returns a line saying what it found.
"""

from __future__ import annotations

import struct
from pathlib import Path

from pipelines.typed_config import ConfigError
from pipelines import storage
from pipelines.readers.paths import InputError, list_inputs

FASTTEXT_MAGIC = 793712314  # fastText's FASTTEXT_FILEFORMAT_MAGIC_INT32, the first 4 bytes of a .bin model


def fasttext_model(path: str, key: str) -> str:
    p = _existing_file(path, key)
    with p.open("rb") as f:
        head = f.read(8)
    if len(head) < 8 or struct.unpack("<i", head[:4])[0] != FASTTEXT_MAGIC:
        raise ConfigError(f"{key}: {p} is not a fastText .bin model (wrong magic number; a .ftz or .vec will not do)")
    return f"{key}: fastText model {p} ({p.stat().st_size / 1e6:.1f} MB)"


def sentencepiece_model(path: str, key: str) -> str:
    import sentencepiece as spm

    p = _existing_file(path, key)
    try:
        sp = spm.SentencePieceProcessor(model_file=str(storage.local_copy(p)))
    except (OSError, RuntimeError) as exc:
        raise ConfigError(f"{key}: {p} is not a SentencePiece model ({str(exc).splitlines()[0]})") from None
    return f"{key}: SentencePiece model {p} ({sp.get_piece_size()} pieces)"


def _existing_file(path: str, key: str):
    p = storage.path(path).expanduser().resolve()
    if p.is_dir():
        raise ConfigError(f"{key}: {p} is a directory, not a file")
    if not p.is_file():
        raise ConfigError(f"{key}: no such file {p}")
    return p


def _quality_train(path: str) -> str:
    from orchestration.config.schema import load_yaml_config
    from pipelines.typed_config import from_dict
    from orchestration.corpus.quality_train import QualityTrainJob

    job = from_dict(QualityTrainJob, load_yaml_config(_existing_file(path, "quality.train"), schema=QualityTrainJob))
    counts = []
    for side in ("positives", "negatives"):
        for i, src in enumerate(getattr(job, side)):
            try:
                counts.append(f"{src.name} {len(list_inputs(src.paths))} files")
            except (InputError, FileNotFoundError) as exc:
                raise ConfigError(f"quality.train: {path}: {side}.{i}.paths: {exc}") from None
    return f"quality.train: {path} (trained by the run: {', '.join(counts)})"


def check_pipeline(cfg) -> list[str]:
    from orchestration.corpus.dedup_index import load_previous
    from pipelines.stages import REGISTRY

    lines = []
    for i, inp in enumerate(cfg.inputs):
        if inp.format == "hf":
            local = Path(inp.hf_dataset).expanduser()
            lines.append(f"inputs.{i} ({inp.name}): Hugging Face dataset {inp.hf_dataset}"
                         + (" (local)" if local.exists() else " (hub or cache: opened when the run starts)"))
            continue
        try:
            files = list_inputs(inp.paths)
        except (InputError, FileNotFoundError) as exc:
            raise ConfigError(f"inputs.{i}.paths: {exc}") from None
        size = sum(storage.path(p).stat().st_size for p, _ in files)
        lines.append(f"inputs.{i} ({inp.name}): {len(files)} files, {size / 1e6:.1f} MB")
    opens = {"fasttext": fasttext_model, "sentencepiece": sentencepiece_model,
             "quality_train": lambda path, key: _quality_train(path)}
    for cls in REGISTRY.values():  # the models (and training configs) each stage's sections name
        lines += [opens[kind](path, key) for key, path, kind in cls.files(cfg)]
    previous = load_previous(cfg)  # DedupIndexError names the index and what is wrong with it
    lines += [f"dedup_index.previous: {m['manifest_path']}" for m in previous]
    return lines


def check_train(cfg) -> list[str]:
    if not (cfg.data.manifest or cfg.data.sources) or not cfg.data.tokenizer:
        raise ConfigError("data.manifest (or data.sources) and data.tokenizer: both required (or use `tokenmill run`)")
    manifests = [(f"data.sources.{i}.manifest", s.manifest) for i, s in enumerate(cfg.data.sources)] \
        or [("data.manifest", cfg.data.manifest)]
    found = [(key, _existing_file(path, key)) for key, path in manifests]
    lines = [sentencepiece_model(cfg.data.tokenizer, "data.tokenizer")]
    import sentencepiece as spm

    vocab = spm.SentencePieceProcessor(model_file=str(storage.local_copy(cfg.data.tokenizer))).get_piece_size()
    mcfg = cfg.model_config(vocab)
    lines += [f"{key}: {path}" for key, path in found]
    if cfg.eval.suite:
        from orchestration.evaluation.run import load_suite
        from pipelines.evalsets import suite_files

        suite = load_suite(cfg.eval.suite)
        lines.append(f"eval.suite: {suite.name!r}, {len(suite_files(suite))} file(s) read and hashed")
    lines.append(f"model: d_model {mcfg.d_model}, {mcfg.n_layers} layers, vocabulary {vocab}")
    return lines
