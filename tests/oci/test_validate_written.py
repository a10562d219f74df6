"""validate_image on a just-built image (issue 14): layer blobs this process wrote,
hashing them on the way in, are not read a second time while their files are
unchanged; anything else still is.

The cases write into the blob files behind the store's back, as a disk fault or
another process would; the in-place rewrite that keeps inode, size and mtime is
the one change the store cannot see without reading, and shows which blobs were
trusted.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from kanipy.errors import IntegrityError
from kanipy.oci.blobstore import BlobStore
from kanipy.oci.descriptor import Descriptor
from kanipy.oci.image import StoredImage, validate_image
from kanipy.oci.manifest import build_manifest

from .conftest import make_image


def _flip_in_place(path: Path) -> None:
    """Change one byte in place, then put the modification time back."""
    st = path.stat()
    with open(path, "r+b") as f:
        first = f.read(1)
        f.seek(0)
        f.write(bytes([first[0] ^ 0xFF]))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


@pytest.fixture
def built(tmp_path: Path) -> StoredImage:
    return make_image(BlobStore(tmp_path / "blobs", durable=False),
                      [{"etc/hello": b"hello\n"}, {"etc/bye": b"bye\n"}])


def test_blobs_written_here_are_checked_by_size_not_read_again(built: StoredImage) -> None:
    layer = built.manifest().layers[1]
    assert built.store.written_here(layer.digest) == layer.size
    _flip_in_place(built.store.path(layer.digest))
    validate_image(built, check_diff_ids=False)  # trusted: hashed as it was written


def test_a_blob_changed_since_it_was_written_is_hashed_again(built: StoredImage) -> None:
    path = built.store.path(built.manifest().layers[0].digest)
    st = path.stat()
    data = path.read_bytes()
    path.write_bytes(data[:-1] + bytes([data[-1] ^ 0xFF]))  # same size
    # A rewrite a second later: timestamps have the filesystem's tick, so one
    # within the same tick as the first write would keep the mtime.
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    assert built.store.written_here(built.manifest().layers[0].digest) is None
    with pytest.raises(IntegrityError, match="layer 0: blob digest"):
        validate_image(built, check_diff_ids=False)


def test_a_blob_replaced_by_another_file_is_hashed_again(built: StoredImage) -> None:
    path = built.store.path(built.manifest().layers[0].digest)
    data = bytearray(path.read_bytes())
    data[0] ^= 0xFF
    st = path.stat()
    spare = path.with_name("spare")
    spare.write_bytes(bytes(data))
    os.utime(spare, ns=(st.st_atime_ns, st.st_mtime_ns))
    os.replace(spare, path)  # same size and mtime, another inode
    with pytest.raises(IntegrityError, match="layer 0: blob digest"):
        validate_image(built, check_diff_ids=False)


def test_blobs_another_process_wrote_are_hashed(built: StoredImage) -> None:
    path = built.store.path(built.manifest().layers[1].digest)
    _flip_in_place(path)
    # The same files seen by a store object that did not write them (a --cache-dir
    # filled by an earlier build, an OCI layout read back).
    other = StoredImage(BlobStore(built.store.root), built.manifest())
    with pytest.raises(IntegrityError, match="layer 1: blob digest"):
        validate_image(other, check_diff_ids=False)
    # Checking diff_ids reads every byte whoever wrote them.
    with pytest.raises(IntegrityError, match="layer 1"):
        validate_image(built)


def test_a_descriptor_with_the_wrong_size_is_found_without_reading(
    built: StoredImage,
) -> None:
    m = built.manifest()
    wrong = Descriptor(m.layers[0].media_type, m.layers[0].digest, m.layers[0].size + 1)
    bad = StoredImage(built.store, build_manifest(m.config, [wrong, m.layers[1]]))
    with pytest.raises(IntegrityError, match=r"layer 0: blob size \d+, manifest says"):
        validate_image(bad, check_diff_ids=False)
