"""Reading a config file: strict YAML (duplicate keys, encoding and syntax errors named by file:line:col),
`dotted.key=value` overrides, and relative paths resolved once, against the config file's folder. The typed
dataclasses themselves are built by pipelines/typed_config.py (one path for every config)."""

from __future__ import annotations

import dataclasses
import functools
import os
import types
import typing
from pathlib import Path
from typing import Any, Union

from pipelines.typed_config import ConfigError, IsPath


def apply_override(data: dict, assignment: str) -> None:
    """Apply `dotted.key=value` (value parsed as YAML) to a raw config mapping, in place."""
    import yaml

    if "=" not in assignment:
        raise ConfigError(f"override {assignment!r}: expected dotted.key=value")
    key, raw = assignment.split("=", 1)
    try:
        value = yaml.load(raw, Loader=_strict_loader()) if raw != "" else ""
    except yaml.YAMLError as exc:
        raise ConfigError(f"override {key.strip()}: the value is not valid YAML ({_yaml_problem(exc)})") from None
    parts = key.strip().split(".")
    node: Any = data
    for i, part in enumerate(parts[:-1]):
        nxt = _child(node, part, ".".join(parts[: i + 1]))
        if nxt is None:
            nxt = {}
            _set(node, part, nxt, key)
        node = nxt
    _set(node, parts[-1], value, key)


def _child(node: Any, part: str, key: str) -> Any:
    if isinstance(node, list):
        return node[_index(node, part, key)]
    if not isinstance(node, dict):
        raise ConfigError(f"override {key}: {key.rsplit('.', 1)[0]} is not a mapping")
    return node.get(part)


def _set(node: Any, part: str, value: Any, key: str) -> None:
    if isinstance(node, list):
        node[_index(node, part, key)] = value
    elif isinstance(node, dict):
        node[part] = value
    else:
        raise ConfigError(f"override {key}: parent is not a mapping")


def _index(node: list, part: str, key: str) -> int:
    if not part.isdigit() or int(part) >= len(node):
        raise ConfigError(f"override {key}: {part!r} is not an index of a list of {len(node)}")
    return int(part)


def absolute_path(value: str, base: Path) -> str:
    """`value` resolved against `base` unless it is a URI or already absolute (globs are kept as globs)."""
    if "://" in value:
        return value
    path = Path(value).expanduser()
    return value if path.is_absolute() and not value.startswith("~") else os.path.normpath(base / path)


def resolve_paths(value: Any, tp: Any, base: Path) -> Any:
    """`value` (raw YAML data of type `tp`) with every IsPath field resolved against `base`."""
    if value is None:
        return None
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Annotated:
        if any(isinstance(a, IsPath) for a in args[1:]) and isinstance(value, str):
            return absolute_path(value, base)
        return resolve_paths(value, args[0], base)
    if origin in (Union, types.UnionType):
        for arg in (a for a in args if a is not type(None)):
            if (dataclasses.is_dataclass(arg) and isinstance(value, dict)) or \
                    (typing.get_origin(arg) is list and isinstance(value, list)) or \
                    (typing.get_origin(arg) is typing.Annotated and isinstance(value, str)):
                return resolve_paths(value, arg, base)
        return value
    if dataclasses.is_dataclass(tp) and isinstance(value, dict):
        hints = typing.get_type_hints(tp, include_extras=True)
        return {k: resolve_paths(v, hints[k], base) if k in hints else v for k, v in value.items()}
    if origin is list and isinstance(value, list):
        return [resolve_paths(v, args[0], base) for v in value]
    if origin is dict and isinstance(value, dict) and len(args) == 2:
        return {k: resolve_paths(v, args[1], base) for k, v in value.items()}
    return value


def field_type(cls: type, dotted: str) -> Any:
    """The declared type at a dotted key (`inputs.0.paths`), or Any where the schema does not say."""
    tp: Any = cls
    for part in dotted.split("."):
        while True:  # unwrap Optional / Annotated down to a dataclass or list
            origin, args = typing.get_origin(tp), typing.get_args(tp)
            if origin in (Union, types.UnionType):
                inner = [a for a in args if a is not type(None)]
                tp = next((a for a in inner if dataclasses.is_dataclass(a) or typing.get_origin(a) is list), inner[0])
            elif origin is typing.Annotated and not any(isinstance(a, IsPath) for a in args[1:]):
                tp = args[0]
            else:
                break
        if dataclasses.is_dataclass(tp):
            tp = typing.get_type_hints(tp, include_extras=True).get(part, Any)
        elif typing.get_origin(tp) is list and part.isdigit():
            tp = typing.get_args(tp)[0]
        else:
            return Any
    return tp


@functools.lru_cache(maxsize=1)
def _strict_loader():
    import yaml

    class Loader(yaml.SafeLoader):
        """PyYAML's safe loader, refusing a key written twice in one mapping (PyYAML keeps the last one
        silently: `minhash:` twice would drop the first block's settings without a word)."""

        def construct_mapping(self, node, deep=False):
            seen: dict = {}
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=True)
                try:
                    first = seen.setdefault(key, key_node.start_mark.line + 1)
                except TypeError:  # an unhashable key: PyYAML's own error says so
                    continue
                if first != key_node.start_mark.line + 1:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"key {key!r} appears twice (first on line {first})", key_node.start_mark)
            return super().construct_mapping(node, deep=deep)

    return Loader


def _yaml_problem(exc) -> str:
    """PyYAML's error in one line: what is wrong (the mark is given separately)."""
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    context = getattr(exc, "context", None)
    return f"{context}: {problem}" if context and problem and context not in problem else problem


def read_yaml(path: Path):
    """The YAML document in `path`, or a ConfigError naming the file, line and column: text that is not
    UTF-8 (a Latin-1 or UTF-16 file), a key written twice in one mapping, or any syntax error (a tab
    used for indentation, an unclosed bracket)."""
    import yaml

    raw = path.read_bytes()
    if raw[:2] in (b"\xff\xfe", b"\xfe\xff") or raw[:4] in (b"\xff\xfe\x00\x00", b"\x00\x00\xfe\xff"):
        raise ConfigError(f"{path}: the file is UTF-16 or UTF-32 (it starts with that byte-order mark); "
                          "save it as UTF-8")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        col = exc.start - (raw.rfind(b"\n", 0, exc.start) + 1) + 1
        raise ConfigError(f"{path}:{line}:{col}: not UTF-8 text (byte 0x{raw[exc.start]:02x}; a Latin-1 or "
                          "Windows-1252 file?): save it as UTF-8") from None
    try:
        return yaml.load(text, Loader=_strict_loader())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(path)
        raise ConfigError(f"{where}: not valid YAML: {_yaml_problem(exc)}") from None


def load_yaml_config(path: str | Path, overrides: list[str] = (), schema: type | None = None) -> dict:
    """The raw mapping of a YAML config with `dotted.key=value` overrides applied. With `schema`, IsPath
    fields are made absolute: the file's own against its folder, the overrides' against the current one."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such config file")
    data = read_yaml(path) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping")
    if schema is not None:
        data = resolve_paths(data, schema, path.resolve().parent)
    for assignment in overrides:
        apply_override(data, assignment)
        if schema is not None:
            key = assignment.split("=", 1)[0].strip()
            parts = key.split(".")
            node: Any = data
            for i, part in enumerate(parts[:-1]):
                node = _child(node, part, ".".join(parts[: i + 1]))
            last = int(parts[-1]) if isinstance(node, list) else parts[-1]
            node[last] = resolve_paths(node[last], field_type(schema, key), Path.cwd())
    return data
