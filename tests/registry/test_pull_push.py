"""Push images assembled in the test and pull them back, against a real registry."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from kanipy.errors import IntegrityError, NotFoundError, PlatformNotFoundError
from kanipy.oci import mediatypes
from kanipy.oci.blobstore import BlobStore
from kanipy.oci.descriptor import Descriptor, Platform
from kanipy.oci.digest import Digest
from kanipy.reference import Reference
from kanipy.registry import ProgressEvent, RegistryClient, RegistryOptions
from kanipy.registry.pull import pull
from kanipy.registry.push import push
from tests.fixtures.images import BaseImages
from tests.fixtures.registry import Registry
from tests.registry.images import make_image, random_image
from tests.tools import require_tool


def test_push_then_pull_gives_back_the_same_bytes(
    registry: Registry, client: RegistryClient, store: BlobStore, tmp_path: Path
) -> None:
    image = random_image(store, [2048, 300_000])
    ref = Reference.parse(registry.ref("roundtrip/app:v1"))
    events: list[ProgressEvent] = []
    digest = push(image.stored(), ref, client=client, on_progress=events.append)
    assert digest == image.digest
    assert {e.digest for e in events if e.phase == "done"} == {b.digest for b in image.blobs}

    other = BlobStore(tmp_path / "other")
    pulled = pull(ref, client=client, store=other)
    assert pulled.manifest().raw == image.manifest_raw
    assert pulled.digest == digest
    assert str(pulled.reference) == f"{ref}@{digest}"
    assert pulled.config_bytes() == store.read_bytes(image.config.digest)
    assert list(pulled.manifest().layers) == image.layers
    for blob in image.blobs:
        assert other.read_bytes(blob.digest) == store.read_bytes(blob.digest)

    # Pushing again moves no blob: every HEAD finds it.
    again: list[ProgressEvent] = []
    push(image.stored(), ref, client=client, on_progress=again.append)
    assert {e.phase for e in again} == {"exists"}
    # Pulling again downloads nothing either.
    again.clear()
    pull(ref, client=client, store=other, on_progress=again.append)
    assert {e.phase for e in again} == {"exists"}


def test_skopeo_reads_what_we_pushed(
    registry: Registry, client: RegistryClient, store: BlobStore
) -> None:
    require_tool("skopeo")
    image = make_image(store, [{"etc/hello": b"hello\n"}], docker=True)
    ref = Reference.parse(registry.ref("skopeo/app:docker"))
    push(image.stored(), ref, client=client)
    out = subprocess.run(
        ["skopeo", "inspect", "--raw", "--tls-verify=false", f"docker://{ref}"],
        check=True, capture_output=True).stdout
    assert out == image.manifest_raw
    info = json.loads(subprocess.run(
        ["skopeo", "inspect", "--tls-verify=false", f"docker://{ref}"],
        check=True, capture_output=True).stdout)
    assert info["Digest"] == str(image.digest)
    assert info["Labels"] == {"kanipy.test": "test"}


def test_chunked_upload_when_blob_is_large(
    registry: Registry, docker_config: Path, store: BlobStore, tmp_path: Path
) -> None:
    client = RegistryClient(RegistryOptions(chunk_threshold=1 << 20, chunk_size=1 << 20))
    image = random_image(store, [3 * (1 << 20) + 123])
    ref = Reference.parse(registry.ref("chunked/app:v1"))
    push(image.stored(), ref, client=client)
    pulled = pull(ref, client=client, store=BlobStore(tmp_path / "p"))
    assert pulled.manifest().layers[0].size == image.layers[0].size


@pytest.mark.parametrize("which", ["oci", "docker", "multi"])
def test_pull_base_images(
    base_images: BaseImages, client: RegistryClient, store: BlobStore, which: str
) -> None:
    ref = Reference.parse(getattr(base_images, which))
    pulled = pull(ref, client=client, platform=Platform.parse("linux/amd64"), store=store)
    expected = {"oci": mediatypes.OCI_MANIFEST, "docker": mediatypes.DOCKER_MANIFEST,
                "multi": mediatypes.OCI_MANIFEST}[which]
    assert pulled.manifest().media_type == expected
    config = json.loads(pulled.config_bytes())
    assert config["rootfs"]["diff_ids"] == [str(Digest.of_bytes(base_images.layer_tar))]
    manifest = pulled.manifest()
    assert all(store.has(d.digest) for d in [manifest.config, *manifest.layers])
    assert [layer.diff_id() for layer in pulled.layers()] == [
        Digest.of_bytes(base_images.layer_tar)]


def test_platform_selection_picks_arm64_from_the_index(
    base_images: BaseImages, client: RegistryClient, store: BlobStore
) -> None:
    ref = Reference.parse(base_images.multi)
    arm = pull(ref, client=client, platform=Platform.parse("linux/arm64"), store=store)
    amd = pull(ref, client=client, platform=Platform.parse("linux/amd64"), store=store)
    assert json.loads(arm.config_bytes())["architecture"] == "arm64"
    assert json.loads(amd.config_bytes())["architecture"] == "amd64"
    assert arm.index is not None and amd.index is not None
    assert arm.index.digest == amd.index.digest != arm.digest
    assert arm.reference.digest == arm.index.digest
    assert arm.platform == Platform("linux", "arm64", "v8")


def test_platform_missing_from_index_lists_what_exists(
    base_images: BaseImages, client: RegistryClient, store: BlobStore
) -> None:
    # The platform selection of kanipy.oci (exit 2, a usage problem), not a registry error.
    with pytest.raises(PlatformNotFoundError) as info:
        pull(Reference.parse(base_images.multi), client=client,
             platform=Platform.parse("linux/s390x"), store=store)
    assert info.value.exit_code == 2
    assert f"{base_images.multi} has no image for linux/s390x" in info.value.message
    assert "linux/amd64, linux/arm64/v8" in info.value.message
    assert "--custom-platform" in info.value.message
    assert "FROM --platform" in info.value.message


def test_unknown_tag_and_repository_say_what_is_missing(
    registry: Registry, base_images: BaseImages, client: RegistryClient, store: BlobStore
) -> None:
    with pytest.raises(NotFoundError) as info:
        pull(Reference.parse(registry.ref("kanipy-test/busybox:nope")), client=client,
             store=store)
    assert info.value.exit_code == 4
    assert "tag 'nope' in " in info.value.message and "not found" in info.value.message
    assert info.value.code == "MANIFEST_UNKNOWN"
    with pytest.raises(NotFoundError) as info:
        pull(Reference.parse(registry.ref("no/such/repo:v1")), client=client, store=store)
    assert info.value.code in ("NAME_UNKNOWN", "MANIFEST_UNKNOWN")
    assert registry.host in info.value.message


def test_pull_by_digest_checks_the_digest(
    base_images: BaseImages, client: RegistryClient, store: BlobStore
) -> None:
    first = pull(Reference.parse(base_images.oci), client=client, store=store)
    by_digest = Reference.parse(base_images.oci).with_digest(first.digest)
    assert client.get_manifest(by_digest).raw == first.manifest().raw


def test_cross_repository_mount_then_fallback_when_refused(
    registry: Registry, client: RegistryClient, store: BlobStore, fault_proxy: object
) -> None:
    from tests.registry.servers import FaultProxy

    assert isinstance(fault_proxy, FaultProxy)
    image = random_image(store, [5000, 6000], label="mount")
    source = Reference.parse(registry.ref("mount/source:v1"))
    push(image.stored(), source, client=client)

    dest = Reference.parse(f"{fault_proxy.host}/mount/dest:v1")
    mounts = {b.digest: "mount/source" for b in image.blobs}
    push(image.stored(), dest, client=client, mount_sources=mounts)
    assert fault_proxy.count("POST", "mount=") == 3
    assert fault_proxy.count("PUT", "/blobs/uploads/") == 0

    # A refused mount (here: the source does not exist) falls back to an upload.
    dest2 = Reference.parse(f"{fault_proxy.host}/mount/dest2:v1")
    push(image.stored(), dest2, client=client,
         mount_sources={b.digest: "mount/nowhere" for b in image.blobs})
    assert fault_proxy.count("PUT", "/blobs/uploads/") == 3
    assert client.get_manifest(dest2).raw == image.manifest_raw


def test_push_names_a_blob_missing_everywhere(
    registry: Registry, client: RegistryClient, store: BlobStore
) -> None:
    image = random_image(store, [100])
    missing = BlobStore(store.root.parent / "empty")
    ref = Reference.parse(registry.ref("missing/app:v1"))
    with pytest.raises(Exception) as info:
        push(image.stored(missing), ref, client=client)
    assert "neither in the registry nor in the local blob store" in str(info.value)
    assert not isinstance(info.value, IntegrityError)


def test_check_push_permission_on_open_registry(
    registry: Registry, client: RegistryClient
) -> None:
    client.check_push_permission(Reference.parse(registry.ref("perm/app:v1")))


def test_docker_hub_mirrors_are_tried_in_order(
    registry: Registry, base_images: BaseImages, docker_config: Path, store: BlobStore
) -> None:
    from tests.fixtures.registry import free_port

    dead = f"127.0.0.1:{free_port()}"
    client = RegistryClient(RegistryOptions(mirrors=(dead, f"http://{registry.host}"),
                                            retries=0))
    # docker.io/kanipy-test/busybox is served by the second mirror; docker.io is never asked.
    pulled = pull(Reference.parse("kanipy-test/busybox:oci"), client=client, store=store)
    assert pulled.source.registry == registry.host
    assert str(pulled.reference).startswith("docker.io/kanipy-test/busybox:oci@sha256:")


def test_layers_are_handed_on_in_order_as_they_arrive(
    registry: Registry, client: RegistryClient, store: BlobStore, tmp_path: Path
) -> None:
    image = random_image(store, [300_000, 1000, 50_000, 10])
    ref = Reference.parse(registry.ref("ordered/app:v1"))
    push(image.stored(), ref, client=client)

    other = BlobStore(tmp_path / "other")
    seen: list[Digest] = []

    def on_layer(desc: Descriptor) -> None:
        # Each layer is complete and verified in the store when it is handed on.
        assert other.read_bytes(desc.digest) == store.read_bytes(desc.digest)
        seen.append(desc.digest)

    pull(ref, client=client, store=other, on_layer=on_layer)
    assert seen == [layer.digest for layer in image.layers]
