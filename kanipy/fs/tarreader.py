"""A small, fast, streaming tar decoder: the reading twin of ``tarwriter``.

``tarfile`` spends most of an unpack in its header parsing (``TarInfo.frombuf``,
``_proc_pax``, copying its buffer on every read); a layer of 100,000 small
files took four times GNU tar's CPU (docs/architecture.md, decision 4). This reader parses
each 512-byte header with one ``struct.unpack_from`` over a large read buffer,
checks its checksum with ``zlib.adler32`` (see ``_block_sum``) and hands file
data out as memoryview slices of that buffer, so nothing is copied twice and
memory does not grow with the size of an entry.

Formats read (POSIX.1-2008 ``pax`` "ustar Interchange Format" and "pax
Interchange Format"; GNU tar's manual, "Basic Tar Format"):

- v7, ustar (name ``prefix``), GNU (``ustar  `` magic; ``L``/``K`` long names
  and link targets) headers; octal and base-256 (GNU "binary") numbers;
  checksums summed as unsigned or signed bytes, as GNU tar accepts both.
- pax ``x`` (per entry) and ``g`` (global) extended headers: ``path``,
  ``linkpath``, ``size``, ``uid``, ``gid``, ``mtime`` (with fractions,
  kept to the nanosecond), ``SCHILY.devmajor``/``devminor``,
  ``SCHILY.xattr.NAME`` (raw bytes) and ``LIBARCHIVE.xattr.NAME`` (URL-encoded
  name, base64 value). An empty value deletes the keyword, as POSIX says.
- GNU sparse files in the pax 1.0 format (GNU tar's ``--sparse`` with
  ``--format=posix``): ``read`` gives them back with their holes as zeros;
  ``read_stored`` gives only the data the archive holds, with its offset, so
  that an unpacker's work is bounded by the archive and not by the size a
  header declares (issue 11: a 2 KB layer declared a 4 GiB file). The older sparse
  formats (type ``S``, pax 0.0 and 0.1) are refused with an IntegrityError
  naming the entry.

The end of an archive is its first zero block, as for GNU tar and ``tarfile``
(a lone zero block followed by more data is logged; the data is not read).
An archive that simply stops at a header boundary, without the two zero
blocks, is accepted as both of those do (an empty stream is not); a stream
that stops inside a header, an extended header or an entry's data, a bad
checksum or an unparsable field is an IntegrityError (tarfile's streaming mode
silently stopped at those after the first entry).
"""

from __future__ import annotations

import base64
import binascii
import logging
import struct
import urllib.parse
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Protocol

from kanipy.errors import IntegrityError
from kanipy.fieldwise import Fieldwise
from kanipy.fs.tarformat import (  # noqa: F401 - re-exported for the reader's callers
    AREGTYPE,
    BLKTYPE,
    BLOCK,
    CHRTYPE,
    CONTTYPE,
    DIRTYPE,
    FIFOTYPE,
    LNKTYPE,
    REGTYPE,
    SYMTYPE,
    XGLTYPE,
    XHDTYPE,
)

log = logging.getLogger(__name__)

_READ_CHUNK = 1 << 20
# Extended headers (pax records, GNU long names) are held in memory; a bigger
# one is not a real archive's and would let a layer make us allocate at will.
_MAX_META = 16 << 20
# Global pax records apply to every later entry, so each one kept costs work
# per entry: only the keywords this reader acts on are kept, at most this many
# (a 250 KB layer of 100,000 unknown global records and 2,000 entries took 52 s
# of CPU to read, issue 11; real archives carry a handful).
_MAX_GLOBALS = 64
_PAX_KEYS = frozenset(("path", "linkpath", "size", "uid", "gid", "mtime",
                       "SCHILY.devmajor", "SCHILY.devminor"))
_PAX_PREFIXES = ("SCHILY.xattr.", "LIBARCHIVE.xattr.", "GNU.sparse.")

