"""Stages of your own, added to the chain by the pipeline config's `user_stages:` list, each after a named stage.

Three kinds, one entry each:

    user_stages:
      - name: url_blocklist                 # its folders, MLflow run, drop reasons and lineage go by this name
        after: ingest                       # a stage of the chain (or an earlier user stage) it follows
        datatrove: datatrove.pipeline.filters.URLFilter   # any datatrove filter class, by class path
        options: {use_integrated_lists: false}            # its keyword arguments, checked against its signature
        options_from_files: {extra_domains: blocklist.txt}  # an argument read from a file, one item a line
      - name: my_stage
        after: filter
        stage: mypkg.stages:MyStage         # a pipelines.stages.base.Stage subclass
        options: {min_words: 50}            # built into MyStage.Config (a dataclass), checked when the config loads
      - name: long_enough
        after: filter
        keep: mypkg.rules:long_enough       # keep(doc) -> True (keep), False or a string (drop, the string its reason)

Every one is a one-to-one stage: it fuses into the pass of the stage it follows (one read and one write of the
documents) and gets what a built-in stage gets: its dropped file with reasons, the accounting check, a manifest,
an MLflow child run, a resume key, lineage. The resume key holds the import path, the options and the sha256 of
the source file that defines the class or function (for a datatrove filter: datatrove's version), so editing the
code re-runs the stage and what follows it.

Rules a stage class must keep (checked on every batch; a batch that breaks one is refused with the rule):
`apply(batch, ctx)` returns a pyarrow Table with the batch's columns and types, the same rows in the same order
(the `id` column unchanged), each row kept (REASON "") or given a reason. A stage, filter or function that raises
is reported with the stage, the shard and the id of the document it raised on.

Drop reasons: a stage's own strings; a datatrove filter's as datatrove names them, "<name>:<reason>" (e.g.
"url_blocklist:domain"), or "<name>" when it gives none; a function's string, or "<name>" for False.
Where the code comes from: `package.module:attribute` is imported from the Python path, the config file's folder
or the current folder; its module (or its top-level package) travels to the Ray workers with the job.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import inspect
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pyarrow as pa

from pipelines.errors import UsageError
from pipelines.records import REASON, dump_metadata, load_metadata
from pipelines.stages.base import ShardContext, Stage, set_column
from pipelines.typed_config import ConfigError, PathStr, from_dict

NAME = re.compile(r"^[a-z][a-z0-9_]*$")


class StageError(UsageError):
    """A user's stage, filter or function raised on a document, or returned a batch that breaks the rules."""


@dataclass(frozen=True)
class UserStageConfig:
    name: str  # its folders, MLflow run, drop reasons and lineage go by this name
    after: str  # the stage (built-in or an earlier user stage) it follows
    stage: str | None = None  # "package.module:Class", a pipelines.stages.base.Stage subclass
    datatrove: str | None = None  # a datatrove filter class, e.g. "datatrove.pipeline.filters.URLFilter"
    keep: str | None = None  # "package.module:function", keep(doc: dict) -> bool | str
    options: dict[str, Any] = field(default_factory=dict)  # the stage's Config, or the filter's keyword arguments
    # filter keyword arguments read from a text file, one item a line (blank and '#' lines skipped)
    options_from_files: dict[str, PathStr] = field(default_factory=dict)

    @property
    def kind(self) -> str:
        return next(k for k in ("stage", "datatrove", "keep") if getattr(self, k))

    @property
    def target(self) -> str:
        return getattr(self, self.kind)

    def validate(self, key: str) -> None:
        kinds = [k for k in ("stage", "datatrove", "keep") if getattr(self, k)]
        if len(kinds) != 1:
            raise ConfigError(f"{key}: give exactly one of stage, datatrove and keep (got {', '.join(kinds) or 'none'})")
        if not NAME.match(self.name):
            raise ConfigError(f"{key}.name: lowercase letters, digits and '_', starting with a letter; got {self.name!r}")
        if self.options_from_files and self.kind != "datatrove":
            raise ConfigError(f"{key}.options_from_files: only for a datatrove filter's keyword arguments")
        make(self, key)  # imports the code and checks the options now, not on a worker hours later


