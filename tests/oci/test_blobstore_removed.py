"""A per-build store removed with its work directory stays removed: a download still
running on an abandoned thread (a signal does not wait for a stalled pull) fails instead
of making the build's directory again, which the user would find left behind."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from kanipy.oci.blobstore import BlobStore


def test_a_write_after_the_store_was_removed_fails_and_makes_nothing(tmp_path: Path) -> None:
    build_dir = tmp_path / "build-1"
    store = BlobStore(build_dir / "blobs", durable=False)
    with pytest.raises(FileNotFoundError):
        with store.writer() as out:  # a download under way when the build is stopped
            out.write(b"half a layer")
            shutil.rmtree(build_dir)  # the stopped build removes its work directory
            out.write(b"the rest")
    with pytest.raises(FileNotFoundError):
        store.put_bytes(b"a later blob")
    assert list(tmp_path.iterdir()) == []


def test_directories_below_the_root_are_made_again(tmp_path: Path) -> None:
    """A shared store (--cache-dir) pruned by hand still takes blobs: only its root is
    never made again."""
    store = BlobStore(tmp_path / "shared")
    shutil.rmtree(tmp_path / "shared" / "blobs")
    digest = store.put_bytes(b"after a prune\n")
    assert store.read_bytes(digest) == b"after a prune\n"
