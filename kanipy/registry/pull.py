"""Pulling: a reference (and a platform) in, a RemoteImage out.

The reference's manifest is fetched; when it is an index, the one platform
selection of ``kanipy.oci.manifest.Index.select`` chooses the entry (exact
os/architecture/variant, containerd's normalization) and that manifest is
fetched. An image may come from other registries first: Docker Hub's
mirrors (``--registry-mirror``) and any registry's maps (``--registry-map``),
tried in order, with the image's own registry as the last resort unless
``--skip-default-registry-fallback`` forbids it. Given a BlobStore,
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
from kanipy.registry.options import RegistryOptions
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
    require_platform: bool = False,
) -> RemoteImage:
    """The image ``reference`` names for ``platform`` (linux/amd64 by default).

    With ``store``, every blob (and the manifests) is in the store when this
    returns, and ``on_layer`` sees each layer in order as soon as it is there
    (see ``RemoteImage.fetch_all``). Without it, only manifests are fetched.
    A mirror that cannot serve the image is skipped for the next source; a
    digest mismatch is never skipped.

    An index is matched by ``Index.select``; a single-platform manifest has no
    platform of its own, so its config's os/architecture/variant are compared
    with ``platform``. With ``require_platform`` (the platform was asked for:
    ``FROM --platform``, ``--custom-platform``) a mismatch raises
    PlatformNotFoundError before any layer is downloaded, as BuildKit refuses
    it; otherwise it is a warning.
    """
    platform = platform or Platform()
    options = client.options
    mirrors = mirror_sources(reference, options)
    sources = list(mirrors)
    if not (mirrors and options.skip_default_registry_fallback):
        sources.append(reference)
    for i, source in enumerate(sources):
        try:
            image = _resolve(client, source, reference, platform, store, on_progress)
            if store is not None or require_platform:
                # A lazy image stays lazy: the config is fetched only when needed.
                check_platform(image, platform, reference, require_platform)
            if store is not None:
                image.fetch_all(on_layer)
        except (RegistryError, ManifestError, PlatformNotFoundError) as exc:
            if i < len(sources) - 1:
                log.warning("mirror %s could not serve %s (%s); trying the next source",
                            source.name, reference, exc)
                continue
            if source is reference:
                raise
            # --skip-default-registry-fallback: the image's own registry is not asked.
            tried = ", ".join(m.name for m in mirrors)
            raise RegistryError(
                f"pull of {reference} failed: no mirror has it (tried {tried}; the last "
                f"said: {exc}), and --skip-default-registry-fallback forbids pulling from "
                f"{reference.registry}", registry=reference.registry,
                status=getattr(exc, "status", None), code=getattr(exc, "code", None),
            ) from None
        return image
    raise AssertionError("unreachable")


def check_platform(image: RemoteImage, platform: Platform, reference: Reference,
                    required: bool) -> None:
    if image.index is not None:
        return  # chosen by Index.select, which matched the entry's platform exactly
    config = image.config()
    if not (config.os and config.architecture):
        return  # a config that names no platform cannot be checked
    have = Platform(config.os, config.architecture, config.variant).normalized()
    want = platform.normalized()
    if want.matches(have):
        return
    if required:
        raise PlatformNotFoundError(
            f"{reference} is an image for {have} only (one manifest, no index), not "
            f"{want} as asked; use an image built for {want}, or ask for {have} "
            "(FROM --platform, --custom-platform)", [str(have)])
    log.warning("%s is an image for %s only, not %s: building on it as it is", reference,
                have, want)


def mirror_sources(reference: Reference, options: RegistryOptions) -> list[Reference]:
    """Where to look for ``reference`` before its own registry, in order.

    Kaniko's ``--registry-map ORIG=NEW`` entries for the reference's registry,
    then, for Docker Hub images, the ``--registry-mirror`` entries (which
    Kaniko folds into the map). ``NEW`` is ``host[/prefix]``: the image's
    repository is looked up under ``prefix/`` there (Kaniko's
    parseRegistryMapping).
    """
    specs = [new for orig, new in options.registry_maps if orig == reference.registry]
    if reference.registry == DOCKER_HUB:
        specs += options.mirrors
    sources: list[Reference] = []
    for spec in specs:
        host = registry_of(spec)
        rest = spec.split("://", 1)[-1].partition("/")[2].strip("/")
        repository = f"{rest}/{reference.repository}" if rest else reference.repository
        source = replace(reference, registry=host, repository=repository)
        if source not in sources and source != reference:
            sources.append(source)
    return sources


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
