"""StoredImage and validate_image: the invariants every written image must keep."""

from __future__ import annotations

import gzip
import tarfile

import pytest

from kanipy.errors import IntegrityError, ManifestError
from kanipy.oci import mediatypes as mt
from kanipy.oci.blobstore import BlobStore
from kanipy.oci.config import HistoryEntry, ImageConfig
from kanipy.oci.descriptor import Descriptor
from kanipy.oci.digest import Digest
from kanipy.oci.image import StoredImage, store_image, validate_image
from kanipy.oci.manifest import build_index, build_manifest

from .conftest import make_image, make_layer


@pytest.mark.parametrize(
    ("image_format", "compression"),
    [("oci", "gzip"), ("oci", "zstd"), ("oci", "none"), ("docker", "gzip")],
    ids=["oci-gzip", "oci-zstd", "oci-uncompressed", "docker-gzip"],
)
def test_built_images_are_valid(store: BlobStore, image_format: str, compression: str) -> None:
    image = make_image(store, [{"a": b"1"}, {"b/c": b"2"}], image_format, compression)
    validate_image(image)
    want = mt.DOCKER_MANIFEST if image_format == "docker" else mt.OCI_MANIFEST
    assert image.manifest().media_type == want
    # The layer's tar can be read back through open_uncompressed.
    with tarfile.open(fileobj=image.layers()[1].open_uncompressed(), mode="r|") as tar:
        assert [m.name for m in tar] == ["b/c"]


def test_load_from_store_by_digest(store: BlobStore, image: StoredImage) -> None:
    again = StoredImage.load(store, image.digest)
    assert again.manifest() == image.manifest()
    assert again.config() == image.config()
    assert again.config_bytes() == image.config_bytes()
    validate_image(again)


def test_load_refuses_an_index(store: BlobStore, image: StoredImage) -> None:
    index = build_index([image.manifest().descriptor()])
    digest = store.put_bytes(index.raw)
    with pytest.raises(ManifestError, match="index"):
        StoredImage.load(store, digest)


def _with_config(store: BlobStore, image: StoredImage, config: ImageConfig) -> StoredImage:
    """``image``'s layers under another config, bypassing the engine's bookkeeping."""
    raw = config.to_bytes()
    desc = Descriptor(mt.OCI_CONFIG, store.put_bytes(raw), len(raw))
    return StoredImage(store, build_manifest(desc, image.manifest().layers))


def test_diff_ids_count_must_match_layers(store: BlobStore, image: StoredImage) -> None:
    extra = image.config().with_layer(Digest("sha256", "9" * 64), HistoryEntry())
    with pytest.raises(IntegrityError, match="2 layers in the manifest but 3 diff_ids"):
        validate_image(_with_config(store, image, extra))


def test_history_must_match_layers(store: BlobStore, image: StoredImage) -> None:
    doc = image.config().to_json()
    doc["history"][0]["empty_layer"] = True
    with pytest.raises(IntegrityError, match="2 layers but 1 history entries"):
        validate_image(_with_config(store, image, ImageConfig(doc)))


def test_wrong_diff_id_is_found(store: BlobStore, image: StoredImage) -> None:
    doc = image.config().to_json()
    doc["rootfs"]["diff_ids"][1] = "sha256:" + "9" * 64
    broken = _with_config(store, image, ImageConfig(doc))
    validate_image(broken, check_diff_ids=False)  # only the cheap checks
    with pytest.raises(IntegrityError, match="layer 1: uncompressed digest"):
        validate_image(broken)


def test_config_size_must_match(store: BlobStore, image: StoredImage) -> None:
    m = image.manifest()
    bad = Descriptor(m.config.media_type, m.config.digest, m.config.size + 1)
    with pytest.raises(IntegrityError, match="config size"):
        validate_image(StoredImage(store, build_manifest(bad, m.layers)))


def test_corrupt_layer_blob_is_found(store: BlobStore, image: StoredImage) -> None:
    layer = image.manifest().layers[0]
    path = store.path(layer.digest)
    path.write_bytes(gzip.compress(b"not the same layer", mtime=0))
    with pytest.raises(IntegrityError, match="layer 0: blob digest"):
        validate_image(image)


def test_store_image_docker_uses_docker_config_type(store: BlobStore) -> None:
    desc, diff_id = make_layer(store, {"x": b"y"})
    config = ImageConfig.parse(b'{"os":"linux","architecture":"amd64"}')
    config = config.with_layer(diff_id, HistoryEntry(created_by="ADD x /"))
    docker = store_image(store, config, [desc], "docker")
    assert docker.manifest().config.media_type == mt.DOCKER_CONFIG
    validate_image(docker)