def load_object(spec: str, key: str) -> Any:
    """`package.module:attribute` (or `package.module.attribute`), imported, as a ConfigError naming `key`."""
    module, sep, attr = spec.partition(":")
    if not sep:
        module, _, attr = spec.rpartition(".")
    if not module or not attr:
        raise ConfigError(f"{key}: expected 'package.module:name', got {spec!r}")
    try:
        mod = importlib.import_module(module)
    except ImportError as exc:
        raise ConfigError(f"{key}: cannot import {module!r} ({exc}); it is looked for on the Python path, in the "
                          "config file's folder and in the current folder") from None
    except Exception as exc:  # noqa: BLE001  (the user's module raised while importing)
        raise ConfigError(f"{key}: importing {module!r} raised {type(exc).__name__}: {exc}") from None
    try:
        return getattr(mod, attr)
    except AttributeError:
        raise ConfigError(f"{key}: module {module!r} has no {attr!r}") from None


def source_sha256(obj: Any) -> str:
    """sha256 of the file that defines `obj` ("" where there is none, e.g. a builtin)."""
    try:
        path = inspect.getsourcefile(obj)
    except TypeError:
        return ""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest() if path else ""


def read_list(path: str, key: str) -> list[str]:
    from pipelines import storage

    try:
        lines = storage.path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{key}: cannot read {path} ({exc})") from None
    return [s.strip() for s in lines if s.strip() and not s.lstrip().startswith("#")]


def make(cfg: UserStageConfig, key: str = "user_stages") -> Stage:
    """The stage an entry describes, its code imported and its options checked (ConfigErrors name the key)."""
    obj = load_object(cfg.target, f"{key}.{cfg.kind}")
    if cfg.kind == "stage":
        if not (isinstance(obj, type) and issubclass(obj, Stage)):
            raise ConfigError(f"{key}.stage: {cfg.stage} is not a subclass of pipelines.stages.base.Stage")
        if obj.needs_global or obj.sink:
            raise ConfigError(f"{key}.stage: {cfg.stage} declares needs_global or sink; a user stage is one-to-one")
        config_cls = obj.Config
        if config_cls is None and cfg.options:
            raise ConfigError(f"{key}.options: {cfg.stage} declares no Config dataclass, so it takes no options")
        options = from_dict(config_cls, cfg.options, f"{key}.options") if config_cls is not None else None
        return UserStage(cfg, obj(options))
    if cfg.kind == "datatrove":
        from datatrove.pipeline.filters.base_filter import BaseFilter

        if not (isinstance(obj, type) and issubclass(obj, BaseFilter)):
            raise ConfigError(f"{key}.datatrove: {cfg.datatrove} is not a datatrove filter (a BaseFilter subclass)")
        args = {**cfg.options, **{k: read_list(p, f"{key}.options_from_files.{k}") for k, p in cfg.options_from_files.items()}}
        if "exclusion_writer" in args:
            raise ConfigError(f"{key}.options.exclusion_writer: tokenmill writes the dropped documents itself")
        try:
            inspect.signature(obj).bind(**args)
        except TypeError as exc:
            params = [p for p in inspect.signature(obj).parameters if p != "exclusion_writer"]
            raise ConfigError(f"{key}.options: {exc} (the arguments of {obj.__name__}: {', '.join(params)})") from None
        return DatatroveFilterStage(cfg, obj, args)
    if not callable(obj) or isinstance(obj, type):
        raise ConfigError(f"{key}.keep: {cfg.keep} is not a function")
    if cfg.options:
        raise ConfigError(f"{key}.options: a keep function takes no options")
    return KeepStage(cfg, obj)


