"""Opening raw files whatever their compression, detected from magic bytes (never from the name).

Real corpora have misnamed files (dolma ships a plain-text `.jsonl.zst`), so the name is ignored.
Every decompressed stream raises CorruptStream where the data is corrupt or truncated (never a
silent early end of file: readers like warcio take an EOFError for the end of the records), so a
reader can say how far it got; a plain I/O error (it has an errno) propagates as is.
"""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import zlib
from contextlib import contextmanager
from typing import BinaryIO, Iterator

import zstandard

MAGIC = (
    (b"\x1f\x8b", "gzip"),
    (b"\x28\xb5\x2f\xfd", "zstd"),
    (b"BZh", "bz2"),
    (b"\xfd7zXZ\x00", "xz"),
)
_READ = 1 << 20  # decompressed bytes buffered per read
_READ_COMPRESSED = 1 << 16  # compressed bytes fed per step: the most lost before a corrupt spot


class CorruptStream(Exception):
    """A compressed stream that cannot be decompressed past some point."""


def detect_compression(path: str) -> str | None:
    with open(path, "rb") as f:
        head = f.read(8)
    return next((name for magic, name in MAGIC if head.startswith(magic)), None)


class _ZstdRaw(io.RawIOBase):
    """Multi-frame zstd decompression that, unlike zstandard's stream_reader, notices truncation."""

    def __init__(self, f: BinaryIO):
        self._f = f
        self._dctx = zstandard.ZstdDecompressor()
        self._obj = self._dctx.decompressobj()
        self._in_frame = False  # bytes of an unfinished frame were fed
        self._pending = memoryview(b"")
        self._error: CorruptStream | None = None  # raised once the bytes decoded before it are read

    def readable(self) -> bool:
        return True

    def readinto(self, buf) -> int:
        while not self._pending:
            if self._error is not None:
                raise self._error
            chunk = self._f.read(_READ_COMPRESSED)
            if not chunk:
                if self._in_frame:
                    raise CorruptStream("truncated zstd stream (ends inside a frame)")
                return 0
            self._pending = memoryview(self._feed(chunk))
        n = min(len(buf), len(self._pending))
        buf[:n] = self._pending[:n]
        self._pending = self._pending[n:]
        return n

    def _feed(self, chunk: bytes) -> bytes:
        out = []
        try:
            while chunk:
                self._in_frame = True
                out.append(self._obj.decompress(chunk))
                if not self._obj.eof:
                    break
                chunk = self._obj.unused_data  # the next frame starts here
                self._obj = self._dctx.decompressobj()
                self._in_frame = False
        except zstandard.ZstdError as e:
            self._error = CorruptStream(f"zstd: {e}")
        return b"".join(out)


class _Guarded(io.RawIOBase):
    """A stdlib decompressor whose decompression errors (EOFError, BadGzipFile...) become CorruptStream."""

    def __init__(self, inner: BinaryIO):
        self._inner = inner

    def readable(self) -> bool:
        return True

    def readinto(self, buf) -> int:
        try:
            # read1: one step of decompression, so bytes decoded before an error are delivered first
            data = self._inner.read1(len(buf))
        except Exception as e:
            if isinstance(e, CorruptStream) or not is_corrupt_stream_error(e):
                raise
            raise CorruptStream(f"{type(e).__name__}: {e}") from e
        buf[: len(data)] = data
        return len(data)


# all three read concatenated streams (multi-member gzip, as in WARC files)
_STDLIB = {"gzip": lambda f: gzip.GzipFile(fileobj=f), "bz2": bz2.BZ2File, "xz": lzma.LZMAFile}


@contextmanager
def open_decompressed(path: str) -> Iterator[BinaryIO]:
    """A buffered binary stream of the file's decompressed bytes."""
    kind = detect_compression(path)
    with open(path, "rb") as raw:
        if kind is None:
            yield raw
        elif kind == "zstd":
            yield io.BufferedReader(_ZstdRaw(raw), buffer_size=_READ)
        else:
            with _STDLIB[kind](raw) as inner:
                yield io.BufferedReader(_Guarded(inner), buffer_size=_READ)


def error_text(exc: BaseException) -> str:
    return str(exc) if isinstance(exc, CorruptStream) else f"{type(exc).__name__}: {exc}"


def is_corrupt_stream_error(exc: BaseException) -> bool:
    """Decompression failures: gzip/bz2 raise OSError subclasses without an errno, truncation EOFError."""
    if isinstance(exc, (CorruptStream, EOFError, zlib.error, lzma.LZMAError, zstandard.ZstdError)):
        return True
    return isinstance(exc, OSError) and exc.errno is None


def iter_lines(path: str) -> Iterator[bytes]:
    """The file's decompressed lines (with their newline); CorruptStream where decompression fails."""
    with open_decompressed(path) as f:
        yield from f