SOLARIS_XHDTYPE = b"X"  # Solaris tar's name for a pax "x" header
GNU_LONGNAME = b"L"
GNU_LONGLINK = b"K"
GNU_SPARSE = b"S"
# Entries of these types have no data blocks, whatever their size field says
# (as tarfile and GNU tar read them); every other type's data is skipped over.
_NO_DATA = frozenset((LNKTYPE, SYMTYPE, CHRTYPE, BLKTYPE, DIRTYPE, FIFOTYPE))

# name mode uid gid size mtime chksum typeflag linkname magic version uname
# gname devmajor devminor prefix: the ustar layout (POSIX pax, "ustar Header Block").
_HEADER = struct.Struct("100s8s8s8s12s12s8sc100s6s2s32s32s8s8s155s")
_USTAR_MAGIC = b"ustar\0"
_ZEROS = memoryview(bytes(_READ_CHUNK))
_EMPTY = memoryview(b"")


class Readable(Protocol):
    def read(self, n: int = -1, /) -> bytes: ...


@dataclass(frozen=True, repr=False, eq=False, slots=True)
class TarEntry(Fieldwise):
    """One archive member, extended headers applied.

    ``type`` is the typeflag byte (``REGTYPE`` for every regular file: ``\\0``,
    ``7`` and sparse files included); directory names lose their trailing
    slash, as in ``tarfile``. ``size`` is the size of the file's contents;
    ``offset`` is where the entry's header starts in the uncompressed stream.
    """

    name: str
    type: bytes
    mode: int
    uid: int
    gid: int
    size: int
    mtime_ns: int
    linkname: str
    devmajor: int
    devminor: int
    xattrs: dict[str, bytes] = field(default_factory=dict)
    offset: int = 0
    sparse: bool = False


def _block_sum(view: memoryview) -> int:
    """The sum of a 512-byte block's bytes, in C.

    Adler-32's first half is 1 + the byte sum mod 65521 (RFC 1950); 256 bytes
    sum to at most 65280, so two halves give the exact sum without a Python
    loop over 512 ints.
    """
    return (zlib.adler32(view[:256]) & 0xFFFF) + (zlib.adler32(view[256:]) & 0xFFFF) - 2


def _number(raw: bytes) -> int:
    """A numeric header field: NUL/space-terminated octal, or GNU base-256."""
    try:
        # The common case in one call: octal digits padded with NULs or spaces.
        # Whatever int() refuses (base-256, text after a NUL) takes the full path,
        # which reads the same value from every field this path accepts.
        return int(raw.rstrip(b"\0 ") or b"0", 8)
    except ValueError:
        pass
    if raw and raw[0] & 0x80:
        # GNU tar: 0x80 marks a positive big-endian number in the remaining
        # bytes, 0xff a negative one in two's complement over the whole field.
        value = int.from_bytes(raw[1:], "big")
        if raw[0] == 0xFF:
            value -= 256 ** (len(raw) - 1)
        return value
    text = raw.partition(b"\0")[0].strip()
    return int(text, 8) if text else 0


def _cstring(raw: bytes) -> bytes:
    end = raw.find(b"\0")
    return raw if end < 0 else raw[:end]


def _decode(raw: bytes) -> str:
    # The inverse of os.fsencode on Linux: any bytes survive the round trip.
    return raw.decode("utf-8", "surrogateescape")


def _parse_pax(data: bytes) -> dict[str, bytes]:
    """pax records ``"%d %s=%s\\n"`` (the length counts the whole record)."""
    records: dict[str, bytes] = {}
    pos = 0
    size = len(data)
    while pos < size:
        if data[pos] == 0:
            break  # NUL padding some writers leave inside the declared size
        space = data.find(b" ", pos, pos + 21)
        digits = data[pos:space] if space > 0 else b""
        if not digits.isdigit():
            raise ValueError(f"record at byte {pos} has no length")
        end = pos + int(digits)
        equals = data.find(b"=", space + 1, end)
        if end > size or equals < 0 or data[end - 1] != 0x0A:
            raise ValueError(f"record at byte {pos} is malformed")
        records[data[space + 1 : equals].decode("utf-8", "surrogateescape")] = (
            data[equals + 1 : end - 1]
        )
        pos = end
    return records