def _doc(row: dict) -> dict:
    return {"id": row["id"], "text": row["text"], "source": row["source"], "url": row["url"],
            "metadata": load_metadata(row["metadata"])}


class _Named(Stage):
    """What the three kinds share: the entry's name, its params and its code's place."""

    def __init__(self, cfg: UserStageConfig, code: Any):
        super().__init__(cfg)
        self.name = cfg.name  # an instance attribute: every user stage has its own
        self.code = code

    @property
    def defining(self) -> Any:
        """The class or function the user wrote (its source file is hashed and shipped)."""
        return self.code

    def params(self) -> dict:
        return {self.cfg.kind: self.cfg.target, "options": self.options(),
                "source_sha256": source_sha256(self.defining)}

    def options(self) -> Any:
        return dict(self.cfg.options)

    def modules(self) -> list[str]:
        """The file or package folder the workers need to import this stage's code (empty: installed code)."""
        mod = sys.modules.get(getattr(self.defining, "__module__", "") or "")
        top = sys.modules.get(mod.__name__.split(".")[0]) if mod else None
        path = getattr(top, "__file__", None)
        if not path or "site-packages" in path or "dist-packages" in path:
            return []
        return [str(Path(path).parent) if Path(path).name == "__init__.py" else path]

    def _failed(self, ctx: ShardContext, doc_id: str, exc: BaseException) -> StageError:
        return StageError(f"stage {self.name!r} ({self.cfg.target}) raised on shard {ctx.shard}, document {doc_id}: "
                          f"{type(exc).__name__}: {exc}")


class UserStage(_Named):
    """A user's Stage subclass, its batches checked against the shape's rules."""

    def options(self) -> Any:
        opts = self.code.cfg
        return dataclasses.asdict(opts) if dataclasses.is_dataclass(opts) else {}

    @property
    def defining(self) -> Any:
        return type(self.code)  # `code` is the user's stage instance

    def open_shard(self, ctx: ShardContext) -> None:
        self.code.open_shard(ctx)

    def close_shard(self, ctx: ShardContext) -> dict:
        out = self.code.close_shard(ctx)
        return out if isinstance(out, dict) else {}

    def collect(self, batch: pa.Table, ctx: ShardContext) -> dict:
        return {}  # one-to-one: nothing cluster-wide

    def report(self, extras: list[dict], state: dict):
        return self.code.report(extras, state)

    def apply(self, batch: pa.Table, ctx: ShardContext) -> pa.Table:
        try:
            out = self.code.apply(batch, ctx)
        except Exception:  # noqa: BLE001  (find the document it raised on, one row at a time)
            for i in range(batch.num_rows):
                try:
                    self.code.apply(batch.slice(i, 1), ctx)
                except Exception as exc:  # noqa: BLE001
                    raise self._failed(ctx, batch.column("id")[i].as_py(), exc) from exc
            raise
        self._check(batch, out, ctx)
        return out

    def _check(self, batch: pa.Table, out: Any, ctx: ShardContext) -> None:
        def refuse(rule: str) -> StageError:
            return StageError(f"stage {self.name!r} ({self.cfg.target}) on shard {ctx.shard}: apply() {rule}")

        if not isinstance(out, pa.Table):
            raise refuse(f"returned a {type(out).__name__}, not a pyarrow Table")
        if out.num_rows != batch.num_rows:
            raise refuse(f"returned {out.num_rows} rows for {batch.num_rows}: rows may be dropped (a reason in "
                         f"{REASON}), never added or removed")
        if out.schema != batch.schema:
            want, got = dict(zip(batch.schema.names, batch.schema.types)), dict(zip(out.schema.names, out.schema.types))
            diff = sorted(set(want.items()) ^ set(got.items()), key=str)
            raise refuse(f"changed the columns (every batch keeps {', '.join(batch.schema.names)} and their types; "
                         f"differs at {diff[0][0]}: {got.get(diff[0][0], 'missing')})")
        if not out.column("id").equals(batch.column("id")):
            ids_in, ids_out = batch.column("id").to_pylist(), out.column("id").to_pylist()
            i = next(i for i, (a, b) in enumerate(zip(ids_in, ids_out)) if a != b)
            raise refuse(f"reordered or renamed the rows (row {i} was {ids_in[i]}, is {ids_out[i]}): the same rows "
                         "in the same order")
        if out.column(REASON).null_count:
            raise refuse(f"left {REASON} null: \"\" keeps a document, a string drops it")


