"""Where files live: local paths, or filesystem URIs (`s3://`, `gs://`, `hdfs://`, `abfs://`, ...) behind the
same small pathlib surface.

`path(x)` gives a `pathlib.Path` for a local path (or a `file://` URI) and a `RemotePath` for any other URI.
`RemotePath` answers the pathlib calls tokenmill makes (`/`, `name`, `parent`, `exists`, `open`, `read_text`,
`write_bytes`, `stat().st_size`, `replace`, `glob`, ...) through a pyarrow filesystem: pyarrow's own for
the schemes it knows (S3, GCS, HDFS, ABFS; the same filesystems Ray Data and Ray Train use), else fsspec's
implementation for the scheme, wrapped as a pyarrow filesystem. Credentials and endpoints come from the usual
environment (`AWS_ENDPOINT_URL`, `AWS_ACCESS_KEY_ID`, ... for S3), or from the URI's query
(`s3://bucket/run?endpoint_override=...`).

It deliberately has no `__fspath__`: handing a `RemotePath` to `open()` or `np.memmap` fails loudly instead of
writing a local file named "s3:/...". Code that needs a real local file (a memmap, SentencePiece, fastText,
torch) asks for `local_copy(p)` (download once into a cache, keyed by the object's size and mtime), and code
that produces one writes it locally and calls `publish(tmp, dest)` (a rename on a local disk; an upload, then
the temporary removed, on object storage: an object appears whole or not at all, so readers never see half a
shard).

Object stores have no directories: `mkdir` is a no-op there (except HDFS), and a "directory" exists when an
object lies under its prefix.
"""

from __future__ import annotations

import fnmatch
import functools
import hashlib
import io
import os
import shutil
import tempfile
import urllib.parse
from pathlib import Path
from types import SimpleNamespace
from typing import Iterator, Union

import pyarrow as pa
import pyarrow.fs as pafs


def is_uri(x) -> bool:
    """True for a filesystem URI other than file:// (those are local paths)."""
    if isinstance(x, RemotePath):
        return True
    s = str(x)
    scheme = s.split("://", 1)[0] if "://" in s else ""
    return bool(scheme) and scheme.isidentifier() and scheme != "file"


def path(x) -> "StoragePath":
    """A local `Path`, or a `RemotePath` for a URI; `file://` URIs become local paths."""
    if isinstance(x, (Path, RemotePath)):
        return x
    s = os.fspath(x) if not isinstance(x, str) else x
    if s.startswith("file://"):
        return Path(urllib.parse.unquote(urllib.parse.urlparse(s).path))
    return RemotePath(s) if is_uri(s) else Path(s)


def _filesystem(scheme: str, netloc: str, query: str) -> pafs.FileSystem:
    # the endpoint is part of the key: a process that talks to two S3 services keeps them apart
    return _cached_filesystem(scheme, netloc, query, os.environ.get("AWS_ENDPOINT_URL", ""))


# Attempts per S3 request (AWS SDK standard retry: exponential back-off with jitter). pyarrow's default of 3
# gives up 2.5 s after an endpoint goes away; 6 waits 17-18 s (measured against a closed port), so a store that
# restarts or a network that blips for a few seconds costs nothing. After that the request fails and the run
# stops with one line naming the endpoint (connection_fault); a re-run resumes. TOKENMILL_S3_ATTEMPTS overrides it.
S3_ATTEMPTS = int(os.environ.get("TOKENMILL_S3_ATTEMPTS", "6"))

# what pyarrow (AWS SDK, curl), botocore, requests and urllib3 say when an endpoint cannot be reached
_CONNECTION_WORDS = ("could not connect", "couldn't connect", "failed to connect", "connection refused",
                     "network_connection", "connection reset", "connection aborted", "timed out", "timeout was reached",
                     "name or service not known", "could not resolve host", "temporary failure in name resolution",
                     "max retries exceeded", "remote end closed connection", "endpointconnectionerror",
                     "unable to connect", "network is unreachable", "no route to host")


