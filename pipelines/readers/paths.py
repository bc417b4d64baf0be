"""Expanding input globs into (absolute path, relpath) pairs; relpaths name documents in ids. A pattern may
be a local path or a filesystem URI (`s3://bucket/crawl/**/*.warc.gz`); a URI's matches are URIs."""

from __future__ import annotations

import glob
import os
import re
from pathlib import Path

from pipelines import storage

_MAGIC = re.compile(r"[*?[]")


class InputError(ValueError):
    """Input paths that cannot be read as given (a directory, two files with one relative path)."""


def _static_base(pattern: str) -> str:
    """The directory part of a pattern before its first glob character ("data/**/*.gz" -> "data")."""
    parts = Path(pattern).parts
    static = []
    for part in parts:
        if _MAGIC.search(part):
            break
        static.append(part)
    else:  # a plain file path: relative to its directory
        static = static[:-1]
    return os.path.join(*static) if static else "."


def list_inputs(paths: list[str]) -> list[tuple[str, str]]:
    """Sorted (absolute path, relpath) for every file the patterns match (`**` recurses).

    relpath is relative to the pattern's non-glob base directory, "/"-separated. A pattern that
    matches no file is an error (a typo must not silently give an empty dataset), and so are two
    files with the same relpath (their documents would get the same ids).
    """
    if isinstance(paths, str):
        paths = [paths]
    if not paths:
        raise InputError("no input paths given")
    found: dict[str, str] = {}
    for pattern in paths:
        if storage.is_uri(pattern):
            for match, rel in _list_uri(pattern):
                found.setdefault(match, rel)
            continue
        expanded = os.path.expanduser(pattern)
        base = os.path.abspath(_static_base(expanded))
        matches = [m for m in glob.glob(expanded, recursive=True) if os.path.isfile(m)]
        if not matches:
            if os.path.isdir(expanded):
                hint = expanded.rstrip("/") + "/**/*"
                raise InputError(f"input {pattern!r} is a directory: give a glob of its files, e.g. {hint!r}")
            raise FileNotFoundError(f"input pattern {pattern!r} matches no file (relative to {os.getcwd()})")
        for match in matches:
            path = os.path.abspath(match)
            found.setdefault(path, Path(os.path.relpath(path, base)).as_posix())
    owners: dict[str, str] = {}
    for path, rel in found.items():
        if owners.setdefault(rel, path) != path:
            raise InputError(f"inputs {owners[rel]!r} and {path!r} have the same relative path {rel!r}; "
                             "use one pattern over their common directory")
    return sorted(found.items())


def _list_uri(pattern: str) -> list[tuple[str, str]]:
    """(URI, relpath) of the objects a URI pattern matches; the same rules as local patterns."""
    parts = pattern.split("://", 1)[1].split("/")
    static = []
    for part in parts[1:]:
        if _MAGIC.search(part):
            break
        static.append(part)
    whole = len(static) == len(parts) - 1
    base = storage.path(pattern.split("://", 1)[0] + "://" + "/".join([parts[0], *(static[:-1] if whole else static)]))
    rest = "/".join(parts[1 + len(static):]) if not whole else parts[-1]
    if whole:
        target = storage.path(pattern)
        if target.is_file():
            return [(str(target), target.name)]
        if target.is_dir():
            raise InputError(f"input {pattern!r} is a directory: give a glob of its objects, e.g. {pattern.rstrip('/') + '/**/*'!r}")
        raise FileNotFoundError(f"input {pattern!r}: no such object")
    matches = [(str(m), str(m.relative_to(base))) for m in base.glob(rest) if m.is_file()]
    if not matches:
        raise FileNotFoundError(f"input pattern {pattern!r} matches no object")
    return matches
