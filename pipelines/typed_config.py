"""Typed configs: dataclasses built from plain mappings, with one-line errors that name the offending key.

Generic (driven by the dataclass type hints), so each component declares its own config next to itself (a
stage's in its stage file, the model's in model/config.py) and only its fields: choices as `Literal[...]`,
ranges as `Annotated[int, Range(lo=1)]` (aliases below), cross-field rules in the dataclass's `validate(key)`.
Reading YAML, overrides and relative paths is orchestration/config/schema.py's business.
"""

from __future__ import annotations

import dataclasses
import types
import typing
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
        if args:  # dict[str, T]: every value typed and checked, named by its key
            return {_coerce(k, args[0], key): _coerce(v, args[1], f"{key}.{k}") for k, v in value.items()}
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
