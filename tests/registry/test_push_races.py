"""Pushes that meet another writer of the same blobs (issue 13), through the fault proxy.

The CNCF registry, when several clients commit the same blob at once, may
answer a blob HEAD with 500 and refuse a manifest as MANIFEST_BLOB_UNKNOWN or
DIGEST_INVALID although every upload was accepted. A push must then check its
blobs again, upload what is missing and send the manifest again, and report
nothing pushed that the registry does not serve.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from kanipy.errors import RegistryError
from kanipy.oci.blobstore import BlobStore
from kanipy.reference import Reference
from kanipy.registry import RegistryClient, RegistryOptions
from kanipy.registry.push import MANIFEST_BLOB_RETRIES, push
from tests.fixtures.registry import Registry
from tests.registry.images import random_image
from tests.registry.servers import FaultProxy


@pytest.fixture
def delays(client: RegistryClient) -> list[float]:
    seen: list[float] = []
    client.transport.sleep = seen.append
    return seen


def _layer_link(registry: Registry, repo: str, digest: str) -> Path:
    algorithm, hexa = digest.split(":")
    return (registry.directory / "storage" / "docker" / "registry" / "v2" / "repositories"
            / repo / "_layers" / algorithm / hexa / "link")


def test_a_blob_missing_when_the_manifest_goes_up_is_uploaded_again(
    registry: Registry, fault_proxy: FaultProxy, client: RegistryClient, store: BlobStore,
    delays: list[float],
) -> None:
    image = random_image(store, [40_000, 60_000], label="races/missing")
    layer = str(image.layers[1].digest)
    ref = Reference.parse(f"{fault_proxy.host}/races/missing:v1")
    # The proxy says the layer is there, so the first pass skips it; the real
    # registry then refuses the manifest because the layer is not.
    fault_proxy.inject_error("HEAD", f"/blobs/{layer}", 200, "", "")
    digest = push(image.stored(), ref, client=client)
    assert digest == image.digest
    assert fault_proxy.count("PUT", "/manifests/v1") == 2
    assert fault_proxy.count("PUT", f"digest={layer}") == 1
    assert _layer_link(registry, "races/missing", layer).is_file()
    assert client.get_manifest(ref).raw == image.manifest_raw


def test_a_blob_deleted_from_storage_under_the_push_is_uploaded_again(
    registry: Registry, fault_proxy: FaultProxy, client: RegistryClient, store: BlobStore,
    delays: list[float],
) -> None:
    image = random_image(store, [30_000], label="races/deleted")
    layer = str(image.layers[0].digest)
    first = Reference.parse(f"{fault_proxy.host}/races/deleted:v1")
    push(image.stored(), first, client=client)
    # Another writer's commit leaves the repository without its link to the layer
    # between our HEAD (answered before the deletion) and our manifest PUT.
    _layer_link(registry, "races/deleted", layer).unlink()
    fault_proxy.inject_error("HEAD", f"/blobs/{layer}", 200, "", "")
    second = Reference.parse(f"{fault_proxy.host}/races/deleted:v2")
    assert push(image.stored(), second, client=client) == image.digest
    assert fault_proxy.count("PUT", f"digest={layer}") == 2
    assert client.get_manifest(second).raw == image.manifest_raw


@pytest.mark.parametrize(("status", "code", "message"), [
    (400, "MANIFEST_BLOB_UNKNOWN", "blob unknown to registry"),
    (400, "DIGEST_INVALID", "provided digest did not match uploaded content: blob unknown "
                            "to registry"),
    (404, "BLOB_UNKNOWN", "blob unknown to registry"),
], ids=["manifest-blob-unknown", "digest-invalid", "blob-unknown"])
def test_a_race_refusal_is_retried_even_without_push_retries(
    fault_proxy: FaultProxy, docker_config: Path, store: BlobStore, status: int, code: str,
    message: str,
) -> None:
    client = RegistryClient(RegistryOptions(retries=0, backoff=0.01))  # --push-retry 0
    client.transport.sleep = lambda _: None
    image = random_image(store, [20_000], label=f"races/{code}")
    ref = Reference.parse(f"{fault_proxy.host}/races/{code.lower()}:v1")
    fault_proxy.inject_error("PUT", "/manifests/v1", status, code, message)
    assert push(image.stored(), ref, client=client) == image.digest
    assert fault_proxy.count("PUT", "/manifests/v1") == 2
    # Every blob was there: checked again, none uploaded twice.
    assert fault_proxy.count("HEAD", "/blobs/") == 2 * len(image.blobs)
    assert fault_proxy.count("POST", "/blobs/uploads/") == len(image.blobs)


def test_race_retries_are_bounded(
    fault_proxy: FaultProxy, client: RegistryClient, store: BlobStore, delays: list[float],
) -> None:
    image = random_image(store, [10_000], label="races/bounded")
    ref = Reference.parse(f"{fault_proxy.host}/races/bounded:v1")
    fault_proxy.inject_error("PUT", "/manifests/v1", 400, "MANIFEST_BLOB_UNKNOWN",
                             "blob unknown to registry", times=100)
    with pytest.raises(RegistryError) as info:
        push(image.stored(), ref, client=client)
    assert info.value.exit_code == 4
    assert "MANIFEST_BLOB_UNKNOWN" in info.value.message
    assert fault_proxy.count("PUT", "/manifests/v1") == 1 + MANIFEST_BLOB_RETRIES


def test_other_manifest_refusals_are_not_retried(
    fault_proxy: FaultProxy, client: RegistryClient, store: BlobStore, delays: list[float],
) -> None:
    image = random_image(store, [10_000], label="races/invalid")
    ref = Reference.parse(f"{fault_proxy.host}/races/invalid:v1")
    fault_proxy.inject_error("PUT", "/manifests/v1", 400, "MANIFEST_INVALID", "bad")
    with pytest.raises(RegistryError, match="MANIFEST_INVALID"):
        push(image.stored(), ref, client=client)
    assert fault_proxy.count("PUT", "/manifests/v1") == 1


def test_a_500_on_a_blob_head_is_retried(
    fault_proxy: FaultProxy, client: RegistryClient, store: BlobStore, delays: list[float],
) -> None:
    image = random_image(store, [10_000], label="races/head500")
    ref = Reference.parse(f"{fault_proxy.host}/races/head500:v1")
    fault_proxy.inject_error("HEAD", f"/blobs/{image.layers[0].digest}", 500, "UNKNOWN",
                             "unknown error", times=2)
    assert push(image.stored(), ref, client=client) == image.digest
    assert fault_proxy.count("HEAD", f"/blobs/{image.layers[0].digest}") == 3


def test_a_manifest_the_registry_does_not_serve_is_pushed_again(
    fault_proxy: FaultProxy, client: RegistryClient, store: BlobStore, delays: list[float],
) -> None:
    image = random_image(store, [10_000], label="races/unserved")
    ref = Reference.parse(f"{fault_proxy.host}/races/unserved:v1")
    fault_proxy.inject_error("HEAD", f"/manifests/{image.digest}", 404, "MANIFEST_UNKNOWN",
                             "manifest unknown")
    assert push(image.stored(), ref, client=client) == image.digest
    assert fault_proxy.count("PUT", "/manifests/v1") == 2
    assert fault_proxy.count("HEAD", f"/manifests/{image.digest}") == 2


def test_nothing_is_reported_pushed_that_the_registry_never_serves(
    fault_proxy: FaultProxy, client: RegistryClient, store: BlobStore, delays: list[float],
) -> None:
    image = random_image(store, [10_000], label="races/never")
    ref = Reference.parse(f"{fault_proxy.host}/races/never:v1")
    fault_proxy.inject_error("HEAD", f"/manifests/{image.digest}", 404, "MANIFEST_UNKNOWN",
                             "manifest unknown", times=100)
    with pytest.raises(RegistryError, match="does not serve it") as info:
        push(image.stored(), ref, client=client)
    assert info.value.exit_code == 4
