"""TarReader against the standard library's tarfile, on archives from three writers.

GNU tar (gnu, posix/pax with xattrs and sparse files, ustar), Python's tarfile
(pax with binary and libarchive xattrs, global headers, GNU long names,
base-256 ids) and our own TarWriter. tarfile is the oracle here, and only here:
every field our reader reports must equal what tarfile reports for the same
bytes. Then what a corrupt or truncated stream does.
"""

from __future__ import annotations

import base64
import hashlib
import io
import os
import subprocess
import tarfile
import urllib.parse
from collections.abc import Callable
from pathlib import Path

import pytest

from kanipy.errors import IntegrityError
from kanipy.fs import tarreader
from kanipy.fs.tarreader import BLOCK, REGTYPE, TarEntry, TarReader
from kanipy.fs.tarwriter import DIRTYPE, LNKTYPE, SYMTYPE, TarWriter
from tests.tools import require_tool

MTIME = 1_600_000_000
BIG_ID = 3_000_000  # over 2097151, the largest 7-digit octal: base-256 or a pax record
LONG_DIR = "long/" + "n" * 60 + "/" + "m" * 70
LONG_TARGET = "../" * 10 + "t" * 130
XATTR = b"\xff\x00\x01binary"
BIG = os.urandom(3 << 20)


def read_all(data: bytes, chunk: int = 1 << 20) -> list[tuple[TarEntry, bytes]]:
    reader = TarReader(io.BytesIO(data), "layer test")
    out = []
    for entry in reader:
        parts = []
        while view := reader.read(chunk):
            assert len(view) <= chunk
            parts.append(bytes(view))
        out.append((entry, b"".join(parts)))
    return out


def oracle(data: bytes) -> list[dict[str, object]]:
    """What tarfile reports, in the shape of a TarEntry (types normalized as ours)."""
    rows = []
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
        for m in tar:
            pax = m.pax_headers
            xattrs = {}
            for key, value in pax.items():
                if key.startswith("SCHILY.xattr."):
                    xattrs[key[13:]] = value.encode("utf-8", "surrogateescape")
                elif key.startswith("LIBARCHIVE.xattr."):
                    xattrs[urllib.parse.unquote(key[17:])] = base64.b64decode(
                        value + "=" * (-len(value) % 4))
            if "mtime" in pax:
                whole, _, frac = pax["mtime"].partition(".")
                mtime_ns = int(whole) * 10**9 + int((frac + "0" * 9)[:9])
            else:
                mtime_ns = int(m.mtime) * 10**9
            source = tar.extractfile(m) if m.isreg() else None
            rows.append({
                "name": m.name, "type": REGTYPE if m.isreg() else m.type,
                "mode": m.mode, "uid": m.uid, "gid": m.gid, "size": m.size,
                "mtime_ns": mtime_ns, "linkname": m.linkname, "devmajor": m.devmajor,
                "devminor": m.devminor, "xattrs": xattrs,
                "data": source.read() if source else b"",
            })
    return rows


