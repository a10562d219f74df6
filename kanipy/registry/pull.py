"""Pulling an image: manifest (through an index if need be), config and layers into a BlobStore.

Platform selection follows the OCI image index spec: the first entry whose
``platform`` matches the requested os/architecture/variant wins. Docker Hub
images may come from mirrors (``--registry-mirror``), tried in order, with
docker.io itself as the last resort. Every blob is verified as it streams; the
manifest and config bytes are kept exactly as received.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from kanipy.errors import IntegrityError, NotFoundError, RegistryError
from kanipy.oci import mediatypes
from kanipy.oci.blobstore import BlobStore
from kanipy.oci.descriptor import Descriptor, Platform
from kanipy.oci.digest import Digest
from kanipy.reference import DOCKER_HUB, Reference, registry_of
from kanipy.registry.progress import ProgressCallback

if TYPE_CHECKING:
    from kanipy.registry.client import Manifest, RegistryClient

log = logging.getLogger(__name__)

LayerCallback = Callable[[Descriptor], None]


@dataclass(frozen=True)
class PulledImage:
    """A pulled image: every blob it names is in the store; raw bytes are the truth."""

    reference: Reference  # as asked for, pinned to the manifest digest
    source: Reference  # where it actually came from (a mirror, or the registry itself)
    manifest_raw: bytes
    manifest_media_type: str
    manifest_digest: Digest
    config_raw: bytes
    config: Descriptor
    layers: tuple[Descriptor, ...]
    index_digest: Digest | None = None
    platform: Platform | None = None

    @property
    def blobs(self) -> tuple[Descriptor, ...]:
        return (self.config, *self.layers)


def pull_image(client: RegistryClient, ref: Reference, platform: Platform, store: BlobStore,
               on_progress: ProgressCallback | None = None,
               on_layer: LayerCallback | None = None) -> PulledImage:
    """Pull ``ref`` for ``platform`` into ``store``, trying Docker Hub mirrors first.

    ``on_layer`` is called with each layer's descriptor, in image order, as soon
    as that layer (and every one before it) is in the store, while later layers
    still download: the build unpacks layer N while N+1 arrives.
    """
    sources = [ref]
    if ref.registry == DOCKER_HUB:
        sources = [replace(ref, registry=registry_of(m)) for m in client.options.mirrors] + [ref]
    for i, source in enumerate(sources):
        try:
            pulled = _pull_from(client, source, platform, store, on_progress, on_layer)
        except (RegistryError, IntegrityError) as exc:
            if i == len(sources) - 1 or isinstance(exc, IntegrityError):
                raise
            log.warning("mirror %s could not serve %s (%s); trying the next source",
                        source.registry, ref, exc)
            continue
        return replace(pulled, reference=ref.with_digest(pulled.index_digest
                                                         or pulled.manifest_digest))
    raise AssertionError("unreachable")


def _pull_from(client: RegistryClient, ref: Reference, platform: Platform, store: BlobStore,
               on_progress: ProgressCallback | None,
               on_layer: LayerCallback | None = None) -> PulledImage:
    top = client.get_manifest(ref)
    index_digest: Digest | None = None
    manifest = top
    chosen: Platform | None = None
    if top.is_index:
        index_digest = top.digest
        entry = select_platform(top, platform, ref)
        chosen = entry.platform
        log.debug("%s: %s selected for %s", ref, entry.digest, platform)
        manifest = client.get_manifest(ref.with_digest(entry.digest))
        if manifest.is_index:
            raise RegistryError(f"{ref}: the index entry for {platform} is itself an index; "
                                "nested indexes are not supported", registry=ref.registry)
        store.put_bytes(top.raw)
    config, layers = parse_manifest(manifest, ref)
    store.put_bytes(manifest.raw)

    descriptors = [config, *layers]
    workers = max(1, min(client.options.concurrency, len(descriptors)))
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="kanipy-pull") as pool:
        futures = [pool.submit(client.fetch_blob, ref, d, store, on_progress)
                   for d in descriptors]
        try:
            for i, future in enumerate(futures):
                future.result()
                if i > 0 and on_layer is not None:
                    on_layer(descriptors[i])
        except BaseException:
            for future in futures:
                future.cancel()
            raise
    return PulledImage(
        reference=ref, source=ref, manifest_raw=manifest.raw,
        manifest_media_type=manifest.media_type, manifest_digest=manifest.digest,
        config_raw=store.read_bytes(config.digest), config=config, layers=tuple(layers),
        index_digest=index_digest, platform=chosen,
    )


def select_platform(index: Manifest, platform: Platform, ref: Reference) -> Descriptor:
    """The first index entry serving ``platform``; NotFoundError lists what there is."""
    entries = []
    for item in index.json().get("manifests") or []:
        try:
            entries.append(Descriptor.from_json(item))
        except (KeyError, ValueError, TypeError):
            raise RegistryError(f"{ref}: the index has a malformed entry",
                                registry=ref.registry) from None
    offered = []
    for entry in entries:
        if entry.platform is None or entry.media_type not in (
                mediatypes.MANIFEST_TYPES | mediatypes.INDEX_TYPES | {""}):
            continue
        # Attestation manifests (BuildKit) carry the platform unknown/unknown.
        if entry.platform.os == "unknown":
            continue
        offered.append(str(entry.platform))
        if platform.matches(entry.platform):
            return entry
    have = ", ".join(offered) or "no platform-specific images"
    raise NotFoundError(f"pull from {ref.name} failed: {ref} has no image for {platform}; "
                        f"it has {have}", registry=ref.registry)


def parse_manifest(manifest: Manifest, ref: Reference) -> tuple[Descriptor, list[Descriptor]]:
    """The config and layer descriptors of an image manifest (raw bytes stay the truth)."""
    data = manifest.json()
    try:
        config = Descriptor.from_json(data["config"])
        layers = [Descriptor.from_json(item) for item in data.get("layers") or []]
    except (KeyError, ValueError, TypeError) as exc:
        raise RegistryError(f"the manifest of {ref} is malformed ({exc})",
                            registry=ref.registry) from None
    return config, layers
