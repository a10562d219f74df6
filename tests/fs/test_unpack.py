"""unpack_layer: every entry kind, whiteouts across layers, and confinement."""

from __future__ import annotations

import gzip
import io
import os
import stat
import subprocess
import tarfile
from pathlib import Path

import pytest
import zstandard

from kanipy.errors import ConfinementError
from kanipy.fs.rootfs import Rootfs
from kanipy.fs.unpack import unpack_layer
from tests.tools import require_root, require_tool

CAP = bytes.fromhex("0100000200200000000000000000000000000000")  # cap_net_raw+ep
MTIME = 1_600_000_000


def _entry(name: str, kind: bytes = tarfile.REGTYPE, **kw: object) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mtime = MTIME
    info.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
    for key, value in kw.items():
        setattr(info, key, value)
    return info


def make_layer(entries: list[tuple[tarfile.TarInfo, bytes]]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in entries:
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data else None)
    return out.getvalue()


def compress(data: bytes, how: str) -> bytes:
    if how == "gzip":
        return gzip.compress(data)
    if how == "zstd":
        return zstandard.ZstdCompressor().compress(data)
    return data


def lower_layer() -> bytes:
    cap = {"SCHILY.xattr.security.capability": CAP.decode("utf-8", "surrogateescape")}
    return make_layer([
        (_entry("etc/", tarfile.DIRTYPE), b""),
        (_entry("etc/old"), b"old"),
        (_entry("home/", tarfile.DIRTYPE), b""),
        (_entry("home/user/", tarfile.DIRTYPE, uid=1000, gid=1000, mode=0o700), b""),
        (_entry("home/user/notes", uid=1000, gid=1000), b"mine"),
        (_entry("bin/", tarfile.DIRTYPE), b""),
        (_entry("bin/ping", mode=0o4755, pax_headers=cap), b"\x7fELF"),
        (_entry("bin/ping6", tarfile.LNKTYPE, linkname="bin/ping"), b""),
        (_entry("bin/sh", tarfile.SYMTYPE, linkname="/bin/busybox"), b""),
        (_entry("dev/", tarfile.DIRTYPE), b""),
        (_entry("dev/null", tarfile.CHRTYPE, devmajor=1, devminor=3, mode=0o666), b""),
        (_entry("dev/sda", tarfile.BLKTYPE, devmajor=8, devminor=0, mode=0o660), b""),
        (_entry("run/", tarfile.DIRTYPE), b""),
        (_entry("run/fifo", tarfile.FIFOTYPE), b""),
        (_entry("tmp/", tarfile.DIRTYPE, mode=0o1777), b""),
        (_entry("srv/", tarfile.DIRTYPE, mode=0o2775), b""),
        (_entry("gone/", tarfile.DIRTYPE), b""),
        (_entry("gone/a"), b"a"),
        (_entry("opq/", tarfile.DIRTYPE), b""),
        (_entry("opq/lower"), b"lower"),
        (_entry("opq/sub/", tarfile.DIRTYPE), b""),
        (_entry("opq/sub/lower"), b"lower"),
        (_entry("file2dir"), b"was a file"),
        (_entry("dir2file/", tarfile.DIRTYPE), b""),
        (_entry("dir2file/child"), b"child"),
    ])


def upper_layer() -> bytes:
    return make_layer([
        (_entry("etc/.wh.old"), b""),
        (_entry(".wh.gone"), b""),
        # This layer's own entries in opq/ come before its opaque marker: they stay.
        (_entry("opq/new"), b"new"),
        (_entry("opq/sub/", tarfile.DIRTYPE), b""),
        (_entry("opq/sub/new"), b"new"),
        (_entry("opq/.wh..wh..opq"), b""),
        (_entry("file2dir/", tarfile.DIRTYPE), b""),
        (_entry("file2dir/inner"), b"inner"),
        (_entry("dir2file"), b"now a file"),
        (_entry("etc/.wh.never-existed"), b""),
    ])