def connection_fault(exc: BaseException) -> str | None:
    """One line for an error that says an endpoint (object store, MLflow server) could not be reached, or None.
    Follows __cause__/__context__, since libraries wrap the socket error in their own."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        text = f"{type(exc).__name__}: {exc}"
        low = text.lower()
        if not (isinstance(exc, OSError) and exc.errno is not None and exc.filename) and \
                any(w in low for w in _CONNECTION_WORDS):
            return " ".join(text.split())[:400]
        exc = exc.__cause__ or exc.__context__
    return None


@functools.lru_cache(maxsize=None)
def _cached_filesystem(scheme: str, netloc: str, query: str, _endpoint: str) -> pafs.FileSystem:
    uri = f"{scheme}://{netloc}/" + (f"?{query}" if query else "")
    try:
        fs = pafs.FileSystem.from_uri(uri)[0]
        if isinstance(fs, pafs.S3FileSystem):  # the same settings, with more attempts (S3_ATTEMPTS says why)
            fs = pafs.S3FileSystem(**fs.__reduce__()[1][0],
                                   retry_strategy=pafs.AwsStandardS3RetryStrategy(max_attempts=S3_ATTEMPTS))
        return fs
    except (pa.ArrowInvalid, ValueError, OSError) as exc:  # a scheme pyarrow does not know: fsspec's
        import fsspec

        try:
            return pafs.PyFileSystem(pafs.FSSpecHandler(fsspec.filesystem(scheme)))
        except (ValueError, ImportError) as exc2:
            raise ValueError(f"{uri}: no filesystem for scheme {scheme!r} (pyarrow: {exc}; fsspec: {exc2})") from None


class RemotePath:
    """A file or prefix on a pyarrow/fsspec filesystem, addressed by URI; picklable (it carries only the URI)."""

    __slots__ = ("uri", "scheme", "netloc", "query", "key")

    def __init__(self, uri: str):
        parsed = urllib.parse.urlsplit(str(uri))
        self.scheme, self.netloc, self.query = parsed.scheme, parsed.netloc, parsed.query
        self.key = "/".join(p for p in parsed.path.split("/") if p and p != ".")  # normalized: no empty, "." or trailing parts
        self.uri = f"{self.scheme}://{self.netloc}/{self.key}" + (f"?{self.query}" if self.query else "")

    def __reduce__(self):
        return RemotePath, (self.uri,)

    # ------------------------------------------------------------------ pure path operations
    def __str__(self) -> str:
        return self.uri

    def __repr__(self) -> str:
        return f"RemotePath({self.uri!r})"

    def __eq__(self, other) -> bool:
        return isinstance(other, RemotePath) and other.uri == self.uri

    def __hash__(self) -> int:
        return hash(self.uri)

    def __lt__(self, other: "RemotePath") -> bool:
        return self.uri < other.uri

    def _with_key(self, key: str) -> "RemotePath":
        return RemotePath(f"{self.scheme}://{self.netloc}/{key}" + (f"?{self.query}" if self.query else ""))

    def __truediv__(self, part) -> "RemotePath":
        part = str(part)
        if is_uri(part) or part.startswith("/"):
            raise ValueError(f"cannot join {part!r} under {self.uri}")
        return self._with_key("/".join(p for p in f"{self.key}/{part}".split("/") if p and p != "."))

    def joinpath(self, *parts) -> "RemotePath":
        out = self
        for p in parts:
            out = out / p
        return out

    @property
    def name(self) -> str:
        return self.key.rsplit("/", 1)[-1]

    @property
    def parent(self) -> "RemotePath":
        return self._with_key(self.key.rsplit("/", 1)[0] if "/" in self.key else "")

    @property
    def parents(self) -> list["RemotePath"]:
        out, p = [], self
        while p.key:
            p = p.parent
            out.append(p)
        return out

    @property
    def parts(self) -> tuple[str, ...]:
        return (f"{self.scheme}://{self.netloc}", *[p for p in self.key.split("/") if p])

    @property
    def suffix(self) -> str:
        return Path(self.name).suffix

    @property
    def suffixes(self) -> list[str]:
        return Path(self.name).suffixes

    @property
    def stem(self) -> str:
        return Path(self.name).stem

    def with_name(self, name: str) -> "RemotePath":
        return self.parent / name

    def with_suffix(self, suffix: str) -> "RemotePath":
        return self.parent / Path(self.name).with_suffix(suffix).name

    def relative_to(self, other) -> Path:
        other = path(other)
        if not isinstance(other, RemotePath) or (other.scheme, other.netloc) != (self.scheme, self.netloc) or not (
                self.key == other.key or self.key.startswith(other.key + "/") or not other.key):
            raise ValueError(f"{self.uri} is not under {other}")
        return Path(self.key[len(other.key):].lstrip("/"))

    def resolve(self) -> "RemotePath":
        return self

    def expanduser(self) -> "RemotePath":
        return self

    def absolute(self) -> "RemotePath":
        return self

    def is_absolute(self) -> bool:
        return True

    # ------------------------------------------------------------------ the filesystem
    @property
    def fs(self) -> pafs.FileSystem:
        return _filesystem(self.scheme, self.netloc, self.query)

    @property
    def fs_path(self) -> str:
        """The path the pyarrow filesystem knows this by (`bucket/key` on S3)."""
        return f"{self.netloc}/{self.key}".rstrip("/") if self.netloc else "/" + self.key

    def _info(self) -> pafs.FileInfo:
        return self.fs.get_file_info(self.fs_path)

    def exists(self) -> bool:
        return self._info().type != pafs.FileType.NotFound

    def is_file(self) -> bool:
        return self._info().type == pafs.FileType.File

    def is_dir(self) -> bool:
        return self._info().type == pafs.FileType.Directory

    def stat(self) -> SimpleNamespace:
        info = self._info()
        if info.type == pafs.FileType.NotFound:
            raise FileNotFoundError(self.uri)
        mtime = info.mtime.timestamp() if info.mtime is not None else 0.0
        return SimpleNamespace(st_size=info.size or 0, st_mtime=mtime, st_mtime_ns=int(mtime * 1e9))

    def open(self, mode: str = "r", encoding: str | None = "utf-8", newline: str | None = None):
        if mode in ("rb", "br"):
            try:
                native = self.fs.open_input_file(self.fs_path)
            except FileNotFoundError:
                raise FileNotFoundError(f"{self.uri}: no such file") from None
            return io.BufferedReader(_RandomAccess(native), buffer_size=1 << 20)
        if mode == "r":
            return io.TextIOWrapper(self.open("rb"), encoding=encoding or "utf-8", newline=newline)
        if mode in ("wb", "bw"):
            return self.fs.open_output_stream(self.fs_path)
        if mode == "w":
            return io.TextIOWrapper(self.open("wb"), encoding=encoding or "utf-8", newline=newline)
        raise ValueError(f"{self.uri}: mode {mode!r} is not supported on object storage (r, rb, w, wb)")

    def read_bytes(self) -> bytes:
        with self.open("rb") as f:
            return f.read()

    def read_text(self, encoding: str = "utf-8") -> str:
        return self.read_bytes().decode(encoding)

    def write_bytes(self, data: bytes) -> int:
        with self.open("wb") as f:
            f.write(data)
        return len(data)

    def write_text(self, text: str, encoding: str = "utf-8") -> int:
        return self.write_bytes(text.encode(encoding))

    def mkdir(self, parents: bool = False, exist_ok: bool = False) -> None:
        if self.scheme in ("hdfs", "viewfs"):  # object stores have no directories to make
            self.fs.create_dir(self.fs_path, recursive=parents)

    def unlink(self, missing_ok: bool = False) -> None:
        try:
            self.fs.delete_file(self.fs_path)
        except FileNotFoundError:
            if not missing_ok:
                raise

    def replace(self, target) -> "RemotePath":
        target = path(target)
        self.fs.move(self.fs_path, target.fs_path)
        return target

    rename = replace

    def rmtree(self) -> None:
        try:
            self.fs.delete_dir(self.fs_path)
        except FileNotFoundError:
            pass

    def _walk(self, recursive: bool) -> list[pafs.FileInfo]:
        sel = pafs.FileSelector(self.fs_path, recursive=recursive, allow_not_found=True)
        return self.fs.get_file_info(sel)

    def _from_fs_path(self, p: str) -> "RemotePath":
        key = p[len(self.netloc):] if self.netloc and p.startswith(self.netloc) else p
        return self._with_key(key.strip("/"))

    def iterdir(self) -> Iterator["RemotePath"]:
        for info in sorted(self._walk(False), key=lambda i: i.path):
            yield self._from_fs_path(info.path)

    def glob(self, pattern: str) -> Iterator["RemotePath"]:
        """Objects (and prefixes) under this one whose relative path matches `pattern` as pathlib matches:
        `*` within one level, `**` across any number of levels."""
        want = pattern.split("/")
        for info in sorted(self._walk(len(want) > 1), key=lambda i: i.path):
            p = self._from_fs_path(info.path)
            if _match(str(p.relative_to(self)).split("/"), want):
                yield p

    def rglob(self, pattern: str) -> Iterator["RemotePath"]:
        return self.glob(f"**/{pattern}")


class _RandomAccess(io.RawIOBase):
    """A pyarrow random-access file as a Python raw stream (pyarrow's own lacks readline and iteration), so a
    remote file reads like `open(path, "rb")`: buffered, seekable, iterable by line."""

    def __init__(self, native):
        self._f = native

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, buf) -> int:
        data = self._f.read(len(buf))
        buf[:len(data)] = data
        return len(data)

    def seek(self, pos: int, whence: int = 0) -> int:
        return self._f.seek(pos, whence)

    def tell(self) -> int:
        return self._f.tell()

    def close(self) -> None:
        self._f.close()
        super().close()


def _match(parts: list[str], pattern: list[str]) -> bool:
    if not pattern:
        return not parts
    if pattern[0] == "**":
        return any(_match(parts[i:], pattern[1:]) for i in range(len(parts) + 1))
    return bool(parts) and fnmatch.fnmatchcase(parts[0], pattern[0]) and _match(parts[1:], pattern[1:])


StoragePath = Union[Path, RemotePath]


# ---------------------------------------------------------------------- local files for remote objects


def cache_dir() -> Path:
    """Where remote objects are downloaded for libraries that need a local file: $TOKENMILL_CACHE, else
    ~/.cache/tokenmill/objects."""
    return Path(os.environ.get("TOKENMILL_CACHE") or Path.home() / ".cache" / "tokenmill" / "objects")


def local_dir(kind: str, uri) -> Path:
    """This machine's folder for what a URI needs kept locally (its "locks", its "logs"), named by its hash."""
    return cache_dir().parent / kind / hashlib.sha256(str(uri).encode()).hexdigest()[:24]


def local_copy(p, cache: Path | None = None, refresh: bool = False) -> Path:
    """A local file (or directory) with the content of `p`: `p` itself when local, else a download kept in
    the cache under the URI's hash and refreshed when the object's size or mtime changes (or with `refresh`:
    S3 mtimes have one-second resolution, so a caller that finds a copy's sha256 wrong asks again)."""
    p = path(p)
    if isinstance(p, Path):
        return p
    info = p._info()
    if info.type == pafs.FileType.NotFound:
        raise FileNotFoundError(f"{p}: no such file")
    base = (cache or cache_dir()) / hashlib.sha256(p.uri.encode()).hexdigest()[:24]
    dest = base / (p.name or "object")
    stamp = base / ".stamp"
    if info.type == pafs.FileType.File:
        want = f"{info.size} {info.mtime_ns}"
    else:
        files = [i for i in p._walk(True) if i.type == pafs.FileType.File]
        want = hashlib.sha256(repr(sorted((i.path, i.size, i.mtime_ns) for i in files)).encode()).hexdigest()
    if not refresh and dest.exists() and stamp.is_file() and stamp.read_text() == want:
        return dest
    base.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".download-", dir=base)) / dest.name
    if info.type != pafs.FileType.File:
        tmp.mkdir()  # pyarrow copies a folder's files into an existing local folder
    pafs.copy_files(p.fs_path, str(tmp), source_filesystem=p.fs, destination_filesystem=pafs.LocalFileSystem())
    if dest.is_dir():
        shutil.rmtree(dest)
    os.replace(tmp, dest)
    shutil.rmtree(tmp.parent, ignore_errors=True)
    stamp.write_text(want)
    return dest


