"""A proxy between client and registry injects 503s, 429s, dropped connections, flipped bytes."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from kanipy.errors import IntegrityError, RegistryError
from kanipy.oci.blobstore import BlobStore
from kanipy.reference import Reference
from kanipy.registry import RegistryClient, RegistryOptions
from kanipy.registry.pull import pull
from kanipy.registry.push import push
from tests.registry.images import HandmadeImage, random_image
from tests.registry.servers import FaultProxy


@pytest.fixture
def delays(client: RegistryClient) -> list[float]:
    """The backoff delays the client chose (it does not actually wait, to keep tests fast)."""
    seen: list[float] = []
    client.transport.sleep = seen.append
    return seen


def pushed(client: RegistryClient, proxy: FaultProxy, store: BlobStore, repo: str) -> tuple[
        Reference, HandmadeImage]:
    image = random_image(store, [50_000, 70_000], label=repo)
    ref = Reference.parse(f"{proxy.host}/{repo}:v1")
    push(image.stored(), ref, client=client)
    return ref, image


def test_pull_survives_503_429_and_a_dropped_body(
    fault_proxy: FaultProxy, client: RegistryClient, store: BlobStore, tmp_path: Path,
    delays: list[float],
) -> None:
    ref, image = pushed(client, fault_proxy, store, "faults/pull")
    layer = image.layers[1].digest
    fault_proxy.inject("GET", "/manifests/v1", "503", times=2)
    fault_proxy.inject("GET", f"/blobs/{layer}", "429", retry_after=2)
    fault_proxy.inject("GET", f"/blobs/{layer}", "drop")
    other = BlobStore(tmp_path / "other")
    pulled = pull(ref, client=client, store=other)
    assert pulled.manifest().raw == image.manifest_raw
    assert other.read_bytes(layer) == store.read_bytes(layer)
    assert [kind for _, _, kind in fault_proxy.injected] == ["503", "503", "429", "drop"]
    assert any(d >= 2 for d in delays), "Retry-After: 2 was not honoured"


def test_push_survives_503s_and_a_hang_up_by_restarting_the_upload(
    fault_proxy: FaultProxy, client: RegistryClient, store: BlobStore, delays: list[float],
) -> None:
    image = random_image(store, [80_000])
    ref = Reference.parse(f"{fault_proxy.host}/faults/push:v1")
    fault_proxy.inject("PUT", f"digest={image.layers[0].digest}", "503")
    fault_proxy.inject("PUT", f"digest={image.config.digest}", "drop")
    fault_proxy.inject("PUT", "/manifests/v1", "503")
    fault_proxy.inject("HEAD", "/blobs/", "429")
    digest = push(image.stored(), ref, client=client)
    assert digest == image.digest
    assert len(fault_proxy.injected) == 4
    # Each failed upload started again with a new upload session.
    assert fault_proxy.count("POST", "/blobs/uploads/") == 4
    assert client.get_manifest(ref).raw == image.manifest_raw


def test_corrupted_blob_is_caught_and_nothing_stored(
    fault_proxy: FaultProxy, client: RegistryClient, store: BlobStore, tmp_path: Path,
    delays: list[float],
) -> None:
    ref, image = pushed(client, fault_proxy, store, "faults/corrupt")
    layer = image.layers[0].digest
    fault_proxy.inject("GET", f"/blobs/{layer}", "corrupt")
    other = BlobStore(tmp_path / "other")
    with pytest.raises(IntegrityError) as info:
        pull(ref, client=client, store=other)
    assert info.value.exit_code == 5
    assert str(layer) in info.value.message and "digest mismatch" in info.value.message
    assert not other.has(layer)
    # A download of another blob of the image, cancelled by the failure, may
    # still be finishing its own temporary file: it is removed, never kept.
    deadline = time.monotonic() + 5
    while list((other.root / "blobs" / ".tmp").iterdir()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert list((other.root / "blobs" / ".tmp").iterdir()) == []
    assert not other.has(layer)


def test_retries_are_bounded(
    fault_proxy: FaultProxy, docker_config: Path, store: BlobStore, delays: list[float],
) -> None:
    client = RegistryClient(RegistryOptions(retries=2, backoff=0.01))
    client.transport.sleep = delays.append
    ref, _ = pushed(client, fault_proxy, store, "faults/bounded")
    fault_proxy.inject("GET", "/manifests/v1", "503", times=10)
    with pytest.raises(RegistryError) as info:
        client.get_manifest(ref)
    assert info.value.status == 503 and info.value.temporary
    assert "HTTP 503" in info.value.message and "UNAVAILABLE" in info.value.message
    assert fault_proxy.count("GET", "/manifests/v1") == 3


def test_a_trickled_blob_fails_at_the_low_speed_limit(
    fault_proxy: FaultProxy, docker_config: Path, store: BlobStore, tmp_path: Path,
) -> None:
    """A registry sending a byte every 0.1 s never trips the read timeout; the
    low-speed limit (here 1 KB in 1 s) ends the pull with a registry error (exit 4)
    naming the registry and the blob (issue 11)."""
    client = RegistryClient(RegistryOptions(retries=0, low_speed_limit=1024,
                                            low_speed_time=1.0))
    ref, image = pushed(client, fault_proxy, store, "faults/trickle")
    layer = image.layers[0].digest
    fault_proxy.inject("GET", f"/blobs/{layer}", "trickle", retry_after=1)
    with pytest.raises(RegistryError) as info:
        client.fetch_blob(ref, image.layers[0], BlobStore(tmp_path / "fresh"))
    message = info.value.message
    assert info.value.exit_code == 4
    assert f"pull from {ref.name} failed: blob {layer}" in message, message
    assert "under the low-speed limit of 1024 bytes per 1s" in message, message
    assert not BlobStore(tmp_path / "fresh").has(layer)
