"""The tar writer's headers against Python's own ``tarfile`` (issue 14 made the writer's
per-entry path shorter; the bytes must not move).

For every entry that fits ustar without a name prefix, kanipy's header must be the
block ``tarfile`` writes in ``USTAR_FORMAT`` with empty user and group names; entries
that need pax records are checked by reading the archive back.
"""

from __future__ import annotations

import io
import tarfile

import pytest

from kanipy.fs.tarwriter import (
    BLKTYPE,
    CHRTYPE,
    DIRTYPE,
    FIFOTYPE,
    LNKTYPE,
    REGTYPE,
    SYMTYPE,
    TarWriter,
)

ENTRIES = [
    ("file", dict(name="etc/hosts", typeflag=REGTYPE, mode=0o644, uid=0, gid=0,
                  mtime=1_700_000_000, size=123)),
    ("empty file", dict(name="e", typeflag=REGTYPE, mode=0, uid=1, gid=2, mtime=0)),
    ("setuid, big ids", dict(name="bin/su", typeflag=REGTYPE, mode=0o4755, uid=8**7 - 1,
                             gid=8**7 - 1, mtime=8**11 - 1, size=8**11 - 1)),
    ("directory", dict(name="usr/share/", typeflag=DIRTYPE, mode=0o2775, uid=1000,
                       gid=1000, mtime=5)),
    ("100-byte name", dict(name="n" * 100, typeflag=REGTYPE, mode=0o600, uid=0, gid=0,
                           mtime=1, size=1)),
    ("symlink", dict(name="lib/libc.so", typeflag=SYMTYPE, mode=0o777, uid=0, gid=0,
                     mtime=9, linkname="../lib64/libc.so.6")),
    ("100-byte link", dict(name="l", typeflag=SYMTYPE, mode=0o777, uid=0, gid=0, mtime=9,
                           linkname="t" * 100)),
    ("hardlink", dict(name="b", typeflag=LNKTYPE, mode=0o644, uid=0, gid=0, mtime=3,
                      linkname="a")),
    ("char device", dict(name="dev/null", typeflag=CHRTYPE, mode=0o666, uid=0, gid=0,
                         mtime=0, devmajor=1, devminor=3)),
    ("block device", dict(name="dev/sda", typeflag=BLKTYPE, mode=0o660, uid=0, gid=6,
                          mtime=0, devmajor=8, devminor=8**7 - 1)),
    ("fifo", dict(name="run/fifo", typeflag=FIFOTYPE, mode=0o600, uid=0, gid=0, mtime=2)),
]


def _written(entry: dict[str, object]) -> bytes:
    sink = io.BytesIO()
    writer = TarWriter(sink)
    writer.add(**entry)  # type: ignore[arg-type]
    writer.close()
    return sink.getvalue()


@pytest.mark.parametrize("entry", [e for _, e in ENTRIES], ids=[n for n, _ in ENTRIES])
def test_header_is_the_ustar_block_tarfile_writes(entry: dict[str, object]) -> None:
    info = tarfile.TarInfo(str(entry["name"]))
    info.type = entry["typeflag"]  # type: ignore[assignment]
    info.mode = int(entry["mode"])  # type: ignore[call-overload]
    info.uid, info.gid = int(entry["uid"]), int(entry["gid"])  # type: ignore[call-overload]
    info.mtime = int(entry["mtime"])  # type: ignore[call-overload]
    info.size = int(entry.get("size", 0))  # type: ignore[call-overload]
    info.linkname = str(entry.get("linkname", ""))
    info.devmajor = int(entry.get("devmajor", 0))  # type: ignore[call-overload]
    info.devminor = int(entry.get("devminor", 0))  # type: ignore[call-overload]
    info.uname = info.gname = ""
    expected = info.tobuf(format=tarfile.USTAR_FORMAT)
    if entry["typeflag"] not in (CHRTYPE, BLKTYPE):
        # tarfile leaves devmajor and devminor empty for other entries; kanipy has always
        # written zeros there (as Go's archive/tar does), and its layers' digests rest on it.
        expected = _checksummed(expected[:329] + b"0000000\0" * 2 + expected[345:])
    assert _written(entry)[:512] == expected


def _checksummed(block: bytes) -> bytes:
    """``block`` with its checksum field recomputed (POSIX ustar: the field as spaces)."""
    blank = block[:148] + b" " * 8 + block[156:]
    return blank[:148] + b"%06o\0 " % sum(blank) + blank[156:]


PAX_ENTRIES = [
    ("long name", dict(name="d/" * 60 + "f", typeflag=REGTYPE, mode=0o644, uid=0, gid=0,
                       mtime=1)),
    ("non-ASCII name", dict(name="caf\u00e9", typeflag=REGTYPE, mode=0o644, uid=0, gid=0,
                            mtime=1)),
    ("long link", dict(name="l", typeflag=SYMTYPE, mode=0o777, uid=0, gid=0, mtime=1,
                       linkname="t" * 101)),
    ("huge uid", dict(name="u", typeflag=REGTYPE, mode=0o644, uid=8**7, gid=8**8, mtime=1)),
    ("negative mtime", dict(name="m", typeflag=REGTYPE, mode=0o644, uid=0, gid=0, mtime=-1)),
    ("xattr", dict(name="x", typeflag=REGTYPE, mode=0o644, uid=0, gid=0, mtime=1,
                   xattrs=[("user.k", b"v")])),
]


@pytest.mark.parametrize("entry", [e for _, e in PAX_ENTRIES], ids=[n for n, _ in PAX_ENTRIES])
def test_entries_that_need_pax_read_back_whole(entry: dict[str, object]) -> None:
    with tarfile.open(fileobj=io.BytesIO(_written(entry))) as archive:
        member = archive.getmembers()[0]
    assert member.name == entry["name"]
    assert member.linkname == entry.get("linkname", "")
    assert (member.uid, member.gid, member.mtime) == \
        (entry["uid"], entry["gid"], entry["mtime"])
    if "xattrs" in entry:
        assert member.pax_headers["SCHILY.xattr.user.k"] == "v"
