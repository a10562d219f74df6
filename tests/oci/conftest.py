"""Real images for the tests of kanipy.oci: layers made with tarfile, kept in a BlobStore."""

from __future__ import annotations

import gzip
import io
import tarfile
from pathlib import Path

import pytest
import zstandard

from kanipy.oci import mediatypes as mt
from kanipy.oci.blobstore import BlobStore
from kanipy.oci.config import HistoryEntry, new_config
from kanipy.oci.descriptor import Descriptor, Platform
from kanipy.oci.digest import Digest
from kanipy.oci.image import StoredImage, store_image

DATA = Path(__file__).parent / "data"


def make_layer(
    store: BlobStore, files: dict[str, bytes], compression: str = "gzip"
) -> tuple[Descriptor, Digest]:
    """A layer holding ``files`` (path -> content, mode 0644): its descriptor and diff_id."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, content in sorted(files.items()):
            info = tarfile.TarInfo(name)
            info.size = len(content)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(content))
    plain = buf.getvalue()
    if compression == "gzip":
        blob = gzip.compress(plain, mtime=0)
    elif compression == "zstd":
        blob = zstandard.ZstdCompressor().compress(plain)
    else:
        blob = plain
    digest = store.put_bytes(blob)
    media_type = mt.layer_media_type("oci", compression)
    return Descriptor(media_type, digest, len(blob)), Digest.of_bytes(plain)


def make_image(
    store: BlobStore,
    layers: list[dict[str, bytes]],
    image_format: str = "oci",
    compression: str = "gzip",
) -> StoredImage:
    """An image of ``layers`` built the way the engine will: config changes, then store."""
    config = new_config(Platform("linux", "amd64")).with_metadata(created="2024-01-01T00:00:00Z")
    descriptors = []
    for i, files in enumerate(layers):
        desc, diff_id = make_layer(store, files, compression)
        if image_format == "docker" and compression == "gzip":
            desc = Descriptor(mt.DOCKER_LAYER_GZIP, desc.digest, desc.size)
        descriptors.append(desc)
        config = config.with_layer(diff_id, HistoryEntry(created_by=f"COPY layer{i} /"))
    config = config.with_config(cmd=["/bin/sh"]).with_history(HistoryEntry(created_by="CMD"))
    return store_image(store, config, descriptors, image_format)


@pytest.fixture
def store(tmp_path: Path) -> BlobStore:
    return BlobStore(tmp_path / "store")


@pytest.fixture
def image(store: BlobStore) -> StoredImage:
    """Two gzip layers; the second adds a file and a nested directory."""
    return make_image(
        store,
        [
            {"etc/hello": b"hello\n"},
            {"etc/greeting": b"hi there\n", "srv/app/run.sh": b"#!/bin/sh\necho run\n"},
        ],
    )