def _pax_int(value: bytes) -> int:
    if not value.isdigit():
        raise ValueError(f"{value!r} is not a decimal number")
    return int(value)


def _pax_time_ns(value: bytes) -> int:
    """A pax time (``-?\\d+(\\.\\d*)?``) in integer nanoseconds, exactly."""
    negative = value.startswith(b"-")
    whole, _, frac = (value[1:] if negative else value).partition(b".")
    if not whole.isdigit() or (frac and not frac.isdigit()):
        raise ValueError(f"{value!r} is not a time")
    ns = int(whole) * 1_000_000_000 + int((frac + b"000000000")[:9])
    return -ns if negative else ns


class TarReader:
    """Iterates the entries of the tar stream ``stream``; ``read`` gives the
    current entry's contents.

    ``what`` names the stream in errors (``layer sha256:…``). Data an entry's
    caller did not read is skipped when the next entry is asked for.
    """

    def __init__(self, stream: Readable, what: str) -> None:
        self._stream = stream
        self._what = what
        self._buf: bytes = b""
        self._view = _EMPTY
        self._pos = 0
        self._base = 0  # stream offset of self._buf[0]
        self._remaining = 0  # stored data bytes of the current entry not yet handed out
        self._padding = 0
        self._entry: TarEntry | None = None
        self._globals: dict[str, bytes] = {}
        # Sparse state: data segments (offset, length), the index of the next one,
        # logical position and size.
        self._segments: list[tuple[int, int]] = []
        self._segment = 0
        self._lpos = 0
        self._lsize = 0

    # -- buffer -----------------------------------------------------------------

    def _fill(self, need: int) -> bool:
        """At least ``need`` bytes buffered at ``_pos``; False at end of stream."""
        have = len(self._buf) - self._pos
        if have >= need:
            return True
        parts = [self._buf[self._pos :]] if have else []
        while have < need:
            data = self._stream.read(max(_READ_CHUNK, need - have))
            if not data:
                break
            parts.append(data)
            have += len(data)
        self._base += self._pos
        self._buf = parts[0] if len(parts) == 1 else b"".join(parts)
        self._view = memoryview(self._buf)
        self._pos = 0
        return have >= need

    def _skip(self, count: int, where: str) -> None:
        while count:
            have = len(self._buf) - self._pos
            if have >= count:
                self._pos += count
                return
            self._pos += have
            count -= have
            if not self._fill(1):
                raise self._truncated(where)

    def _take(self, count: int, where: str) -> bytes:
        if count > _MAX_META:
            raise IntegrityError(f"{self._what}: {where} is {count} bytes, "
                                 f"over the {_MAX_META >> 20} MiB allowed")
        if not self._fill(count):
            raise self._truncated(where)
        data = self._buf[self._pos : self._pos + count]
        self._pos += count
        self._skip(-count % BLOCK, where)
        return data

    @property
    def offset(self) -> int:
        """Bytes of the uncompressed stream consumed so far."""
        return self._base + self._pos

    def _truncated(self, where: str) -> IntegrityError:
        return IntegrityError(f"{self._what}: tar stream is truncated in {where} "
                              f"(at offset {self.offset})")

    def _bad(self, offset: int, reason: str) -> IntegrityError:
        return IntegrityError(f"{self._what}: invalid tar header at offset {offset}: {reason}")

    # -- entries ----------------------------------------------------------------

    def __iter__(self) -> Iterator[TarEntry]:
        while True:
            entry = self._next()
            if entry is None:
                return
            yield entry

    def _next(self) -> TarEntry | None:
        if self._entry is not None:
            left = self._remaining + self._padding
            if len(self._buf) - self._pos >= left:
                self._pos += left  # in the buffer: no message to format
            else:
                self._skip(left, f"the data of entry {self._entry.name!r}")
            self._remaining = self._padding = 0
            self._segments = []
            self._segment = self._lpos = self._lsize = 0
            self._entry = None
        long_name: bytes | None = None
        long_link: bytes | None = None
        pax: dict[str, bytes] | None = None
        while True:
            offset = self.offset
            if not self._fill(BLOCK):
                if len(self._buf) - self._pos:
                    raise self._truncated("a header")
                if long_name is not None or long_link is not None or pax is not None:
                    raise self._truncated("an extended header's entry")
                if offset == 0:
                    # GNU tar: "This does not look like a tar archive".
                    raise IntegrityError(f"{self._what}: empty stream, not a tar archive")
                log.debug("%s: no end-of-archive marker at offset %d", self._what, offset)
                return None
            pos = self._pos
            block = self._view[pos : pos + BLOCK]
            total = _block_sum(block)
            if total == 0:
                if long_name is not None or long_link is not None or pax is not None:
                    raise self._bad(offset, "an extended header is followed by the end marker")
                self._end(offset)
                return None
            fields = _HEADER.unpack_from(self._buf, pos)
            self._pos += BLOCK
            self._check_sum(fields[6], total, block, offset)
            typeflag = fields[7]
            try:
                size = _number(fields[4])
            except ValueError:
                raise self._bad(offset, f"size field {fields[4]!r}") from None
            if size < 0:
                raise self._bad(offset, f"negative size {size}")
            if typeflag == XHDTYPE or typeflag == XGLTYPE or typeflag == SOLARIS_XHDTYPE:
                data = self._take(size, f"a pax extended header (offset {offset})")
                try:
                    records = _parse_pax(data)
                except ValueError as exc:
                    raise self._bad(offset, f"pax extended header: {exc}") from None
                if typeflag == XGLTYPE:
                    self._globals.update((key, value) for key, value in records.items()
                                         if key in _PAX_KEYS or key.startswith(_PAX_PREFIXES))
                    if len(self._globals) > _MAX_GLOBALS:
                        raise self._bad(offset, f"pax global headers carry "
                                                f"{len(self._globals)} records for every entry, "
                                                f"over the {_MAX_GLOBALS} allowed")
                else:
                    pax = records if pax is None else {**pax, **records}
                continue
            if typeflag == GNU_LONGNAME:
                long_name = _cstring(self._take(size, f"a GNU long name (offset {offset})"))
                continue
            if typeflag == GNU_LONGLINK:
                long_link = _cstring(self._take(size, f"a GNU long link (offset {offset})"))
                continue
            return self._entry_from(fields, typeflag, size, offset, long_name, long_link, pax)

    def _check_sum(self, raw: bytes, total: int, block: memoryview, offset: int) -> None:
        try:
            stored = _number(raw)
        except ValueError:
            raise self._bad(offset, f"checksum field {raw!r}") from None
        # The checksum is taken with its own field as eight spaces.
        unsigned = total - sum(raw) + 8 * 0x20
        if stored == unsigned:
            return
        # Some old tars summed signed chars; GNU tar and tarfile accept both.
        signed = unsigned - 256 * sum(1 for b in block[:148].tobytes() + block[156:].tobytes()
                                      if b & 0x80)
        if stored != signed:
            raise IntegrityError(f"{self._what}: bad tar header checksum at offset {offset} "
                                 f"(stored {stored}, computed {unsigned})")

    def _end(self, offset: int) -> None:
        self._pos += BLOCK
        if not self._fill(BLOCK):
            log.debug("%s: a lone zero block at offset %d ends the archive", self._what, offset)
            return
        if _block_sum(self._view[self._pos : self._pos + BLOCK]) != 0:
            # GNU tar warns and stops here (without --ignore-zeros); tarfile stops silently.
            log.warning("%s: a lone zero block at offset %d ends the archive; "
                        "what follows it is ignored", self._what, offset)

    def _entry_from(
        self, fields: tuple[bytes, ...], typeflag: bytes, size: int, offset: int,
        long_name: bytes | None, long_link: bytes | None, pax: dict[str, bytes] | None,
    ) -> TarEntry:
        if typeflag == GNU_SPARSE:
            raise IntegrityError(
                f"{self._what}: entry {_decode(long_name or _cstring(fields[0]))!r} is an "
                "old-style GNU sparse file, which kanipy does not read "
                "(GNU tar --format=posix writes the pax 1.0 sparse format, which it does)")
        if long_name is not None:
            raw_name = long_name
        else:
            raw_name = _cstring(fields[0])
            if fields[9] == _USTAR_MAGIC:
                # POSIX ustar only: GNU headers keep atime/ctime in these bytes.
                prefix = _cstring(fields[15])
                if prefix:
                    raw_name = prefix + b"/" + raw_name
        raw_link = long_link if long_link is not None else _cstring(fields[8])
        try:
            mode = _number(fields[1])
            uid = _number(fields[2])
            gid = _number(fields[3])
            mtime_ns = _number(fields[5]) * 1_000_000_000
            # Only devices use these; other writers leave them empty or as spaces.
            if typeflag == CHRTYPE or typeflag == BLKTYPE:
                devmajor = _number(fields[13])
                devminor = _number(fields[14])
            else:
                devmajor = devminor = 0
        except ValueError as exc:
            raise self._bad(offset, f"numeric field ({exc})") from None
        name = _decode(raw_name)
        linkname = _decode(raw_link)
        xattrs: dict[str, bytes] = {}
        sparse = False
        lsize = size
        if pax is not None or self._globals:
            records = {**self._globals, **pax} if pax is not None else self._globals
            try:
                for key, value in records.items():
                    if key not in _PAX_KEYS:
                        # atime, ctime and the like (most records) end here at once.
                        if key.startswith("GNU.sparse."):
                            sparse = True
                        elif not value:
                            pass  # POSIX: an empty value deletes the keyword
                        elif key.startswith("SCHILY.xattr."):
                            xattrs[key[13:]] = value
                        elif key.startswith("LIBARCHIVE.xattr."):
                            xattrs[urllib.parse.unquote(key[17:], errors="surrogateescape")] = (
                                base64.b64decode(value + b"=" * (-len(value) % 4),
                                                 validate=True))
                        continue
                    if not value:
                        continue  # POSIX: an empty value deletes the keyword
                    if key == "mtime":
                        mtime_ns = _pax_time_ns(value)
                    elif key == "path":
                        name = _decode(value)
                    elif key == "linkpath":
                        linkname = _decode(value)
                    elif key == "size":
                        size = lsize = _pax_int(value)
                    elif key == "uid":
                        uid = _pax_int(value)
                    elif key == "gid":
                        gid = _pax_int(value)
                    elif key == "SCHILY.devmajor":
                        devmajor = _pax_int(value)
                    elif key == "SCHILY.devminor":
                        devminor = _pax_int(value)
            except (ValueError, binascii.Error) as exc:
                raise self._bad(offset, f"pax record ({exc})") from None
            if sparse:
                version = (records.get("GNU.sparse.major"), records.get("GNU.sparse.minor"))
                real_name = records.get("GNU.sparse.name")
                if real_name:
                    name = _decode(real_name)
                if version != (b"1", b"0"):
                    raise IntegrityError(
                        f"{self._what}: entry {name!r} is a GNU sparse file in the pax 0.x "
                        "format, which kanipy does not read (only sparse format 1.0)")
                try:
                    lsize = _pax_int(records.get("GNU.sparse.realsize", b""))
                except ValueError as exc:
                    raise self._bad(offset, f"GNU.sparse.realsize ({exc})") from None
        if typeflag == AREGTYPE or typeflag == CONTTYPE:
            typeflag = DIRTYPE if typeflag == AREGTYPE and name.endswith("/") else REGTYPE
        if typeflag == DIRTYPE:
            name = name.rstrip("/")
        has_data = typeflag not in _NO_DATA
        self._remaining = size if has_data else 0
        self._padding = -size % BLOCK if has_data else 0
        entry = TarEntry(name, typeflag, mode, uid, gid, lsize, mtime_ns, linkname,
                         devmajor, devminor, xattrs, offset, sparse)
        self._entry = entry
        if sparse:
            self._read_sparse_map(entry, size)
        return entry

    # -- data -------------------------------------------------------------------

    def _read_sparse_map(self, entry: TarEntry, stored: int) -> None:
        """GNU sparse 1.0: the data starts with decimal lines "count", then
        "offset" and "length" per data segment, padded to a block."""
        where = f"the sparse map of entry {entry.name!r}"
        numbers: list[int] = []
        partial = b""  # an unfinished line carried to the next block
        taken = 0
        # Parsed a block at a time, only its new lines: re-parsing the whole map
        # per block cost time quadratic in its size (16 MiB allowed).
        while True:
            if self._remaining < BLOCK:
                raise self._truncated(where)
            taken += BLOCK
            if taken > _MAX_META:
                raise IntegrityError(f"{self._what}: {where} is too large")
            lines = (partial + self._take(BLOCK, where)).split(b"\n")
            self._remaining -= BLOCK
            partial = lines.pop()
            try:
                numbers.extend(_pax_int(line) for line in lines)
            except ValueError:
                raise IntegrityError(f"{self._what}: {where} is malformed") from None
            if numbers and len(numbers) >= 1 + 2 * numbers[0]:
                break
            if len(partial) > 40:  # no decimal line is that long
                raise IntegrityError(f"{self._what}: {where} is malformed")
        count = numbers[0]
        segments = [(numbers[1 + 2 * i], numbers[2 + 2 * i]) for i in range(count)]
        end = 0
        for start, length in segments:
            if start < end:
                raise IntegrityError(f"{self._what}: {where} has overlapping segments")
            end = start + length
        if end > entry.size or sum(n for _, n in segments) != self._remaining:
            raise IntegrityError(f"{self._what}: {where} does not match its data "
                                 f"({self._remaining} bytes stored)")
        self._padding = -self._remaining % BLOCK
        self._segments = segments
        self._segment = 0
        self._lpos = 0
        self._lsize = entry.size

    def _read_stored(self, n: int) -> memoryview:
        if not self._remaining:
            return _EMPTY
        have = len(self._buf) - self._pos
        if not have:
            if not self._fill(1):
                assert self._entry is not None
                raise self._truncated(f"the data of entry {self._entry.name!r}")
            have = len(self._buf)
        count = min(n, self._remaining, have)
        view = self._view[self._pos : self._pos + count]
        self._pos += count
        self._remaining -= count
        return view

    def read(self, n: int = _READ_CHUNK) -> memoryview:
        """Up to ``n`` (> 0) bytes of the current entry's contents; empty at its end.

        The view is valid until the next call on this reader (it may be a slice
        of the read buffer): write it out or copy it before reading on. The holes
        of a sparse file come back as zeros, so reading one costs its declared
        size; an unpacker should use ``read_stored`` instead.
        """
        if not self._segments and not self._lsize:
            return self._read_stored(n)
        while self._lpos < self._lsize:
            if self._segment < len(self._segments):
                start, length = self._segments[self._segment]
                if self._lpos < start:
                    count = min(n, start - self._lpos, len(_ZEROS))
                    self._lpos += count
                    return _ZEROS[:count]
                if self._lpos < start + length:
                    view = self._read_stored(min(n, start + length - self._lpos))
                    self._lpos += len(view)
                    return view
                self._segment += 1
                continue
            count = min(n, self._lsize - self._lpos, len(_ZEROS))
            self._lpos += count
            return _ZEROS[:count]
        return _EMPTY

    def read_stored(self, n: int = _READ_CHUNK) -> tuple[int, memoryview]:
        """The next piece (up to ``n`` bytes) of the data the archive holds for the
        current entry, with its offset in the file; an empty view at the end.

        For a sparse file the holes are never produced: the caller seeks over
        them and sizes the file to ``entry.size``. The work is bounded by the
        archive's bytes, whatever size a header declares. The view is valid
        until the next call, as for ``read``.
        """
        entry = self._entry
        if entry is None:
            return 0, _EMPTY
        if not entry.sparse:
            offset = entry.size - self._remaining
            return offset, self._read_stored(n)
        while self._segment < len(self._segments):
            start, length = self._segments[self._segment]
            self._lpos = max(self._lpos, start)
            if self._lpos < start + length:
                offset = self._lpos
                view = self._read_stored(min(n, start + length - self._lpos))
                self._lpos += len(view)
                return offset, view
            self._segment += 1
        return self._lsize, _EMPTY
