"""Decompression of layers, ADD archives and context tarballs: one reader per format.

``open_decompressed(stream, compression, what)`` gives a readable of the bytes
inside ``stream``. ``compression`` is ``gzip``, ``bzip2``, ``xz``, ``zstd``,
``none``, or ``auto``: recognised by content (magic bytes), as BuildKit's
``isArchivePath`` and moby's ``DetectCompression`` do for ADD, and because
registries' media types are not always truthful.

Every reader streams with bounded reads (memory does not grow with the size
of what is inside), reads concatenated members or frames to the end, ignores
padding after the last one as gzip(1) does, and reports corrupt or truncated
data as an IntegrityError naming ``what``. gzip goes through ISA-L's inflate,
about twice zlib's speed.
"""

from __future__ import annotations

import bz2
import logging
import lzma
from collections.abc import Callable
from typing import BinaryIO, Protocol, cast

from isal import isal_zlib

from kanipy.errors import IntegrityError

log = logging.getLogger(__name__)

COMPRESSIONS = ("gzip", "bzip2", "xz", "zstd", "none")

_READ_CHUNK = 1 << 20
_GZIP_MAGIC = b"\x1f\x8b"
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_XZ_MAGIC = b"\xfd7zXZ\x00"
_BZIP2_MAGIC = b"BZh"
# After "BZh" and the block size digit, a bzip2 stream starts with a block
# (pi) or, when empty, the end-of-stream marker (sqrt(pi)). Checking them keeps
# a plain tar whose first file is named "BZh..." from being taken for bzip2.
_BZIP2_STARTS = (b"1AY&SY", b"\x17rE8P\x90")
HEAD_SIZE = 10  # bytes ``detect_compression`` needs


class Readable(Protocol):
    def read(self, n: int = -1, /) -> bytes: ...


def detect_compression(head: bytes) -> str:
    """The compression whose magic bytes start ``head`` (``HEAD_SIZE`` bytes), or ``none``."""
    if head.startswith(_GZIP_MAGIC):
        return "gzip"
    if head.startswith(_ZSTD_MAGIC):
        return "zstd"
    if head.startswith(_XZ_MAGIC):
        return "xz"
    if head.startswith(_BZIP2_MAGIC) and head[3:4].isdigit() and head[3:4] != b"0" \
            and head[4:10] in _BZIP2_STARTS:
        return "bzip2"
    return "none"


def open_decompressed(stream: Readable, compression: str, what: str) -> Readable:
    """A readable of the bytes inside ``stream`` (see the module doc); ``what`` names
    the stream in errors (``layer sha256:…``)."""
    source = stream
    if compression == "auto":
        head = b""
        while len(head) < HEAD_SIZE:
            more = stream.read(HEAD_SIZE - len(head))
            if not more:
                break
            head += more
        compression = detect_compression(head)
        source = _Prefixed(head, stream)
    if compression == "gzip":
        return _GunzipReader(source, what)
    if compression == "zstd":
        return _ZstdReader(source, what)
    if compression == "bzip2":
        return _MultiStreamReader(source, bz2.BZ2Decompressor, _BZIP2_MAGIC, "bzip2", what)
    if compression == "xz":
        return _MultiStreamReader(source, lzma.LZMADecompressor, _XZ_MAGIC, "xz", what)
    if compression == "none":
        return source
    raise ValueError(f"unknown compression {compression!r}")


def open_decompressed_file(stream: BinaryIO, compression: str, what: str) -> BinaryIO:
    """``open_decompressed`` typed as a file, for callers that hand it to ``tarfile``
    or hash it; closing the result closes ``stream``."""
    reader = open_decompressed(stream, compression, what)
    if reader is stream:
        return stream
    return cast(BinaryIO, _Closing(reader, stream))


class _Closing:
    """A reader that closes its underlying file (what ``open_*`` callers expect)."""

    def __init__(self, reader: Readable, raw: BinaryIO) -> None:
        self._reader = reader
        self._raw = raw

    def read(self, n: int = -1, /) -> bytes:
        return self._reader.read(n)

    def readable(self) -> bool:
        return True

    def close(self) -> None:
        self._raw.close()

    def __enter__(self) -> _Closing:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _Prefixed:
    """``prefix`` followed by the rest of ``source``: lets us sniff magic bytes."""

    def __init__(self, prefix: bytes, source: Readable) -> None:
        self._prefix = prefix
        self._source = source

    def read(self, n: int = -1, /) -> bytes:
        if self._prefix:
            data = self._prefix if n is None or n < 0 else self._prefix[:n]
            self._prefix = self._prefix[len(data) :]
            return data
        return self._source.read(n)


