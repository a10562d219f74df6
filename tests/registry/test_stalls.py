"""Every registry request is held to the low-speed limit, not only blob downloads (issue 11).

A registry (or a network) that trickles a manifest, the headers of an answer,
or takes an upload a byte at a time never trips the socket's read timeout,
which restarts with each byte. Each case here must end with a RegistryError
(exit 4) that names the registry and says it stalled. The limit is 1 KB per
second here; the proxy sends or reads a byte every 0.1 s. Each call runs in a
thread with a generous bound, so that the old behaviour (waiting for the whole
trickle, minutes) fails the test instead of holding the suite.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from kanipy.errors import RegistryError
from kanipy.oci.blobstore import BlobStore
from kanipy.reference import Reference
from kanipy.registry import RegistryClient, RegistryOptions
from kanipy.registry.push import push
from tests.registry.images import random_image
from tests.registry.servers import FaultProxy
from tests.registry.test_faults import pushed

HANG_BOUND = 60.0


@pytest.fixture
def slow_client(docker_config: Path) -> RegistryClient:
    return RegistryClient(RegistryOptions(retries=0, low_speed_limit=1024, low_speed_time=1.0))


def registry_error_of(call: Callable[[], object]) -> RegistryError:
    """The RegistryError ``call`` raises; fails if it returns or hangs."""
    outcome: dict[str, BaseException | object] = {}

    def target() -> None:
        try:
            outcome["returned"] = call()
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            outcome["raised"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(HANG_BOUND)
    assert not thread.is_alive(), f"still waiting on the registry after {HANG_BOUND:.0f}s"
    assert "raised" in outcome, f"no error: {outcome.get('returned')!r}"
    error = outcome["raised"]
    assert isinstance(error, RegistryError), repr(error)
    return error


def assert_stalled(error: RegistryError, proxy: FaultProxy) -> None:
    assert error.exit_code == 4
    assert f"{proxy.host} stalled" in error.message, error.message
    assert "under the low-speed limit of 1024 bytes per 1s" in error.message, error.message


def test_a_trickled_manifest_fails_at_the_low_speed_limit(
        fault_proxy: FaultProxy, slow_client: RegistryClient, store: BlobStore) -> None:
    ref, _ = pushed(slow_client, fault_proxy, store, "stalls/manifest")
    fault_proxy.inject("GET", "/manifests/v1", "trickle")
    assert_stalled(registry_error_of(lambda: slow_client.get_manifest(ref)), fault_proxy)


def test_trickled_answer_headers_fail_at_the_low_speed_limit(
        fault_proxy: FaultProxy, slow_client: RegistryClient, store: BlobStore) -> None:
    ref, _ = pushed(slow_client, fault_proxy, store, "stalls/headers")
    fault_proxy.inject("GET", "/manifests/v1", "trickle-headers")
    assert_stalled(registry_error_of(lambda: slow_client.get_manifest(ref)), fault_proxy)


def test_a_trickled_lazy_layer_fails_at_the_low_speed_limit(
        fault_proxy: FaultProxy, slow_client: RegistryClient, store: BlobStore) -> None:
    ref, image = pushed(slow_client, fault_proxy, store, "stalls/lazy")
    layer = image.layers[0]
    fault_proxy.inject("GET", f"/blobs/{layer.digest}", "trickle")

    def read_layer() -> bytes:
        with slow_client.open_blob(ref, layer) as stream:
            return stream.read()

    error = registry_error_of(read_layer)
    assert_stalled(error, fault_proxy)
    assert f"blob {layer.digest}" in error.message, error.message


def test_a_trickled_push_permission_check_fails_at_the_low_speed_limit(
        fault_proxy: FaultProxy, slow_client: RegistryClient) -> None:
    ref = Reference.parse(f"{fault_proxy.host}/stalls/check:v1")
    fault_proxy.inject("POST", "/blobs/uploads/", "trickle-headers")
    error = registry_error_of(lambda: slow_client.check_push_permission(ref))
    assert_stalled(error, fault_proxy)


@pytest.mark.parametrize("kind", ["trickle-read", "trickle-headers"])
def test_a_stalled_blob_upload_fails_at_the_low_speed_limit(
        fault_proxy: FaultProxy, slow_client: RegistryClient, store: BlobStore,
        kind: str) -> None:
    # 16 MB: more than the loopback socket buffers hold, so the upload itself waits.
    image = random_image(store, [16_000_000], label=kind)
    ref = Reference.parse(f"{fault_proxy.host}/stalls/upload:v1")
    fault_proxy.inject("PUT", f"digest={image.layers[0].digest}", kind)
    error = registry_error_of(lambda: push(image.stored(), ref, client=slow_client))
    assert_stalled(error, fault_proxy)
    assert fault_proxy.count("PUT", "/manifests/") == 0