def ours(data: bytes, chunk: int = 1 << 20) -> list[dict[str, object]]:
    return [{
        "name": e.name, "type": e.type, "mode": e.mode, "uid": e.uid, "gid": e.gid,
        "size": e.size, "mtime_ns": e.mtime_ns, "linkname": e.linkname,
        "devmajor": e.devmajor, "devminor": e.devminor, "xattrs": e.xattrs, "data": body,
    } for e, body in read_all(data, chunk)]


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A source tree for GNU tar: long names and targets, links, a fifo, xattrs, 3 MiB."""
    src = tmp_path_factory.mktemp("tree") / "src"
    (src / LONG_DIR).mkdir(parents=True)
    (src / LONG_DIR / "file.txt").write_bytes(b"deep\n")
    (src / "d").mkdir()
    (src / "d/hello").write_bytes(b"hello\n")
    (src / "d/empty").write_bytes(b"")
    (src / "d/big").write_bytes(BIG)
    (src / "d/caps").write_bytes(b"x")
    os.setxattr(src / "d/caps", "user.bin", XATTR)
    os.setxattr(src / "d/caps", "user.text", b"plain")
    os.link(src / "d/hello", src / "d/hardlink")
    os.symlink(LONG_TARGET, src / "d/longlink")
    os.symlink("hello", src / "d/short")
    os.mkfifo(src / "d/fifo")
    os.chmod(src / "d/hello", 0o4755)
    for path in [src, *src.rglob("*")]:
        os.utime(path, ns=(MTIME * 10**9 + 123456789,) * 2, follow_symlinks=False)
    return src


def gnu_tar(*flags: str) -> Callable[[Path, Path], bytes]:
    def make(src: Path, out: Path) -> bytes:
        tar = require_tool("tar")
        subprocess.run([tar, *flags, "--sort=name", "-cf", str(out), "-C", str(src), "."],
                       check=True)
        return out.read_bytes()
    return make


def py_tar(fmt: int, **open_kw: object) -> Callable[[Path, Path], bytes]:
    """Entries tarfile writes itself: devices, binary and libarchive xattrs, big ids."""
    def make(src: Path, out: Path) -> bytes:
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w", format=fmt, **open_kw) as tar:  # type: ignore[call-overload]
            def add(name: str, kind: bytes, data: bytes = b"", **kw: object) -> None:
                info = tarfile.TarInfo(name)
                info.type, info.mtime, info.size = kind, MTIME, len(data)
                for key, value in kw.items():
                    setattr(info, key, value)
                tar.addfile(info, io.BytesIO(data) if data else None)
            xattr_pax = {} if fmt != tarfile.PAX_FORMAT else {
                "SCHILY.xattr.security.capability": XATTR.decode("utf-8", "surrogateescape"),
                "LIBARCHIVE.xattr.user.a%3Db": base64.b64encode(b"\x00\xfe").decode().rstrip("="),
                "mtime": "1600000000.5",
            }
            add("etc/", tarfile.DIRTYPE, mode=0o755)
            add(LONG_DIR + "/" + "é" * 40, tarfile.REGTYPE, b"long", uid=BIG_ID, gid=BIG_ID)
            add("bin/ping", tarfile.REGTYPE, b"\x7fELF", mode=0o4755, pax_headers=xattr_pax)
            add("bin/ping6", tarfile.LNKTYPE, linkname="bin/ping")
            add("bin/far", tarfile.SYMTYPE, linkname=LONG_TARGET)
            add("dev/null", tarfile.CHRTYPE, devmajor=1, devminor=3, mode=0o666)
            add("dev/sda", tarfile.BLKTYPE, devmajor=8, devminor=0, mode=0o660)
            add("run/fifo", tarfile.FIFOTYPE)
            add("big", tarfile.REGTYPE, BIG)
        return buf.getvalue()
    return make


def our_tar(src: Path, out: Path) -> bytes:
    buf = io.BytesIO()
    writer = TarWriter(buf)
    writer.add("etc", DIRTYPE, mode=0o755, uid=0, gid=0, mtime=MTIME)
    writer.add(LONG_DIR + "/ü", SYMTYPE, mode=0o777, uid=BIG_ID, gid=5, mtime=MTIME,
               linkname=LONG_TARGET, xattrs=[("user.bin", XATTR)])
    for name, data in [("etc/hello", b"hello\n"), ("big", BIG)]:
        fd = os.open(src / "data", os.O_RDWR | os.O_CREAT | os.O_TRUNC)
        os.write(fd, data)
        os.lseek(fd, 0, os.SEEK_SET)
        writer.add(name, REGTYPE, mode=0o644, uid=1, gid=2, mtime=MTIME, size=len(data))
        writer.add_data(fd, len(data), name)
        os.close(fd)
    writer.add("etc/link", LNKTYPE, mode=0o644, uid=1, gid=2, mtime=MTIME, linkname="etc/hello")
    writer.close()
    return buf.getvalue()


WRITERS: dict[str, Callable[[Path, Path], bytes]] = {
    "gnu-tar-gnu": gnu_tar("--format=gnu", "--owner=big:3000000", "--group=big:3000000"),
    "gnu-tar-posix-xattrs": gnu_tar("--format=posix", "--xattrs", "--xattrs-include=*",
                                    "--owner=big:3000000"),
    "gnu-tar-posix-sparse-1.0": gnu_tar("--format=posix", "--sparse", "--sparse-version=1.0"),
    "gnu-tar-ustar": gnu_tar("--format=ustar", "--exclude=./d/longlink"),
    "gnu-tar-gzip-record-padding": gnu_tar("--format=gnu", "--blocking-factor=64"),
    "tarfile-pax": py_tar(tarfile.PAX_FORMAT),
    "tarfile-pax-global": py_tar(tarfile.PAX_FORMAT, pax_headers={"uid": "77", "comment": "g"}),
    "tarfile-gnu": py_tar(tarfile.GNU_FORMAT),
    "tarwriter": our_tar,
}


@pytest.mark.parametrize("writer", list(WRITERS), ids=list(WRITERS))
def test_every_field_matches_tarfile(tree: Path, tmp_path: Path, writer: str) -> None:
    if "sparse" in writer:
        holey = tmp_path / "sparse-src"
        holey.mkdir()
        with open(holey / "holes", "wb") as f:
            f.truncate(5 << 20)
            f.seek(2_000_000)
            f.write(b"island")
        (holey / "dense").write_bytes(BIG[:10000])
        data = WRITERS[writer](holey, tmp_path / "out.tar")
    else:
        data = WRITERS[writer](tree, tmp_path / "out.tar")
    want = oracle(data)
    got = ours(data)
    assert [row["name"] for row in got] == [row["name"] for row in want]
    for g, w in zip(got, want, strict=True):
        assert g == w, g["name"]
    # A small read size gives the same bytes, in bounded chunks.
    assert ours(data, chunk=1000) == got


def test_formats_really_exercise_their_features(tree: Path, tmp_path: Path) -> None:
    """Guard the table above: the archives contain what their ids claim."""
    gnu = WRITERS["gnu-tar-gnu"](tree, tmp_path / "g.tar")
    assert b"././@LongLink" in gnu and b"\x80\0\0\0" in gnu  # base-256 uid
    names = {e.name: e for e, _ in read_all(gnu)}
    assert names["./d/caps"].uid == BIG_ID
    assert names["./d/longlink"].linkname == LONG_TARGET
    pax = WRITERS["gnu-tar-posix-xattrs"](tree, tmp_path / "p.tar")
    caps = {e.name: e for e, _ in read_all(pax)}["./d/caps"]
    assert caps.xattrs == {"user.bin": XATTR, "user.text": b"plain"}
    assert caps.mtime_ns == MTIME * 10**9 + 123456789
    ustar = {e.name for e, _ in read_all(WRITERS["gnu-tar-ustar"](tree, tmp_path / "u.tar"))}
    assert f"./{LONG_DIR}/file.txt" in ustar  # through the ustar prefix field
    py = {e.name: e for e, _ in read_all(WRITERS["tarfile-pax"](tree, tmp_path / "t.tar"))}
    assert py["bin/ping"].xattrs == {"security.capability": XATTR, "user.a=b": b"\x00\xfe"}
    assert py["bin/ping"].mtime_ns == 1_600_000_000_500_000_000
    glob = read_all(WRITERS["tarfile-pax-global"](tree, tmp_path / "gl.tar"))
    assert {e.uid for e, _ in glob} == {77, BIG_ID}  # per-entry records beat global ones


def test_sparse_file_keeps_its_contents(tmp_path: Path) -> None:
    tar = require_tool("tar")
    src = tmp_path / "src"
    src.mkdir()
    with open(src / "holes", "wb") as f:
        f.truncate(5 << 20)
        f.seek(2_000_000)
        f.write(b"island")
    out = tmp_path / "s.tar"
    subprocess.run([tar, "--format=posix", "--sparse", "--sparse-version=1.0", "-cf",
                    str(out), "-C", str(src), "holes"], check=True)
    [(entry, body)] = read_all(out.read_bytes())
    assert (entry.name, entry.size, entry.sparse) == ("holes", 5 << 20, True)
    assert body == (src / "holes").read_bytes()


def test_read_stored_gives_only_the_data_with_its_offsets(tmp_path: Path) -> None:
    tar = require_tool("tar")
    src = tmp_path / "src"
    src.mkdir()
    with open(src / "holes", "wb") as f:
        f.truncate(64 << 20)
        f.seek(2_000_000)
        f.write(b"island")
        f.seek(50 << 20)
        f.write(b"atoll")
    (src / "plain").write_bytes(b"p" * 3000)
    out = tmp_path / "s.tar"
    subprocess.run([tar, "--format=posix", "--sparse", "--sparse-version=1.0", "-cf",
                    str(out), "-C", str(src), "holes", "plain"], check=True)
    reader = TarReader(io.BytesIO(out.read_bytes()), "layer test")
    for entry in reader:
        rebuilt = bytearray(entry.size)
        stored = 0
        while True:
            offset, view = reader.read_stored(1000)
            if not view:
                break
            assert len(view) <= 1000
            rebuilt[offset : offset + len(view)] = view
            stored += len(view)
        assert bytes(rebuilt) == (src / entry.name).read_bytes()
        if entry.name == "plain":
            assert stored == 3000
        else:  # the 64 MB of holes are never handed out, only what the archive holds
            assert entry.sparse and stored < 1 << 20


@pytest.mark.parametrize("flags", [["--format=gnu", "--sparse"],
                                   ["--format=posix", "--sparse", "--sparse-version=0.1"]],
                         ids=["gnu-old-sparse", "pax-sparse-0.1"])
def test_older_sparse_formats_are_refused_by_name(tmp_path: Path, flags: list[str]) -> None:
    tar = require_tool("tar")
    with open(tmp_path / "holes", "wb") as f:
        f.truncate(1 << 20)
        f.seek(300_000)
        f.write(b"x")
    out = tmp_path / "s.tar"
    subprocess.run([tar, *flags, "-cf", str(out), "-C", str(tmp_path), "holes"], check=True)
    with pytest.raises(IntegrityError, match="layer test: entry 'holes' is .*sparse"):
        read_all(out.read_bytes())


def small_archive() -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in [("a", b"A" * 700), ("b", b"B" * 10)]:
            info = tarfile.TarInfo(name)
            info.size, info.mtime = len(data), MTIME
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def reheader(block: bytearray, signed: bool = False) -> bytearray:
    """Recompute a header block's checksum, the signed way if asked."""
    block[148:156] = b" " * 8
    total = sum((b - 256 if signed and b > 127 else b) for b in block)
    block[148:156] = b"%06o\0 " % (total & 0o777777 if total >= 0 else total)
    return block