def files_under(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


@pytest.mark.parametrize("how", ["gzip", "zstd", "none"])
def test_every_entry_kind_and_whiteouts(tmp_path: Path, how: str) -> None:
    require_root()
    rootfs = Rootfs(tmp_path / "root")
    rootfs.path.mkdir()
    stats = unpack_layer(rootfs, io.BytesIO(compress(lower_layer(), how)), layer_name="lower")
    assert stats.entries == 25
    unpack_layer(rootfs, io.BytesIO(compress(upper_layer(), how)), compression=how,
                 layer_name="upper")
    root = rootfs.path

    ping = os.lstat(root / "bin/ping")
    assert stat.S_IMODE(ping.st_mode) == 0o4755
    assert os.getxattr(root / "bin/ping", "security.capability") == CAP
    assert os.lstat(root / "bin/ping6").st_ino == ping.st_ino
    assert os.readlink(root / "bin/sh") == "/bin/busybox"
    null = os.lstat(root / "dev/null")
    assert stat.S_ISCHR(null.st_mode) and os.major(null.st_rdev) == 1
    assert os.minor(null.st_rdev) == 3 and stat.S_IMODE(null.st_mode) == 0o666
    assert stat.S_ISBLK(os.lstat(root / "dev/sda").st_mode)
    assert stat.S_ISFIFO(os.lstat(root / "run/fifo").st_mode)
    assert stat.S_IMODE(os.lstat(root / "tmp").st_mode) == 0o1777
    assert stat.S_IMODE(os.lstat(root / "srv").st_mode) == 0o2775
    user = os.lstat(root / "home/user")
    assert (user.st_uid, user.st_gid, stat.S_IMODE(user.st_mode)) == (1000, 1000, 0o700)
    assert os.lstat(root / "home/user/notes").st_uid == 1000
    # Directory mtimes survive the entries written into them afterwards.
    assert os.lstat(root / "home/user").st_mtime == MTIME
    assert os.lstat(root / "bin").st_mtime == MTIME
    assert os.lstat(root / "bin/sh").st_mtime == MTIME

    present = files_under(root)
    assert "etc/old" not in present and "gone" not in present
    assert {"opq/new", "opq/sub", "opq/sub/new"} <= present
    assert "opq/lower" not in present and "opq/sub/lower" not in present
    assert (root / "file2dir/inner").read_text() == "inner"
    assert (root / "dir2file").read_text() == "now a file"
    assert not any(".wh." in name for name in present)


def test_gnu_tar_layer_with_capabilities(tmp_path: Path) -> None:
    require_root()
    tar = require_tool("tar")
    setcap = require_tool("setcap")
    src = tmp_path / "src"
    (src / "usr/bin").mkdir(parents=True)
    (src / "usr/bin/tool").write_bytes(b"#!/bin/sh\n")
    subprocess.run([setcap, "cap_net_bind_service+ep", str(src / "usr/bin/tool")], check=True)
    want = os.getxattr(src / "usr/bin/tool", "security.capability")
    layer = tmp_path / "layer.tar.gz"
    subprocess.run([tar, "--xattrs", "--xattrs-include=*", "--format=posix", "-czf",
                    str(layer), "-C", str(src), "."], check=True)
    rootfs = Rootfs(tmp_path / "root")
    rootfs.path.mkdir()
    with open(layer, "rb") as f:
        unpack_layer(rootfs, f, layer_name="gnu")
    assert os.getxattr(rootfs.path / "usr/bin/tool", "security.capability") == want


@pytest.fixture()
def jail(tmp_path: Path) -> tuple[Rootfs, Path]:
    """A root at tmp/a/b/root with a sentinel file beside it that must never change."""
    root = tmp_path / "a" / "b" / "root"
    root.mkdir(parents=True)
    sentinel = tmp_path / "a" / "sentinel"
    sentinel.write_text("untouched")
    return Rootfs(root), tmp_path


EVIL = {
    "dotdot": [(_entry("../../sentinel"), b"pwned")],
    "dotdot-inside": [(_entry("x/../../../sentinel"), b"pwned")],
    "absolute": [(_entry("/sentinel"), b"pwned")],
    "symlink-then-write": [
        (_entry("evil", tarfile.SYMTYPE, linkname="../.."), b""),
        (_entry("evil/sentinel"), b"pwned"),
    ],
    "hardlink-outside": [(_entry("link", tarfile.LNKTYPE, linkname="../../sentinel"), b"")],
    "hardlink-through-symlink": [
        (_entry("up", tarfile.SYMTYPE, linkname="../../"), b""),
        (_entry("link", tarfile.LNKTYPE, linkname="up/sentinel"), b""),
    ],
    "whiteout-through-symlink": [
        (_entry("up", tarfile.SYMTYPE, linkname="../.."), b""),
        (_entry("up/.wh.sentinel"), b""),
    ],
}


@pytest.mark.parametrize("case", list(EVIL), ids=list(EVIL))
def test_escapes_are_refused(jail: tuple[Rootfs, Path], case: str) -> None:
    require_root()
    rootfs, outside = jail
    before = files_under(outside)
    with pytest.raises(ConfinementError) as caught:
        unpack_layer(rootfs, io.BytesIO(make_layer(EVIL[case])), layer_name="sha256:evil")
    assert "sha256:evil" in str(caught.value)
    assert (outside / "a" / "sentinel").read_text() == "untouched"
    assert os.lstat(outside / "a" / "sentinel").st_nlink == 1
    after = {p for p in files_under(outside) if not p.startswith("a/b/root/")}
    assert after == before


def test_absolute_symlinked_parent_resolves_inside_root(tmp_path: Path) -> None:
    require_root()
    rootfs = Rootfs(tmp_path / "root")
    rootfs.path.mkdir()
    layer = make_layer([
        (_entry("run/", tarfile.DIRTYPE), b""),
        (_entry("var/", tarfile.DIRTYPE), b""),
        (_entry("var/run", tarfile.SYMTYPE, linkname="/run"), b""),
        (_entry("var/run/app.pid"), b"1"),
    ])
    unpack_layer(rootfs, io.BytesIO(layer), layer_name="l")
    assert (rootfs.path / "run/app.pid").read_text() == "1"


def test_corrupt_layer_is_an_integrity_error(tmp_path: Path) -> None:
    from kanipy.errors import IntegrityError

    rootfs = Rootfs(tmp_path)
    data = gzip.compress(lower_layer())[:200]
    with pytest.raises(IntegrityError, match="layer broken"):
        unpack_layer(rootfs, io.BytesIO(data), layer_name="broken")
