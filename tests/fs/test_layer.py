"""write_layer: a deterministic, streamed layer that other tools read back."""

from __future__ import annotations

import gzip
import hashlib
import os
import socket
import stat
import subprocess
import tarfile
from pathlib import Path

import pytest
import zstandard

from kanipy.fs.layer import write_layer
from kanipy.fs.rootfs import Rootfs
from kanipy.fs.snapshot import Changes, diff, take_snapshot
from kanipy.fs.unpack import unpack_layer
from kanipy.oci import mediatypes
from kanipy.oci.blobstore import BlobStore
from tests.tools import require_root, require_tool

CAP = bytes.fromhex("0100000200200000000000000000000000000000")
LONG = "n" * 120


def make_tree(root: Path) -> None:
    (root / "usr/bin").mkdir(parents=True)
    (root / "usr/bin/ping").write_bytes(b"\x7fELF" * 1000)
    os.chmod(root / "usr/bin/ping", 0o4755)
    os.setxattr(root / "usr/bin/ping", "security.capability", CAP)
    os.link(root / "usr/bin/ping", root / "usr/bin/ping6")
    os.symlink("ping", root / "usr/bin/p")
    (root / "home/u").mkdir(parents=True)
    (root / "home/u" / LONG).write_text("long name")
    (root / "home/u/é").write_text("unicode")
    os.chown(root / "home/u", 1000, 1000)
    os.mkfifo(root / "home/u/fifo")
    os.mknod(root / "home/u/null", stat.S_IFCHR | 0o666, os.makedev(1, 3))
    (root / "big").write_bytes(os.urandom(1 << 20) + b"\0" * (3 << 20))
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(root / "home/u/sock"))
    sock.close()
    for path in sorted(root.rglob("*"), reverse=True):
        os.utime(path, (1_700_000_000, 1_700_000_000), follow_symlinks=False)


def everything(root: Path) -> Changes:
    return diff(take_snapshot(root / "nonexistent"), take_snapshot(root))


@pytest.fixture()
def tree(tmp_path: Path) -> Path:
    require_root()
    root = tmp_path / "tree"
    make_tree(root)
    return root


@pytest.mark.parametrize("compression", ["gzip", "zstd", "none"])
def test_digests_match_the_bytes(tree: Path, tmp_path: Path, compression: str) -> None:
    store = BlobStore(tmp_path / "store")
    layer = write_layer(tree, everything(tree), store, compression=compression,
                        media_type=mediatypes.layer_media_type("oci", compression))
    assert layer is not None
    blob = store.read_bytes(layer.descriptor.digest)
    assert layer.descriptor.size == len(blob)
    assert hashlib.sha256(blob).hexdigest() == layer.descriptor.digest.hex
    raw = {"gzip": gzip.decompress,
           "zstd": lambda b: zstandard.ZstdDecompressor().decompressobj().decompress(b),
           "none": bytes}[compression](blob)
    assert hashlib.sha256(raw).hexdigest() == layer.diff_id.hex
    assert layer.uncompressed_size == len(raw)
    if compression == "gzip":
        assert blob[4:8] == b"\0\0\0\0"  # header mtime 0
        assert not blob[3] & 0x08  # no file name


def test_gnu_tar_reads_it_back(tree: Path, tmp_path: Path) -> None:
    tar = require_tool("tar")
    store = BlobStore(tmp_path / "store")
    layer = write_layer(tree, everything(tree), store, media_type=mediatypes.OCI_LAYER_GZIP)
    assert layer is not None
    listing = subprocess.run(
        [tar, "--xattrs", "--xattrs-include=*", "-tvvzf", str(store.path(layer.descriptor.digest))],
        check=True, capture_output=True, text=True,
    ).stdout
    lines = listing.splitlines()
    names = [line.split()[-1] for line in lines if not line.startswith(" ")]
    assert "home/u/sock" not in listing
    assert layer.entries == 12
    assert any(line.split()[:2] == ["hrwsr-xr-x", "0/0"]
               and line.endswith("usr/bin/ping6 link to usr/bin/ping") for line in lines)
    assert "x: 20 security.capability" in listing
    assert any(line.split()[:2] == ["drwxr-xr-x", "1000/1000"] for line in lines)
    assert f"home/u/{LONG}" in names and "home/u/é" in names
    assert names.index("home/") < names.index("home/u/") < names.index("home/u/fifo")

    out = tmp_path / "gnu-out"
    out.mkdir()
    subprocess.run([tar, "--xattrs", "--xattrs-include=*", "-xpzf",
                    str(store.path(layer.descriptor.digest)), "-C", str(out)], check=True)
    assert os.getxattr(out / "usr/bin/ping", "security.capability") == CAP
    assert (out / "big").read_bytes() == (tree / "big").read_bytes()