def _limit(n: int | None) -> int:
    return _READ_CHUNK if n is None or n < 0 else max(n, 1)


class _GunzipReader:
    """Streaming gunzip (ISA-L's inflate, ~2x zlib's), multi-member aware, bounded reads."""

    def __init__(self, source: Readable, what: str) -> None:
        self._source = source
        self._what = what
        self._d = isal_zlib.decompressobj(15 | 16)
        self._pending = b""
        self._started = False
        self._eof = False

    def read(self, n: int = -1, /) -> bytes:
        limit = _limit(n)
        while not self._eof:
            data = self._pending or self._source.read(_READ_CHUNK)
            if not data:
                if self._started:
                    raise IntegrityError(f"{self._what}: gzip stream is truncated")
                self._eof = True
                break
            if not self._started and not data.startswith(_GZIP_MAGIC[: len(data)]):
                # Trailing padding after the last gzip member: ignore it, as gzip(1) does.
                self._eof = True
                break
            self._started = True
            try:
                out = self._d.decompress(data, limit)
            except isal_zlib.error as exc:  # type: ignore[misc]  # the stub types it loosely
                raise IntegrityError(f"{self._what}: corrupt gzip data ({exc})") from exc
            if self._d.eof:
                self._pending = self._d.unused_data
                self._d = isal_zlib.decompressobj(15 | 16)
                self._started = False
            else:
                self._pending = self._d.unconsumed_tail
            if out:
                return out
        return b""


class _Decompressor(Protocol):
    """The interface ``bz2.BZ2Decompressor`` and ``lzma.LZMADecompressor`` share."""

    @property
    def eof(self) -> bool: ...

    @property
    def needs_input(self) -> bool: ...

    @property
    def unused_data(self) -> bytes: ...

    def decompress(self, data: bytes, max_length: int = -1) -> bytes: ...


class _MultiStreamReader:
    """bzip2 or xz, streams read one after another (``cat a.bz2 b.bz2`` is valid)."""

    def __init__(self, source: Readable, new: Callable[[], _Decompressor], magic: bytes,
                 name: str, what: str) -> None:
        self._source = source
        self._new = new
        self._magic = magic
        self._name = name
        self._what = what
        self._d = new()
        self._eof = False

    def read(self, n: int = -1, /) -> bytes:
        limit = _limit(n)
        while not self._eof:
            data = b""
            if self._d.eof:
                data = self._d.unused_data or self._source.read(_READ_CHUNK)
                if not data or not data.startswith(self._magic[: len(data)]):
                    self._eof = True  # the end, or padding after the last stream
                    break
                self._d = self._new()
            elif self._d.needs_input:
                data = self._source.read(_READ_CHUNK)
                if not data:
                    raise IntegrityError(f"{self._what}: {self._name} stream is truncated")
            try:
                out = self._d.decompress(data, limit)
            except (OSError, EOFError, lzma.LZMAError) as exc:
                raise IntegrityError(f"{self._what}: corrupt {self._name} data ({exc})") \
                    from exc
            if out:
                return out
        return b""


class _ZstdReader:
    """zstd across frames (zstd:chunked layers hold many), errors as IntegrityError."""

    def __init__(self, source: Readable, what: str) -> None:
        # Imported here: most builds read gzip only, and start-up is paid on every
        # build (issue 14). bz2 and lzma cost nothing more: shutil imports them.
        import zstandard

        self._what = what
        self._error = zstandard.ZstdError
        self._reader = zstandard.ZstdDecompressor().stream_reader(
            cast(BinaryIO, source), read_size=_READ_CHUNK, read_across_frames=True,
            closefd=False)

    def read(self, n: int = -1, /) -> bytes:
        try:
            return self._reader.read(_limit(n))
        except self._error as exc:
            raise IntegrityError(f"{self._what}: corrupt zstd data ({exc})") from exc
