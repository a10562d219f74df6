"""A small, fast, deterministic tar encoder (POSIX pax interchange format).

We write the 512-byte ustar headers ourselves instead of going through
``tarfile.TarFile.addfile``: that costs about 100 µs per member (docs/architecture.md,
decision 4) where this costs a few. Output follows POSIX.1-2008 "pax
Interchange Format": a ustar header per entry, preceded by an extended header
(typeflag ``x``) only when a value does not fit ustar (long names or link
targets, non-ASCII names, large ids or sizes, xattrs as ``SCHILY.xattr.*``
records, as GNU tar and Go's archive/tar write them). Owners are numeric with
empty user and group names, so the bytes do not depend on the host's user
database.
"""

from __future__ import annotations

import logging
import os
import struct
import sys
from typing import Protocol

from kanipy.fs.tarformat import (  # noqa: F401 - re-exported for the writer's callers
    BLKTYPE,
    BLOCK,
    CHRTYPE,
    DIRTYPE,
    FIFOTYPE,
    LNKTYPE,
    REGTYPE,
    SYMTYPE,
    XHDTYPE,
)

log = logging.getLogger(__name__)

_FLUSH_AT = 1 << 20
_CHUNK = 1 << 20
_PAX_NAME = b"././@PaxHeader"
# What os.fsencode does, without its call per name (issue 14: per-entry costs).
_FS_ENCODING = sys.getfilesystemencoding()
_FS_ERRORS = sys.getfilesystemencodeerrors()
# The largest values an 8-byte and a 12-byte octal field hold (digits and a NUL).
_FITS_8 = 8 ** 7
_FITS_12 = 8 ** 11
# The header's constant parts, summed once: the checksum field counts as eight
# spaces while summing, the magic and version, and NUL padding adds nothing.
_FIXED_SUM = 8 * 32 + sum(b"ustar\x0000")
# name, mode to mtime, checksum, typeflag, linkname, magic and version, uname and
# gname (empty: owners are numeric), devmajor and devminor, prefix, padding.
_USTAR = struct.Struct("100s48s8s1s100s8s64s16s155s12s")
_NO_DEVICES = b"0000000\x000000000\x00"
_NO_DEVICES_SUM = sum(_NO_DEVICES)



class Sink(Protocol):
    def write(self, data: bytes | bytearray | memoryview, /) -> int: ...


def _pax_record(key: str, value: bytes) -> bytes:
    # "%d %s=%s\n" where the length counts the whole record, its own digits included.
    body = b" " + key.encode("utf-8") + b"=" + value + b"\n"
    length = len(body) + len(str(len(body)))
    if len(str(length)) > len(str(len(body))):
        length += 1
    return str(length).encode("ascii") + body


def _split_ustar(name: bytes) -> tuple[bytes, bytes] | None:
    """(prefix, name) fitting ustar's 155 + 100 byte fields, or None."""
    if len(name) <= 100:
        return b"", name
    if len(name) > 256:
        return None
    # The split must be at a slash, with the prefix at most 155 bytes.
    cut = name.rfind(b"/", 0, 156)
    while cut > 0:
        if len(name) - cut - 1 <= 100:
            return name[:cut], name[cut + 1 :]
        cut = name.rfind(b"/", 0, cut)
    return None


def _header(
    name: bytes, prefix: bytes, mode: int, uid: int, gid: int, size: int, mtime: int,
    typeflag: bytes, linkname: bytes, devmajor: int, devminor: int,
) -> bytes:
    """One ustar header block; a number that does not fit its field is written as
    zeros (its pax record carries it)."""
    numbers = b"%07o\0%07o\0%07o\0%011o\0%011o\0" % (
        mode if 0 <= mode < _FITS_8 else 0,
        uid if 0 <= uid < _FITS_8 else 0,
        gid if 0 <= gid < _FITS_8 else 0,
        size if 0 <= size < _FITS_12 else 0,
        mtime if 0 <= mtime < _FITS_12 else 0,
    )
    # The checksum is the sum of the header's bytes (POSIX ustar); summing the
    # parts that vary is a fifth of summing the 512-byte block, and most entries
    # have no link name, no prefix and no device numbers.
    checksum = _FIXED_SUM + sum(name) + sum(numbers) + typeflag[0]
    if devmajor or devminor:
        devices = b"%07o\0%07o\0" % (devmajor if 0 <= devmajor < _FITS_8 else 0,
                                       devminor if 0 <= devminor < _FITS_8 else 0)
        checksum += sum(devices)
    else:
        devices = _NO_DEVICES
        checksum += _NO_DEVICES_SUM
    if linkname:
        checksum += sum(linkname)
    if prefix:
        checksum += sum(prefix)
    # One pack: each "s" field is padded with NULs to its width.
    return _USTAR.pack(name, numbers, b"%06o\0 " % checksum, typeflag, linkname,
                       b"ustar\x0000", b"", devices, prefix, b"")


