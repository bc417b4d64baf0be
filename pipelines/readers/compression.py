"""Opening raw files whatever their compression, detected from magic bytes (never from the name).

Real corpora have misnamed files (dolma ships a plain-text `.jsonl.zst`), so the name is ignored.
A decompressed stream never ends silently early (readers like warcio take an EOFError for the end of
the records): where the data is corrupt or truncated it ends (EOF) after every byte decoded before
the damage, `damage(f)` returns the CorruptStream, and leaving `open_decompressed` raises it. So a
reader keeps every record before the damage and may check `damage(f)` to tell a record cut by it
from a whole one. A plain I/O error (it has an errno) propagates as is.

Recovery (gzip and zstd): a file is a sequence of members (gzip) or frames (zstd), and WARC writers
compress each record on its own. CorruptStream carries the damaged span: `start`, the compressed
offset where the damaged member begins, and `resume`, the offset of the next member that
decompresses cleanly (None when there is none: the span runs to the end of the file), plus
`members`, how many member headers lie in the span (for per-record WARC, the records lost). A
reader reopens the file at `resume` (`open_decompressed(path, start=resume)`) and goes on.
"""

from __future__ import annotations

import bisect
import bz2
import io
import lzma
import zlib
from contextlib import contextmanager
from typing import BinaryIO, Iterator

import zstandard

from pipelines import storage

MAGIC = (
    (b"\x1f\x8b", "gzip"),
    (b"\x28\xb5\x2f\xfd", "zstd"),
    (b"BZh", "bz2"),
    (b"\xfd7zXZ\x00", "xz"),
)
_MEMBER_MAGIC = {"gzip": b"\x1f\x8b\x08", "zstd": b"\x28\xb5\x2f\xfd"}
_READ = 1 << 20  # decompressed bytes buffered per read
_READ_COMPRESSED = 1 << 16  # compressed bytes fed per step: the most lost before a corrupt spot
_PROBE = 1 << 12  # compressed bytes decompressed to accept a resync candidate
# A member's output is held back until its checksum verifies, up to this size: damaged deflate data
# decodes to garbage before the decoder notices (16 flipped bytes gave 15 garbage "lines"), so a
# damaged WARC record or jsonl chunk is lost whole, never half-read. Larger members (one stream for a
# whole file) stream from then on: a record before their damage is kept, garbage after it may pass.
_HOLD = 8 << 20


class CorruptStream(Exception):
    """A compressed stream that cannot be decompressed past some point (see the module docstring)."""

    def __init__(self, message: str, start: int | None = None, resume: int | None = None,
                 end: int | None = None, members: int | None = None, member: int | None = None):
        super().__init__(message)
        self.start, self.resume, self.end, self.members = start, resume, end, members
        self.member = member  # which member of the opened stream (0 = the one at `start` offset) is damaged

    def span(self) -> dict:
        """The damaged span as metadata: compressed byte range [start, end) and member headers in it."""
        return {"byte_start": self.start, "byte_end": self.end, "members_lost": self.members}


def _file_size(f) -> int:
    """Size of an open seekable file, local or on object storage (no fileno there)."""
    pos = f.tell()
    size = f.seek(0, io.SEEK_END)
    f.seek(pos)
    return size


def detect_compression(path: str) -> str | None:
    with storage.path(path).open("rb") as f:
        head = f.read(8)
    return next((name for magic, name in MAGIC if head.startswith(magic)), None)


def _new_decompressor(kind: str):
    if kind == "gzip":
        return zlib.decompressobj(16 + zlib.MAX_WBITS)
    return zstandard.ZstdDecompressor().decompressobj()


_ERRORS = (zlib.error, zstandard.ZstdError)


def _plausible_header(kind: str, data: bytes) -> bool:
    """A gzip member header as writers emit it (deflate, no reserved flags); any zstd frame magic."""
    return kind == "zstd" or (len(data) >= 10 and data[3] & 0xE0 == 0)


def _decodes(kind: str, data: bytes, expect: bytes) -> bool:
    obj = _new_decompressor(kind)
    try:
        out = obj.decompress(data)
    except _ERRORS:
        return False
    return out.startswith(expect) if len(out) >= len(expect) else obj.eof and out.startswith(expect[:len(out)])


def find_resume(f: BinaryIO, kind: str, after: int, expect: bytes = b"") -> tuple[int | None, int]:
    """(offset of the first member after `after` that decompresses and starts with `expect`, or None;
    plausible member headers skipped on the way)."""
    magic, skipped, pos = _MEMBER_MAGIC[kind], 0, after
    while True:
        f.seek(pos)
        block = f.read(_READ_COMPRESSED + _PROBE)
        if len(block) < len(magic):
            return None, skipped
        i = block.find(magic)
        if i < 0:
            pos += max(1, len(block) - len(magic) + 1)
            continue
        f.seek(pos + i)
        probe = f.read(_PROBE)
        if _decodes(kind, probe, expect):
            return pos + i, skipped
        skipped += _plausible_header(kind, probe)
        pos += i + 1