def test_round_trip_through_unpack(tree: Path, tmp_path: Path) -> None:
    store = BlobStore(tmp_path / "store")
    layer = write_layer(tree, everything(tree), store, compression="zstd",
                        media_type=mediatypes.OCI_LAYER_ZSTD)
    assert layer is not None
    rootfs = Rootfs(tmp_path / "out")
    rootfs.path.mkdir()
    with store.open(layer.descriptor.digest) as f:
        unpack_layer(rootfs, f, layer_name=str(layer.descriptor.digest))

    def meta(root: Path) -> dict[str, tuple[int, ...]]:
        return {p: (r[0], r[1], r[2], r[3] if not stat.S_ISDIR(r[0]) else 0, r[4] // 10**9)
                for p, r in take_snapshot(root).records.items() if not p.endswith("sock")}

    assert meta(rootfs.path) == meta(tree)
    assert os.getxattr(rootfs.path / "usr/bin/ping", "security.capability") == CAP
    out = os.lstat(rootfs.path / "usr/bin/ping")
    assert out.st_ino == os.lstat(rootfs.path / "usr/bin/ping6").st_ino


def test_same_tree_copied_gives_same_digest(tree: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    subprocess.run(["cp", "-a", str(tree), str(copy)], check=True)
    assert os.lstat(copy / "big").st_ino != os.lstat(tree / "big").st_ino
    store = BlobStore(tmp_path / "store")
    a = write_layer(tree, everything(tree), store, media_type=mediatypes.OCI_LAYER_GZIP)
    b = write_layer(copy, everything(copy), store, media_type=mediatypes.OCI_LAYER_GZIP)
    assert a is not None and b is not None
    assert a.descriptor.digest == b.descriptor.digest and a.diff_id == b.diff_id


def test_whiteouts_and_mtime_clamp(tree: Path, tmp_path: Path) -> None:
    before = take_snapshot(tree)
    os.unlink(tree / "big")
    (tree / "usr/bin/new").write_text("new")
    changes = diff(before, take_snapshot(tree))
    store = BlobStore(tmp_path / "store")
    layer = write_layer(tree, changes, store, media_type=mediatypes.OCI_LAYER_GZIP,
                        mtime_clamp=1_000_000_000)
    assert layer is not None
    with tarfile.open(store.path(layer.descriptor.digest)) as tar:
        members = {m.name: m for m in tar.getmembers()}
    assert list(members) == [".wh.big", "usr", "usr/bin", "usr/bin/new"]  # tarfile drops "/"
    assert members[".wh.big"].size == 0 and members[".wh.big"].isreg()
    assert all(m.mtime <= 1_000_000_000 for m in members.values())
    assert all(m.uname == "" and m.gname == "" for m in members.values())


def test_no_changes_no_layer(tmp_path: Path) -> None:
    store = BlobStore(tmp_path / "store")
    assert write_layer(tmp_path, Changes(), store, media_type=mediatypes.OCI_LAYER_GZIP) is None


@pytest.mark.parametrize(("size", "actual", "kept", "message"), [
    (5, b"12345678", b"12345", "grew while being archived"),
    (0, b"abc", b"", "grew while being archived"),
    (8, b"123", b"123\0\0\0\0\0", "shrank while being archived"),
    (3, b"abc", b"abc", None),
], ids=["grew", "grew-from-empty", "shrank", "unchanged"])
def test_file_changing_while_archived_keeps_the_archive_well_formed(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, size: int, actual: bytes,
        kept: bytes, message: str | None) -> None:
    """A file whose size changed after its header was written is cut or padded to
    the header's size, so the entries after it still read, and it is logged."""
    from kanipy.fs.tarwriter import REGTYPE, TarWriter

    path = tmp_path / "f"
    path.write_bytes(actual)
    out = tmp_path / "out.tar"
    with open(out, "wb") as sink:
        writer = TarWriter(sink)
        writer.add("f", REGTYPE, mode=0o644, uid=0, gid=0, mtime=0, size=size)
        fd = os.open(path, os.O_RDONLY)
        try:
            writer.add_data(fd, size, "/f")
        finally:
            os.close(fd)
        writer.add("after", REGTYPE, mode=0o644, uid=0, gid=0, mtime=0, size=2)
        (tmp_path / "after").write_bytes(b"ok")
        fd = os.open(tmp_path / "after", os.O_RDONLY)
        try:
            writer.add_data(fd, 2, "/after")
        finally:
            os.close(fd)
        writer.close()
    with tarfile.open(out) as tar:
        assert [m.name for m in tar.getmembers()] == ["f", "after"]
        assert tar.extractfile("f").read() == kept  # type: ignore[union-attr]
        assert tar.extractfile("after").read() == b"ok"  # type: ignore[union-attr]
    if message is None:
        assert "while being archived" not in caplog.text
    else:
        assert message in caplog.text