class TarWriter:
    """Encodes tar entries into ``sink``, buffering small writes into big ones."""

    def __init__(self, sink: Sink) -> None:
        self._sink = sink
        self._buf = bytearray()
        self._chunk = bytearray(_CHUNK)
        self.entries = 0

    def _flush(self) -> None:
        if self._buf:
            self._sink.write(self._buf)
            self._buf = bytearray()

    def add(
        self,
        name: str,
        typeflag: bytes,
        *,
        mode: int,
        uid: int,
        gid: int,
        mtime: int,
        size: int = 0,
        linkname: str = "",
        devmajor: int = 0,
        devminor: int = 0,
        xattrs: list[tuple[str, bytes]] | None = None,
    ) -> None:
        """Write one entry's header(s); a regular file's data must follow via
        ``add_data`` (exactly ``size`` bytes)."""
        raw_name = name.encode(_FS_ENCODING, _FS_ERRORS)
        raw_link = linkname.encode(_FS_ENCODING, _FS_ERRORS) if linkname else b""
        if (len(raw_name) <= 100 and not raw_link and not xattrs and raw_name.isascii()
                and 0 <= uid < _FITS_8 and 0 <= gid < _FITS_8 and 0 <= size < _FITS_12
                and 0 <= mtime < _FITS_12):
            # Most entries: one ustar header, nothing for pax (issue 14: per entry).
            self._buf += _header(raw_name, b"", mode, uid, gid, size, mtime, typeflag,
                                 b"", devmajor, devminor)
            self.entries += 1
            if len(self._buf) >= _FLUSH_AT:
                self._flush()
            return
        pax: list[bytes] = []
        split = _split_ustar(raw_name) if raw_name.isascii() else None
        if split is None:
            pax.append(_pax_record("path", raw_name))
            split = (b"", raw_name[:100])
        if len(raw_link) > 100 or not raw_link.isascii():
            pax.append(_pax_record("linkpath", raw_link))
        if not 0 <= uid < _FITS_8:
            pax.append(_pax_record("uid", b"%d" % uid))
        if not 0 <= gid < _FITS_8:
            pax.append(_pax_record("gid", b"%d" % gid))
        if not 0 <= size < _FITS_12:
            pax.append(_pax_record("size", b"%d" % size))
        if not 0 <= mtime < _FITS_12:
            pax.append(_pax_record("mtime", b"%d" % mtime))
        for key, value in xattrs or ():
            pax.append(_pax_record("SCHILY.xattr." + key, value))
        buf = self._buf
        if pax:
            payload = b"".join(pax)
            buf += _header(_PAX_NAME, b"", 0o644, 0, 0, len(payload), 0, XHDTYPE, b"", 0, 0)
            buf += payload
            buf += b"\0" * (-len(payload) % BLOCK)
        buf += _header(split[1], split[0], mode, uid, gid, size, mtime, typeflag,
                       raw_link[:100], devmajor, devminor)
        self.entries += 1
        if len(buf) >= _FLUSH_AT:
            self._flush()

    def add_data(self, fd: int, size: int, what: str) -> None:
        """Copy ``size`` bytes from ``fd`` as the data of the entry just added.

        A file that shrank since its header was written is padded with zeros and
        one that grew is cut, so the archive stays well-formed; both are logged.
        """
        remaining = size
        grew = False
        if size <= _FLUSH_AT:
            # One byte more than is left: a file that grew shows without another read
            # (a read from a regular file returns less than asked only at its end).
            while remaining:
                data = os.read(fd, remaining + 1)
                if not data:
                    break
                if len(data) > remaining:
                    grew = True
                    data = data[:remaining]
                self._buf += data
                remaining -= len(data)
            if size == 0:
                grew = os.read(fd, 1) != b""
        else:
            self._flush()
            view = memoryview(self._chunk)
            while remaining:
                got = os.readv(fd, [view[: min(remaining, _CHUNK)]])
                if not got:
                    break
                self._sink.write(view[:got])
                remaining -= got
        if remaining:
            log.warning("%s shrank while being archived; padded with %d zero bytes",
                        what, remaining)
            self._buf += b"\0" * remaining
        elif grew or (size > _FLUSH_AT and os.read(fd, 1)):
            log.warning("%s grew while being archived; only its first %d bytes kept",
                        what, size)
        self._buf += b"\0" * (-size % BLOCK)
        if len(self._buf) >= _FLUSH_AT:
            self._flush()

    def close(self) -> None:
        """The end-of-archive marker (two zero blocks), then flush."""
        self._buf += b"\0" * (2 * BLOCK)
        self._flush()