class DatatroveFilterStage(_Named):
    """A datatrove filter, built once per worker process, called per document like datatrove's BaseFilter.run."""

    def __init__(self, cfg: UserStageConfig, cls: type, args: dict):
        super().__init__(cfg, cls)
        self.args = args
        self._filter = None

    def params(self) -> dict:
        from importlib.metadata import version

        return {"datatrove": self.cfg.datatrove, "options": self.args, "datatrove_version": version("datatrove"),
                "source_sha256": source_sha256(self.code)}

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_filter": None}  # built where it runs (a filter may hold what does not pickle)

    def _built(self):
        if self._filter is None:
            self._filter = offline(self.code(**self.args))
        return self._filter

    def apply(self, batch: pa.Table, ctx: ShardContext) -> pa.Table:
        from datatrove.data import Document
        from datatrove.pipeline.filters.base_filter import get_filter_result

        flt = self._built()
        texts, metas, reasons = [], [], []
        for row in batch.to_pylist():
            meta = load_metadata(row["metadata"])
            doc = Document(text=row["text"], id=row["id"], metadata={**meta, "url": row["url"], "source": row["source"]})
            try:
                keep, why = get_filter_result(flt.filter(doc))
            except Exception as exc:  # noqa: BLE001
                raise self._failed(ctx, row["id"], exc) from exc
            for k in ("url", "source"):
                doc.metadata.pop(k, None)
            texts.append(doc.text)  # a filter may edit what it keeps (datatrove's C4 filter drops lines)
            metas.append(dump_metadata({**meta, **doc.metadata}))
            reasons.append("" if keep else f"{self.name}:{why}" if why else self.name)
        batch = set_column(batch, "text", texts)
        batch = set_column(batch, "metadata", metas)
        return set_column(batch, REASON, reasons)


class KeepStage(_Named):
    """keep(doc) -> True keeps it; False (reason: the stage's name) or a non-empty string (the reason) drops it.
    `doc` is a dict: id, text, source, url, metadata (a dict)."""

    def __init__(self, cfg: UserStageConfig, fn: Callable[[dict], bool | str]):
        super().__init__(cfg, fn)

    def apply(self, batch: pa.Table, ctx: ShardContext) -> pa.Table:
        reasons = []
        for row in batch.to_pylist():
            try:
                verdict = self.code(_doc(row))
            except Exception as exc:  # noqa: BLE001
                raise self._failed(ctx, row["id"], exc) from exc
            if verdict is True or verdict == "":
                reasons.append("")
            elif verdict is False:
                reasons.append(self.name)
            elif isinstance(verdict, str):
                reasons.append(verdict)
            else:
                raise StageError(f"stage {self.name!r} ({self.cfg.keep}) on shard {ctx.shard}, document {row['id']}: "
                                 f"keep() returned {verdict!r}; expected True, False or a drop reason (a string)")
        return set_column(batch, REASON, reasons)


def offline(flt):
    """tldextract (datatrove's URLFilter) fetches the public suffix list from the network when first used; tokenmill
    runs offline, on the snapshot tldextract ships."""
    extractor = getattr(flt, "tldextractor", None)
    if extractor is not None and type(extractor).__name__ == "TLDExtract":
        from tldextract import TLDExtract

        flt.tldextractor = TLDExtract(suffix_list_urls=(), cache_dir=None)
    return flt
