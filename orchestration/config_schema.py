"""Validating YAML into typed dataclasses, with one-line errors that name the offending key.

Kept generic (driven by the dataclass type hints) so that each config file only declares its fields:
choices as `Literal[...]`, ranges as `Annotated[int, Range(lo=1)]` (aliases below), cross-field rules
in the dataclass's `validate(key)`.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import types
import typing
from pathlib import Path
from typing import Any, Union


class ConfigError(ValueError):
    """A config problem, phrased as one line that names the key."""


@dataclasses.dataclass(frozen=True)
class Range:
    """Bounds of a numeric field; `lo_open`/`hi_open` exclude the bound itself."""
    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False

    def check(self, value: Any, key: str) -> None:
        low = self.lo is not None and (value <= self.lo if self.lo_open else value < self.lo)
        high = self.hi is not None and (value >= self.hi if self.hi_open else value > self.hi)
        if low or high or value != value:  # NaN is in no range
            raise ConfigError(f"{key}: must be {self.describe()}, got {value!r}")

    def describe(self) -> str:
        lo = None if self.lo is None else f"{'>' if self.lo_open else '>='} {self.lo:g}"
        hi = None if self.hi is None else f"{'<' if self.hi_open else '<='} {self.hi:g}"
        if lo and hi:
            return f"in {'(' if self.lo_open else '['}{self.lo:g}, {self.hi:g}{')' if self.hi_open else ']'}"
        return lo or hi or "a number"


@dataclasses.dataclass(frozen=True)
class IsPath:
    """Marks a field as a file path or glob that a config names. A relative one is resolved on load against
    the folder of the config file it is written in (against the current folder when it comes from a
    command-line override); absolute paths, `~` paths and URIs (`s3://...`, `file://...`) are kept as they
    are. So `tokenmill run /elsewhere/configs/quickstart.yaml` works from any folder."""

    def check(self, value: Any, key: str) -> None:
        return None


PathStr = typing.Annotated[str, IsPath()]
PositiveInt = typing.Annotated[int, Range(lo=1)]
NonNegativeInt = typing.Annotated[int, Range(lo=0)]
PositiveFloat = typing.Annotated[float, Range(lo=0, lo_open=True)]
NonNegativeFloat = typing.Annotated[float, Range(lo=0)]
Fraction = typing.Annotated[float, Range(lo=0, hi=1)]  # a probability or share, 0 and 1 included


def _type_name(tp: Any) -> str:
    if typing.get_origin(tp) is typing.Annotated:
        return _type_name(typing.get_args(tp)[0])
    return getattr(tp, "__name__", str(tp).replace("typing.", ""))


def _coerce(value: Any, tp: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin is typing.Annotated:
        out = _coerce(value, args[0], key)
        for rule in args[1:]:
            rule.check(out, key)
        return out
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _coerce(value, arg, key)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if len(errors) == 1 else f"{key}: expected {_type_name(tp)}, got {value!r}")
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {type(value).__name__} {value!r}")
        return from_dict(tp, value, key)
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected a list, got {type(value).__name__} {value!r}")
        return [_coerce(v, args[0], f"{key}.{i}") for i, v in enumerate(value)]
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {type(value).__name__} {value!r}")
        return dict(value)
    if typing.get_origin(tp) is typing.Literal:
        if value not in args:
            raise ConfigError(f"{key}: must be one of {', '.join(map(repr, args))}, got {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return value
    raise ConfigError(f"{key}: unsupported type {_type_name(tp)}")


def from_dict(cls: type, data: dict, prefix: str = "") -> Any:
    """Build dataclass `cls` from `data`; unknown keys, missing keys and wrong types are ConfigErrors."""
    hints = typing.get_type_hints(cls, include_extras=True)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in data:
        if key not in fields:
            full = f"{prefix}.{key}" if prefix else str(key)
            raise ConfigError(f"{full}: unknown key (allowed: {', '.join(fields)})")
    kwargs = {}
    for name, field in fields.items():
        full = f"{prefix}.{name}" if prefix else name
        if name in data:
            kwargs[name] = _coerce(data[name], hints[name], full)
        elif field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
            raise ConfigError(f"{full}: required key is missing")
    obj = cls(**kwargs)
    check = getattr(obj, "validate", None)
    if check is not None:
        try:
            check(prefix)
        except ConfigError:
            raise
        except ValueError as exc:  # components outside orchestration/ (model/) raise plain ValueErrors
            raise ConfigError(str(exc)) from None
    return obj


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
