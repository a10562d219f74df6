"""Which blobs reach the disk with fsync (issue 14): the per-build store skips it,
a store that outlives the build (``--cache-dir``, an OCI layout output) does not.

The real ``os.fsync`` runs; the test only records which files it was called on.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from kanipy.oci import blobstore
from kanipy.oci.blobstore import BlobStore
from kanipy.oci.layout import write_layout
from tests.oci.conftest import make_image


@pytest.fixture
def synced(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The paths os.fsync was called on from kanipy.oci.blobstore, in order."""
    seen: list[str] = []
    real = os.fsync

    def recording(fd: int) -> None:
        seen.append(os.readlink(f"/proc/self/fd/{fd}"))
        real(fd)

    monkeypatch.setattr(blobstore.os, "fsync", recording)
    return seen


def test_a_durable_store_syncs_each_blob_and_its_directory(
    tmp_path: Path, synced: list[str]
) -> None:
    store = BlobStore(tmp_path / "shared")
    digest = store.put_bytes(b"kept beyond the build\n")
    # The bytes under their temporary name, then the directory holding the new name.
    assert any("/blobs/.tmp/ingest-" in p for p in synced)
    assert str(store.path(digest).parent) in synced


def test_the_per_build_store_writes_blobs_whole_without_fsync(
    tmp_path: Path, synced: list[str]
) -> None:
    store = BlobStore(tmp_path / "build" / "blobs", durable=False)
    data = b"gone with the work directory\n"
    digest = store.put_bytes(data)
    assert synced == []
    assert store.read_bytes(digest) == data
    assert oct(store.path(digest).stat().st_mode & 0o777) == oct(0o644)
    assert list((store.root / "blobs" / ".tmp").iterdir()) == []


def test_an_oci_layout_written_from_the_per_build_store_is_synced(
    tmp_path: Path, synced: list[str]
) -> None:
    store = BlobStore(tmp_path / "build" / "blobs", durable=False)
    image = make_image(store, [{"etc/hello": b"hello\n"}])
    assert synced == []
    out = write_layout(tmp_path / "layout", image, ["v1"])
    manifest = image.manifest()
    # Every blob of the image (layers and config) is hardlinked and synced.
    for desc in [manifest.config, *manifest.layers]:
        linked = out.store.path(desc.digest)
        assert os.path.samefile(linked, store.path(desc.digest))
        assert str(linked) in synced, f"{desc.digest} was linked without fsync"
        assert str(linked.parent) in synced
