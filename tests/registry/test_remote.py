"""RemoteImage is lazy: the registry is asked for a blob only when it is needed.

Requests are counted by a proxy in front of the real registry.
"""

from __future__ import annotations

import tarfile
from pathlib import Path

import pytest

from kanipy.errors import IntegrityError
from kanipy.oci.blobstore import BlobStore
from kanipy.oci.image import validate_image
from kanipy.reference import Reference
from kanipy.registry import RegistryClient
from kanipy.registry.pull import pull
from kanipy.registry.push import push
from tests.fixtures.registry import Registry
from tests.registry.images import HandmadeImage, make_image
from tests.registry.servers import FaultProxy


@pytest.fixture
def pushed(registry: Registry, client: RegistryClient, store: BlobStore,
           fault_proxy: FaultProxy) -> tuple[Reference, HandmadeImage]:
    """A three-layer image in the registry, named through the counting proxy."""
    image = make_image(store, [{"a": b"first\n"}, {"b": b"second\n"}, {"c": b"third\n"}],
                       label="lazy")
    push(image.stored(), Reference.parse(registry.ref("lazy/app:v1")), client=client)
    return Reference.parse(f"{fault_proxy.host}/lazy/app:v1"), image


def test_a_layer_blob_is_fetched_only_when_opened(
    pushed: tuple[Reference, HandmadeImage], client: RegistryClient, fault_proxy: FaultProxy,
    store: BlobStore,
) -> None:
    ref, made = pushed
    image = pull(ref, client=client)
    assert fault_proxy.count("GET", "/manifests/") == 1
    assert fault_proxy.count("GET", "/blobs/") == 0

    # Listing the layers and their descriptors needs nothing but the manifest.
    layers = image.layers()
    assert [layer.descriptor() for layer in layers] == made.layers
    assert fault_proxy.count("GET", "/blobs/") == 0

    # A diff_id comes from the config: one request for it, and only for it.
    assert layers[1].diff_id() == image.config().diff_ids[1]
    assert fault_proxy.count("GET", f"/blobs/{made.config.digest}") == 1
    assert fault_proxy.count("GET", "/blobs/") == 1

    # Opening one layer fetches that layer and no other.
    second = made.layers[1].digest
    with layers[1].open_compressed() as stream:
        assert stream.read() == store.read_bytes(second)
    assert fault_proxy.count("GET", f"/blobs/{second}") == 1
    assert fault_proxy.count("GET", "/blobs/") == 2

    # Each open is a fresh stream: without a store, a fresh download.
    with tarfile.open(fileobj=layers[1].open_uncompressed(), mode="r|") as tar:
        assert [m.name for m in tar] == ["b"]
    assert fault_proxy.count("GET", f"/blobs/{second}") == 2
    assert fault_proxy.count("GET", f"/blobs/{made.layers[0].digest}") == 0
    assert fault_proxy.count("GET", f"/blobs/{made.layers[2].digest}") == 0


def test_with_a_store_each_blob_is_fetched_once(
    pushed: tuple[Reference, HandmadeImage], client: RegistryClient, fault_proxy: FaultProxy,
    tmp_path: Path,
) -> None:
    ref, made = pushed
    cache = BlobStore(tmp_path / "cache")
    image = pull(ref, client=client, store=cache)
    assert fault_proxy.count("GET", "/blobs/") == 4  # config and three layers, once each
    validate_image(image)  # reads every blob, from the store
    for layer in image.layers():
        layer.open_compressed().close()
    assert fault_proxy.count("GET", "/blobs/") == 4
    assert all(cache.has(d.digest) for d in made.blobs)


def test_a_remote_layer_is_verified_as_it_streams(
    pushed: tuple[Reference, HandmadeImage], client: RegistryClient, fault_proxy: FaultProxy,
) -> None:
    ref, made = pushed
    image = pull(ref, client=client)
    layer = made.layers[0].digest
    fault_proxy.inject("GET", f"/blobs/{layer}", "corrupt")
    with pytest.raises(IntegrityError, match=f"blob {layer}.*digest mismatch"):
        with image.layers()[0].open_compressed() as stream:
            while stream.read(7):
                pass


def test_a_remote_image_pushes_elsewhere_without_a_store(
    pushed: tuple[Reference, HandmadeImage], registry: Registry, client: RegistryClient,
) -> None:
    ref, made = pushed
    copy = Reference.parse(registry.ref("lazy/copy:v1"))
    digest = push(pull(ref, client=client), copy, client=client)
    assert digest == made.digest
    assert client.get_manifest(copy).raw == made.manifest_raw