def with_signed_checksum() -> bytes:
    data = bytearray(small_archive())
    header = bytearray(data[:BLOCK])
    header[0:2] = "é".encode()  # bytes over 127: signed and unsigned sums differ
    data[:BLOCK] = reheader(header, signed=True)
    return bytes(data)


# Stream -> the names read, or the error message expected (a regex).
ENDINGS: dict[str, tuple[bytes, list[str] | str]] = {
    "complete": (small_archive(), ["a", "b"]),
    "trailing-zeros": (small_archive() + bytes(20 * BLOCK), ["a", "b"]),
    "garbage-after-end-marker": (small_archive() + b"garbage" * 500, ["a", "b"]),
    "no-end-marker": (small_archive()[: 5 * BLOCK], ["a", "b"]),
    "lone-zero-block-then-garbage": (
        small_archive()[: 5 * BLOCK] + bytes(BLOCK) + b"\x01" * BLOCK, ["a", "b"]),
    "lone-zero-block-at-eof": (small_archive()[: 5 * BLOCK] + bytes(BLOCK), ["a", "b"]),
    "signed-checksum": (with_signed_checksum(), ["é", "b"]),
    "bad-checksum": (
        small_archive()[: 3 * BLOCK] + b"X" + small_archive()[3 * BLOCK + 1 :],
        r"layer test: bad tar header checksum at offset 1536"),
    "truncated-in-data": (small_archive()[:BLOCK + 300],
                          r"layer test: tar stream is truncated in the data of entry 'a'"),
    "truncated-in-padding": (small_archive()[:1300],
                             r"layer test: tar stream is truncated in the data of entry 'a'"),
    "truncated-in-header": (small_archive()[: 3 * BLOCK + 100],
                            r"layer test: tar stream is truncated in a header"),
    "empty": (b"", r"layer test: empty stream"),
    "not-a-tar": (b"<html>404 not found</html>".ljust(BLOCK, b" "),
                  r"layer test: bad tar header checksum at offset 0"),
    "bad-number": (bytes(reheader(bytearray(small_archive()[:BLOCK].replace(
        b"00000001274", b"0000000128x", 1)))) + small_archive()[BLOCK:],
        r"invalid tar header at offset 0: size field"),
}


