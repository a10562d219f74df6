"""Where layer cache entries live: a registry repository or an OCI layout on disk.

An entry is a small image: a config that carries the step's history entry, the
diff_id of its layer (none for a step that changed nothing) and, under
``kanipy.cache``, the key, the time it was made and the inputs the key was
made of (to explain a later miss). It is tagged by its key and by the step's
identity (which step of which stage), so the entry the same step made last
time can be found when the key misses.

Every read is verified: blobs against their digests, the config against the
key asked for. Problems surface as ``CacheUnavailable``, which the layer cache
turns into a warning; a missing tag is simply ``None``.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from kanipy.errors import IntegrityError, KanipyError, LayoutError, RegistryError
from kanipy.fieldwise import Fieldwise
from kanipy.oci.blobstore import BlobStore
from kanipy.oci.descriptor import Descriptor
from kanipy.oci.digest import Digest
from kanipy.oci.image import Image, StoredImage
from kanipy.oci.layout import read_layout, write_layout
from kanipy.oci.manifest import Manifest
from kanipy.reference import Reference
from kanipy.registry import RegistryClient
from kanipy.registry.push import push, put_manifest, repository_scope
from kanipy.registry.remote import RemoteImage

log = logging.getLogger(__name__)

CACHE_FIELD = "kanipy.cache"


class CacheUnavailable(Exception):
    """The cache could not be read or written; the build goes on without it.

    ``whole_cache``: the repository itself failed (unreachable, denied), not one
    entry, so asking again for the next step would only repeat the wait.
    """

    def __init__(self, message: str, *, whole_cache: bool = False) -> None:
        super().__init__(message)
        self.whole_cache = whole_cache


@dataclass(frozen=True, repr=False, eq=False)
class CacheEntry(Fieldwise):
    """A verified entry: its config document and its layer (in the build's store)."""

    doc: dict[str, Any]
    layer: Descriptor | None
    # Where the layer blob lives remotely, for cross-repository mounts: (registry, repo).
    source: tuple[str, str] | None = None
    # The entry as an image, to fetch its layer from when the layer is needed.
    image: Any = None

    @property
    def meta(self) -> dict[str, Any]:
        return dict(self.doc.get(CACHE_FIELD) or {})


class CacheRepository(Protocol):
    """One place entries are kept."""

    name: str

    def fetch_config(self, tag: str) -> tuple[dict[str, Any], Image] | None:
        """The entry tagged ``tag``: its verified config document and image; None if absent."""
        ...

    def fetch_layer(self, image: Image, layer: Descriptor, store: BlobStore) -> None:
        """Bring ``layer`` of ``image`` into ``store``, verified against its digest."""
        ...

    def has_blob(self, image: Image, layer: Descriptor) -> bool:
        """Whether the repository still holds ``layer`` (before mounting it elsewhere)."""
        ...

    def store(self, image: StoredImage, tags: list[str],
              mount_sources: dict[Digest, str]) -> None:
        """Write ``image`` under each of ``tags``."""
        ...


def _config_doc(raw: bytes, what: str) -> dict[str, Any]:
    try:
        doc = json.loads(raw)
    except ValueError as exc:
        raise CacheUnavailable(f"{what}: the config is not JSON ({exc})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get(CACHE_FIELD), dict):
        raise CacheUnavailable(f"{what} is not a kanipy cache entry")
    return doc


class RegistryCacheRepository:
    """Entries in a registry repository (``--cache-repo registry/repo``)."""

    def __init__(self, client: RegistryClient, repo: Reference) -> None:
        self.client = client
        self.repo = repo
        self.name = repo.name

    def fetch_config(self, tag: str) -> tuple[dict[str, Any], Image] | None:
        ref = self.repo.with_tag(tag)
        try:
            # The cache repository itself, never a mirror: entries live only there.
            manifest = self.client.get_manifest(ref)
            if not isinstance(manifest, Manifest):
                raise CacheUnavailable(f"{ref} is an index, not a cache entry")
            image = RemoteImage(self.client, ref.with_digest(manifest.digest), manifest,
                                source=ref)
        except KanipyError as exc:
            if getattr(exc, "status", None) == 404 or \
                    getattr(exc, "code", None) in ("MANIFEST_UNKNOWN", "NAME_UNKNOWN"):
                return None
            raise CacheUnavailable(str(exc), whole_cache=isinstance(exc, RegistryError)
                                   ) from None
        try:
            raw = image.config_bytes()
        except KanipyError as exc:
            raise CacheUnavailable(str(exc)) from None
        return _config_doc(raw, f"{ref}"), image

    def fetch_layer(self, image: Image, layer: Descriptor, store: BlobStore) -> None:
        if store.has(layer.digest):
            return
        try:
            for candidate in image.layers():
                if candidate.descriptor().digest == layer.digest:
                    with candidate.open_compressed() as stream:
                        store.ingest(stream, expected=layer.digest, size=layer.size,
                                     what=f"cached layer {layer.digest}")
                    return
        except (KanipyError, OSError) as exc:
            raise CacheUnavailable(str(exc)) from None
        raise CacheUnavailable(f"{layer.digest} is not a layer of the entry")

    def has_blob(self, image: Image, layer: Descriptor) -> bool:
        try:
            return self.client.blob_exists(
                self.repo, layer.digest, [repository_scope(self.repo.repository, "pull")])
        except (KanipyError, OSError):
            return False

    def store(self, image: StoredImage, tags: list[str],
              mount_sources: dict[Digest, str]) -> None:
        first = self.repo.with_tag(tags[0])
        push(image, first, client=self.client, mount_sources=mount_sources)
        manifest = image.manifest()
        scopes = [repository_scope(self.repo.repository, "pull,push")]
        for tag in tags[1:]:
            put_manifest(self.client, self.repo.with_tag(tag), manifest.raw,
                         manifest.media_type, scopes)


class LayoutCacheRepository:
    """Entries in an OCI image layout on disk (``--cache-repo oci:PATH``)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.name = f"oci:{path}"

    def fetch_config(self, tag: str) -> tuple[dict[str, Any], Image] | None:
        if not (self.path / "index.json").is_file():
            return None
        try:
            image = read_layout(self.path, tag)
        except LayoutError as exc:
            if "has no image tagged" in str(exc):
                return None
            raise CacheUnavailable(str(exc)) from None
        except (KanipyError, OSError, ValueError) as exc:
            raise CacheUnavailable(str(exc)) from None
        desc = image.manifest().config
        try:
            raw = image.config_bytes()
        except OSError as exc:
            raise CacheUnavailable(f"{self.name} entry {tag}: {exc}") from None
        if Digest.of_bytes(raw) != desc.digest:
            raise CacheUnavailable(f"{self.name} entry {tag}: the config does not match "
                                   f"its digest {desc.digest}")
        return _config_doc(raw, f"{self.name} entry {tag}"), image

    def fetch_layer(self, image: Image, layer: Descriptor, store: BlobStore) -> None:
        if store.has(layer.digest):
            return
        assert isinstance(image, StoredImage)
        try:
            with image.store.open(layer.digest) as stream:
                store.ingest(stream, expected=layer.digest, size=layer.size,
                             what=f"cached layer {layer.digest}")
        except IntegrityError as exc:
            # A blob that does not match its name is removed, so that the entry the
            # step now makes again can put a good one in its place.
            image.store.path(layer.digest).unlink(missing_ok=True)
            raise CacheUnavailable(str(exc)) from None
        except (KanipyError, OSError) as exc:
            raise CacheUnavailable(str(exc)) from None

    def has_blob(self, image: Image, layer: Descriptor) -> bool:
        return isinstance(image, StoredImage) and image.store.has(layer.digest)

    def store(self, image: StoredImage, tags: list[str],
              mount_sources: dict[Digest, str]) -> None:
        write_layout(self.path, image, tags)


__all__ = ["CACHE_FIELD", "CacheEntry", "CacheRepository", "CacheUnavailable",
           "LayoutCacheRepository", "RegistryCacheRepository"]
