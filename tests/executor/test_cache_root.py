"""Lazy roots of the layer cache: a part filled for a COPY, the rest later, in order.

Layers are real gzip'd tars in a blob store; the root is a real directory. What is
checked is what a later step would find on disk.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import tarfile
from pathlib import Path

import pytest

from kanipy.executor.cache_root import CachedLayerLost, PendingLayer, PendingRoot
from kanipy.fs.rootfs import Rootfs
from kanipy.oci import mediatypes
from kanipy.oci.blobstore import BlobStore
from kanipy.oci.descriptor import Descriptor
from kanipy.oci.digest import Digest

Entry = tuple[str, str, str]  # (name, kind, data or link target)


def _layer(store: BlobStore, entries: list[Entry], *, lie: bool = False,
           cached: bool = False) -> PendingLayer:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, kind, data in entries:
            info = tarfile.TarInfo(name)
            info.mtime = 1_000_000
            if kind == "dir":
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
            elif kind == "file":
                info.size, info.mode = len(data), 0o644
                tar.addfile(info, io.BytesIO(data.encode()))
            elif kind == "symlink":
                info.type, info.linkname = tarfile.SYMTYPE, data
                tar.addfile(info)
            elif kind == "hardlink":
                info.type, info.linkname = tarfile.LNKTYPE, data
                tar.addfile(info)
    blob = gzip.compress(raw.getvalue(), mtime=0)
    digest = store.put_bytes(blob)
    diff_id = "sha256:" + hashlib.sha256(raw.getvalue() + (b"x" if lie else b"")).hexdigest()
    desc = Descriptor(mediatypes.OCI_LAYER_GZIP, digest, len(blob))
    return PendingLayer(desc, lambda: None, Digest.parse(diff_id), cached=cached)


def _root(tmp_path: Path, layers: list[list[Entry]]) -> tuple[PendingRoot, Path]:
    store = BlobStore(tmp_path / "blobs")
    root = tmp_path / "root"
    root.mkdir()
    pending = PendingRoot(Rootfs(root), store)
    for entries in layers:
        pending.add(_layer(store, entries))
    return pending, root


LOWER: list[Entry] = [
    ("etc", "dir", ""), ("etc/passwd", "file", "root:x:0:0::/root:/bin/sh\n"),
    ("srv", "dir", ""), ("srv/app", "dir", ""), ("srv/app/old.txt", "file", "old\n"),
    ("opt", "dir", ""), ("opt/big", "dir", ""), ("opt/big/f1", "file", "one\n"),
    ("opt/big/h", "hardlink", "opt/big/f1"),
]
UPPER: list[Entry] = [
    ("srv/app/.wh.old.txt", "file", ""), ("opt/big/f2", "file", "two\n"),
]


def test_a_copy_fills_only_its_paths_and_the_rest_comes_later_around_it(
        tmp_path: Path) -> None:
    pending, root = _root(tmp_path, [LOWER, UPPER])
    pending.fill(["srv/app", "etc/passwd", "etc/group"])
    assert (root / "etc/passwd").read_text().startswith("root:")
    assert (root / "srv/app").is_dir() and not (root / "srv/app/old.txt").exists()
    assert not (root / "opt").exists()  # not needed by the COPY: still pending
    assert pending.partial_fills == 1 and pending.whole_fills == 0

    (root / "srv/app/new.txt").write_text("copied\n")  # what the COPY wrote
    pending.fill()  # a RUN comes: everything else, in layer order
    assert (root / "srv/app/new.txt").read_text() == "copied\n"
    assert not (root / "srv/app/old.txt").exists()
    assert (root / "opt/big/f2").read_text() == "two\n"
    assert os.stat(root / "opt/big/h").st_ino == os.stat(root / "opt/big/f1").st_ino
    assert pending.empty


@pytest.mark.parametrize("upper", [
    [("srv/app/link", "symlink", "/opt")],  # a COPY through it writes elsewhere
    [(".wh.srv", "file", "")],  # hides the parent of the destination
    [("srv/app/h", "hardlink", "opt/big/f1")],  # a hardlink across the boundary
], ids=["symlink", "whiteout-above", "hardlink-across"])
def test_what_cannot_be_filled_apart_fills_the_whole_root(
        tmp_path: Path, upper: list[Entry]) -> None:
    pending, root = _root(tmp_path, [LOWER, upper])
    pending.fill(["srv/app"])
    assert (root / "opt/big/f1").read_text() == "one\n"
    assert pending.whole_fills == 1 and pending.empty


def test_a_cached_layer_that_is_not_its_diff_id_is_lost(tmp_path: Path) -> None:
    store = BlobStore(tmp_path / "blobs")
    (tmp_path / "root").mkdir()
    pending = PendingRoot(Rootfs(tmp_path / "root"), store)
    pending.add(_layer(store, LOWER, lie=True, cached=True))
    with pytest.raises(CachedLayerLost, match="diff_id"):
        pending.fill()


def test_a_cached_layer_that_cannot_be_fetched_is_lost(tmp_path: Path) -> None:
    store = BlobStore(tmp_path / "blobs")
    (tmp_path / "root").mkdir()
    pending = PendingRoot(Rootfs(tmp_path / "root"), store)
    layer = _layer(store, LOWER, cached=True)
    store.path(layer.descriptor.digest).unlink()

    def gone() -> None:
        raise OSError("the registry lost it")
    layer.fetch = gone
    pending.add(layer)
    with pytest.raises(CachedLayerLost, match="lost it"):
        pending.fill(["srv/app"])