def scratch_for(dest, directory: bool = False) -> Path:
    """A local path to write `dest`'s bytes (or, with `directory`, a folder's files) to before `publish`:
    beside it (name.tmp) when local, else a fresh temporary file or folder."""
    dest = path(dest)
    if isinstance(dest, Path):
        dest.parent.mkdir(parents=True, exist_ok=True)
        return dest.with_name(dest.name + ".tmp")
    if directory:
        return Path(tempfile.mkdtemp(prefix="tokenmill-", suffix="-" + dest.name))
    fd, name = tempfile.mkstemp(prefix="tokenmill-", suffix="-" + dest.name)
    os.close(fd)
    return Path(name)


def partial_files(folder: Path) -> list[Path]:
    """The local files under `folder` that an interrupted write left (scratch_for's `name.tmp`, written before
    the rename that publishes them), outside its `logs/`."""
    return sorted(p for p in folder.rglob("*.tmp") if p.relative_to(folder).parts[0] != "logs")


def publish(local: Path, dest) -> None:
    """Move a finished local file or directory to `dest`: a rename on a local disk, an upload on object
    storage (then the local copy is removed)."""
    dest = path(dest)
    if isinstance(dest, Path):
        dest.parent.mkdir(parents=True, exist_ok=True)
        if local.is_dir() and dest.is_dir():
            shutil.rmtree(dest)
        os.replace(local, dest)
        return
    if local.is_dir():
        dest.rmtree()
        pafs.copy_files(str(local), dest.fs_path, source_filesystem=pafs.LocalFileSystem(), destination_filesystem=dest.fs)
        shutil.rmtree(local)
    else:
        pafs.copy_files(str(local), dest.fs_path, source_filesystem=pafs.LocalFileSystem(), destination_filesystem=dest.fs)
        local.unlink()


def write_atomic(dest, data: bytes | str) -> None:
    """Write a whole small file so that readers see the old or the new content, never a part."""
    scratch = scratch_for(dest)
    scratch.write_bytes(data.encode() if isinstance(data, str) else data)
    publish(scratch, dest)


def pyarrow_location(p) -> tuple[pafs.FileSystem | None, str]:
    """(filesystem, path) for pyarrow and Ray (`RunConfig(storage_path, storage_filesystem)`): (None, local
    path) for a local path."""
    p = path(p)
    return (None, str(p)) if isinstance(p, Path) else (p.fs, p.fs_path)