@pytest.mark.parametrize("case", list(ENDINGS), ids=list(ENDINGS))
def test_stream_endings_and_corruption(case: str) -> None:
    data, expected = ENDINGS[case]
    if isinstance(expected, str):
        with pytest.raises(IntegrityError, match=expected):
            read_all(data)
    else:
        got = read_all(data)
        assert [e.name for e, _ in got] == expected
        assert [len(body) for _, body in got] == [700, 10]


def test_unread_data_is_skipped_and_chunks_are_bounded() -> None:
    data = py_tar(tarfile.PAX_FORMAT)(Path("/nonexistent"), Path("/nonexistent"))
    reader = TarReader(io.BytesIO(data), "layer test")
    sizes = []
    for entry in reader:
        if entry.name == "big":
            first = reader.read(4096)
            sizes.append(len(first))
            digest = hashlib.sha256(first)
            while view := reader.read(100_000):
                sizes.append(len(view))
                digest.update(view)
            assert digest.digest() == hashlib.sha256(BIG).digest()
    assert max(sizes) <= 100_000 and sum(sizes) == len(BIG)


def test_unpacked_sparse_file_keeps_its_holes(tmp_path: Path) -> None:
    tar = require_tool("tar")
    from kanipy.fs.rootfs import Rootfs
    from kanipy.fs.unpack import unpack_layer

    src = tmp_path / "src"
    src.mkdir()
    with open(src / "lastlog", "wb") as f:
        f.truncate(64 << 20)
        f.seek(40 << 20)
        f.write(b"entry")
    layer = tmp_path / "layer.tar.gz"
    subprocess.run([tar, "--format=posix", "--sparse", "-czf", str(layer), "-C", str(src),
                    "lastlog"], check=True)
    rootfs = Rootfs(tmp_path / "root")
    rootfs.path.mkdir()
    with open(layer, "rb") as f:
        unpack_layer(rootfs, f, layer_name="sparse")
    out = rootfs.path / "lastlog"
    assert out.read_bytes() == (src / "lastlog").read_bytes()
    assert os.lstat(out).st_blocks * 512 < 1 << 20  # still holes, not 64 MB of zeros


@pytest.mark.parametrize(("raw", "value"), [
    (b"0000644\0", 0o644), (b"  644 \0\0", 0o644), (b"\0\0\0\0\0\0\0\0", 0),
    (b"        ", 0), (b"12\0junk!", 0o12), (b"12\0 \0 \0 ", 0o12),
    (b"\x80\0\0\0\0\x2d\xc6\xc0", 3_000_000), (b"\xff" * 8, -1)])
def test_numeric_fields_read_as_gnu_tar_reads_them(raw: bytes, value: int) -> None:
    # The one-call path for plain octal and the full one (base-256, text after
    # a NUL) must agree on every field either accepts.
    assert tarreader._number(raw) == value


def test_numeric_field_that_is_not_a_number_is_refused() -> None:
    with pytest.raises(ValueError):
        tarreader._number(b"12 34\0\0\0")
