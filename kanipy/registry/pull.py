"""Pulling: a reference (and a platform) in, a RemoteImage out.

The reference's manifest is fetched; when it is an index, the one platform
selection of ``kanipy.oci.manifest.Index.select`` chooses the entry (exact
os/architecture/variant, containerd's normalization) and that manifest is
fetched. Docker Hub images may come from mirrors (``--registry-mirror``),
tried in order, with docker.io itself as the last resort. Given a BlobStore,
every blob is downloaded into it, verified as it streams; without one the
image stays lazy and a layer is downloaded only when it is opened.
"""

from __future__ import annotations

import logging
from dataclasses import replace

from kanipy.errors import ManifestError, PlatformNotFoundError, RegistryError
from kanipy.oci.blobstore import BlobStore
from kanipy.oci.descriptor import Platform
from kanipy.oci.manifest import Index
from kanipy.reference import DOCKER_HUB, Reference, registry_of
from kanipy.registry.client import RegistryClient
from kanipy.registry.progress import ProgressCallback
from kanipy.registry.remote import LayerCallback, RemoteImage

log = logging.getLogger(__name__)


def pull(
    reference: Reference,
    *,
    client: RegistryClient,
    platform: Platform | None = None,
    store: BlobStore | None = None,
    on_progress: ProgressCallback | None = None,
    on_layer: LayerCallback | None = None,
) -> RemoteImage:
    """The image ``reference`` names for ``platform`` (linux/amd64 by default).

    With ``store``, every blob (and the manifests) is in the store when this
    returns, and ``on_layer`` sees each layer in order as soon as it is there
    (see ``RemoteImage.fetch_all``). Without it, only manifests are fetched.
    A mirror that cannot serve the image is skipped for the next source; a
    digest mismatch is never skipped.
    """
    platform = platform or Platform()
    sources = [reference]
    if reference.registry == DOCKER_HUB:
        sources = [replace(reference, registry=registry_of(m))
                   for m in client.options.mirrors] + [reference]
    for i, source in enumerate(sources):
        try:
            image = _resolve(client, source, reference, platform, store, on_progress)
            if store is not None:
                image.fetch_all(on_layer)
        except (RegistryError, ManifestError, PlatformNotFoundError) as exc:
            if i == len(sources) - 1:
                raise
            log.warning("mirror %s could not serve %s (%s); trying the next source",
                        source.registry, reference, exc)
            continue
        return image
    raise AssertionError("unreachable")


def _resolve(client: RegistryClient, source: Reference, reference: Reference,
             platform: Platform, store: BlobStore | None,
             on_progress: ProgressCallback | None) -> RemoteImage:
    """The RemoteImage of ``source`` for ``platform``, through its index if it has one."""
    top = client.get_manifest(source)
    index: Index | None = None
    chosen: Platform | None = None
    if isinstance(top, Index):
        index = top
        entry = index.select(platform, name=str(reference))
        chosen = entry.platform
        log.debug("%s: %s selected for %s", source, entry.digest, platform)
        manifest = client.get_manifest(source.with_digest(entry.digest))
        if isinstance(manifest, Index):
            raise ManifestError(f"{reference}: the index entry for {platform} is itself an "
                                "index; nested indexes are not supported")
    else:
        manifest = top
    if store is not None:
        if index is not None:
            store.put_bytes(index.raw)
        store.put_bytes(manifest.raw)
    pinned = reference.with_digest(index.digest if index is not None else manifest.digest)
    return RemoteImage(client, pinned, manifest, source=source, index=index, platform=chosen,
                       store=store, on_progress=on_progress)