class _Members(io.RawIOBase):
    """Consecutive gzip members or zstd frames from offset `start`; notices truncation and corruption."""

    def __init__(self, f: BinaryIO, kind: str, start: int, expect: bytes):
        self._f, self._kind, self._expect = f, kind, expect
        self._pos = start  # compressed offset of the next byte to feed
        self._obj = None  # the open member's decompressor
        self._pending = memoryview(b"")
        self.error: CorruptStream | None = None  # set where decoding failed: the stream ends there
        self._held: list[bytes] = []  # the open member's output, not yet verified
        self._held_bytes = 0
        self._out = 0  # decompressed bytes released
        self._starts: list[int] = []  # decompressed offset of each member's first byte
        self._offsets: list[int] = []  # and its compressed offset
        f.seek(start)

    def readable(self) -> bool:
        return True

    def readinto(self, buf) -> int:
        while not self._pending:
            if self.error is not None:
                return 0
            chunk = self._f.read(_READ_COMPRESSED)
            if not chunk:
                if self._obj is not None:
                    # a cut is not damage: what decoded before it is sound, so it is released
                    self._pending = memoryview(self._release([]))
                    self.error = self._corrupt(f"truncated {self._kind} stream (ends inside a "
                                               f"{'member' if self._kind == 'gzip' else 'frame'})")
                    self._obj = None
                    continue
                return 0
            self._pending = memoryview(self._feed(chunk))
        n = min(len(buf), len(self._pending))
        buf[:n] = self._pending[:n]
        self._pending = self._pending[n:]
        return n

    def _feed(self, chunk: bytes) -> bytes:
        out: list[bytes] = []  # verified (or streaming) output
        try:
            while chunk:
                if self._obj is None:
                    self._obj = _new_decompressor(self._kind)
                    self._starts.append(self._out + sum(map(len, out)))
                    self._offsets.append(self._pos)
                    self._held_bytes = 0
                data = self._obj.decompress(chunk)
                self._held.append(data)
                self._held_bytes += len(data)
                if self._held_bytes > _HOLD:
                    self._release(out)  # too large to hold: stream the rest of this member
                if not self._obj.eof:
                    self._pos += len(chunk)
                    break
                self._release(out)  # the member's checksum verified
                rest = self._obj.unused_data
                self._pos += len(chunk) - len(rest)
                chunk, self._obj = rest, None
        except _ERRORS as e:
            self._held = []  # decoded from damaged data: part of the lost span
            self.error = self._corrupt(f"{self._kind}: {e}")
        data = b"".join(out)
        self._out += len(data)
        return data

    def _release(self, out: list[bytes]) -> bytes:
        out.extend(self._held)
        self._held = []
        return b"".join(out)

    def _corrupt(self, message: str, member: int | None = None) -> CorruptStream:
        member = len(self._offsets) - 1 if member is None else member
        start = self._offsets[member] if member >= 0 else self._pos
        resume, skipped = find_resume(self._f, self._kind, start + 1, self._expect)
        end = resume if resume is not None else _file_size(self._f)
        self._f.seek(end)
        return CorruptStream(message, start, resume, end, 1 + skipped, max(member, 0))

    def corrupt_at(self, offset: int, message: str) -> CorruptStream:
        """The span of a member found bad by the reader (at decompressed `offset`), not by the decompressor."""
        member = max(0, bisect.bisect_right(self._starts, offset) - 1)
        return self._corrupt(message, member)


class _Guarded(io.RawIOBase):
    """A stdlib decompressor whose decompression errors (EOFError...) become CorruptStream."""

    def __init__(self, inner: BinaryIO, f: BinaryIO):
        self._inner, self._f = inner, f
        self.error: CorruptStream | None = None

    def readable(self) -> bool:
        return True

    def readinto(self, buf) -> int:
        if self.error is not None:
            return 0
        try:
            # read1: one step of decompression, so bytes decoded before an error are delivered first
            data = self._inner.read1(len(buf))
        except Exception as e:
            if not is_corrupt_stream_error(e):
                raise
            size = _file_size(self._f)  # no resync inside a bz2/xz stream
            self.error = CorruptStream(f"{type(e).__name__}: {e}", None, None, size, None, 0)
            return 0
        buf[: len(data)] = data
        return len(data)


_STDLIB = {"bz2": bz2.BZ2File, "xz": lzma.LZMAFile}  # both read concatenated streams


@contextmanager
def open_decompressed(path: str, start: int = 0, expect: bytes = b"") -> Iterator[BinaryIO]:
    """A buffered binary stream of the file's decompressed bytes, from compressed offset `start`
    (a `CorruptStream.resume`); `expect` is how every member starts (b"WARC/"), to reject false resyncs."""
    kind = detect_compression(path)
    with storage.path(path).open("rb") as raw:
        if kind is None:
            raw.seek(start)
            yield raw
        elif kind in _MEMBER_MAGIC:
            f = io.BufferedReader(_Members(raw, kind, start, expect), buffer_size=_READ)
            yield f
            if (error := damage(f)) is not None:
                raise error
        else:
            raw.seek(start)
            with _STDLIB[kind](raw) as inner:
                f = io.BufferedReader(_Guarded(inner, raw), buffer_size=_READ)
                yield f
                if (error := damage(f)) is not None:
                    raise error


def damage(f: BinaryIO) -> CorruptStream | None:
    """Where the stream from open_decompressed ended early (it has reached EOF), else None."""
    return getattr(getattr(f, "raw", None), "error", None)


def error_text(exc: BaseException) -> str:
    return str(exc) if isinstance(exc, CorruptStream) else f"{type(exc).__name__}: {exc}"


def is_corrupt_stream_error(exc: BaseException) -> bool:
    """Decompression failures: gzip/bz2 raise OSError subclasses without an errno, truncation EOFError."""
    if isinstance(exc, (CorruptStream, EOFError, zlib.error, lzma.LZMAError, zstandard.ZstdError)):
        return True
    return isinstance(exc, OSError) and exc.errno is None
