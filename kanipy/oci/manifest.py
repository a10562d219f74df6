"""Image manifests and indexes: parse them from raw bytes, build canonical new ones.

Covers the OCI image manifest and image index (OCI image spec, "Image Manifest",
"Image Index") and Docker's image manifest v2 schema 2 and manifest list. The
parsed forms keep the exact bytes they came from; their digest is over those
bytes (DESIGN decision 6), never over a re-serialisation.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from kanipy.errors import ManifestError, PlatformNotFoundError
from kanipy.fieldwise import Fieldwise
from kanipy.oci import mediatypes as mt
from kanipy.oci.descriptor import Descriptor, Platform
from kanipy.oci.digest import Digest

log = logging.getLogger(__name__)

# Content-Type values some registries and static file servers answer with;
# they say nothing about the document, so its own mediaType decides.
_GENERIC_TYPES = frozenset({"", "application/json", "application/octet-stream", "text/plain"})


@dataclass(frozen=True, repr=False, eq=False)
class Manifest(Fieldwise):
    """One image: a config descriptor and its layers, with the bytes they came from."""

    raw: bytes
    digest: Digest
    media_type: str
    config: Descriptor
    layers: tuple[Descriptor, ...]
    annotations: dict[str, str] = field(default_factory=dict, compare=False, hash=False)

    @property
    def size(self) -> int:
        return len(self.raw)

    def descriptor(
        self, platform: Platform | None = None, annotations: Mapping[str, str] | None = None
    ) -> Descriptor:
        """The descriptor that points at this manifest (for an index or an index.json)."""
        return Descriptor(
            self.media_type, self.digest, self.size,
            annotations=dict(annotations) if annotations else None, platform=platform,
        )


@dataclass(frozen=True, repr=False, eq=False)
class Index(Fieldwise):
    """A multi-platform image: an OCI image index or a Docker manifest list."""

    raw: bytes
    digest: Digest
    media_type: str
    manifests: tuple[Descriptor, ...]
    annotations: dict[str, str] = field(default_factory=dict, compare=False, hash=False)

    @property
    def size(self) -> int:
        return len(self.raw)

    def descriptor(self, annotations: Mapping[str, str] | None = None) -> Descriptor:
        return Descriptor(
            self.media_type, self.digest, self.size,
            annotations=dict(annotations) if annotations else None,
        )

    def platforms(self) -> list[Platform]:
        """The platforms of the image entries, in index order (attestations left out)."""
        return [d.platform for d in self._image_entries() if d.platform is not None]

    def select(self, platform: Platform, name: str = "the image") -> Descriptor:
        """The first entry whose platform is exactly ``platform``, both normalized.

        This is the one platform selection in kanipy (registry pulls and OCI
        layouts alike), Docker's: os and architecture must be equal, and the
        variant too once containerd's normalization has filled in the implied
        ones (arm means arm/v7, arm64 means arm64/v8). Raises
        PlatformNotFoundError naming ``name`` and the platforms the index has.
        """
        want = platform.normalized()
        for entry in self._image_entries():
            if entry.platform is not None and want.matches(entry.platform):
                return entry
        have = ", ".join(dict.fromkeys(str(p) for p in self.platforms())) or "none"
        raise PlatformNotFoundError(
            f"{name} has no image for {want}; it has {have}. Choose one of those with "
            "--custom-platform, or FROM --platform=... in the Dockerfile",
            [str(p) for p in self.platforms()],
        )

    def _image_entries(self) -> list[Descriptor]:
        # BuildKit puts attestation manifests into indexes with platform
        # unknown/unknown and this annotation; they are not runnable images.
        # Entries of other media types (artifacts, signatures) are not images either.
        return [
            d for d in self.manifests
            if (d.annotations or {}).get("vnd.docker.reference.type") != "attestation-manifest"
            and (d.platform is None or d.platform.os != "unknown")
            and d.media_type in _IMAGE_ENTRY_TYPES
        ]


# OCI image spec, "Image Index": mediaType of an entry is required, but old
# writers left it out; such entries are taken to be manifests.
_IMAGE_ENTRY_TYPES = mt.MANIFEST_TYPES | mt.INDEX_TYPES | {""}


def _descriptor(data: Any, what: str) -> Descriptor:
    if not isinstance(data, dict):
        raise ManifestError(f"invalid manifest: {what} is not an object")
    try:
        return Descriptor.from_json(data)
    except (KeyError, ValueError, TypeError) as exc:
        raise ManifestError(f"invalid manifest: {what}: {exc}") from exc


def _decide_media_type(doc: dict[str, Any], given: str | None) -> str:
    """The document's own ``mediaType`` is hashed with it, so it wins over a header."""
    given = (given or "").split(";")[0].strip()
    own = doc.get("mediaType")
    schema1 = (mt.DOCKER_MANIFEST_V1, mt.DOCKER_MANIFEST_V1_SIGNED)
    if doc.get("schemaVersion") == 1 or given in schema1 or own in schema1:
        raise ManifestError(
            "the image uses Docker image manifest schema 1, which kanipy does not support "
            "(it was deprecated in 2017 and registries are dropping it); re-push the image "
            "in Docker schema 2 or OCI format, e.g. with `skopeo copy --format oci` or a "
            "recent `docker push`"
        )
    if isinstance(own, str) and own:
        if given and given not in _GENERIC_TYPES and given != own:
            log.debug("manifest Content-Type %s differs from its mediaType %s", given, own)
        return own
    if given and given not in _GENERIC_TYPES:
        return given
    # OCI image spec: mediaType SHOULD be present but was optional before 1.0.2;
    # its structure tells an index from a manifest.
    if "manifests" in doc:
        return mt.OCI_INDEX
    if "config" in doc and "layers" in doc:
        return mt.OCI_MANIFEST
    raise ManifestError("invalid manifest: no mediaType and neither layers nor manifests")


def parse_manifest(raw: bytes, media_type: str | None = None) -> Manifest | Index:
    """Parse a manifest or index; ``media_type`` is the Content-Type it arrived with, if any."""
    try:
        doc = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ManifestError(f"invalid manifest: not JSON ({exc})") from exc
    if not isinstance(doc, dict):
        raise ManifestError("invalid manifest: not a JSON object")
    kind = _decide_media_type(doc, media_type)
    if doc.get("schemaVersion") != 2:
        raise ManifestError(
            f"invalid manifest: schemaVersion {doc.get('schemaVersion')!r}, expected 2"
        )
    digest = Digest.of_bytes(raw)
    annotations = doc.get("annotations") or {}
    if kind in mt.INDEX_TYPES:
        entries = doc.get("manifests")
        if not isinstance(entries, list):
            raise ManifestError("invalid index: manifests is not a list")
        return Index(
            raw, digest, kind,
            tuple(_descriptor(e, f"manifests[{i}]") for i, e in enumerate(entries)),
            annotations,
        )
    if kind in mt.MANIFEST_TYPES:
        layers = doc.get("layers")
        if not isinstance(layers, list):
            raise ManifestError("invalid manifest: layers is not a list")
        return Manifest(
            raw, digest, kind,
            _descriptor(doc.get("config"), "config"),
            tuple(_descriptor(entry, f"layers[{i}]") for i, entry in enumerate(layers)),
            annotations,
        )
    raise ManifestError(
        f"unsupported manifest media type {kind!r}; kanipy reads OCI manifests and "
        "indexes and Docker schema 2 manifests and manifest lists"
    )


def _canonical(doc: dict[str, Any]) -> bytes:
    # Compact JSON in the field order the specs list them (schemaVersion,
    # mediaType, config, layers, annotations), as go-containerregistry writes:
    # every registry accepts it and the same inputs always give the same bytes.
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode()


def build_manifest(
    config: Descriptor,
    layers: Iterable[Descriptor],
    media_type: str = mt.OCI_MANIFEST,
    annotations: Mapping[str, str] | None = None,
) -> Manifest:
    """A new manifest of ``media_type`` (OCI or Docker schema 2) with canonical bytes."""
    if media_type not in mt.MANIFEST_TYPES:
        raise ValueError(f"build_manifest: {media_type!r} is not a manifest media type")
    if media_type == mt.DOCKER_MANIFEST and config.media_type != mt.DOCKER_CONFIG:
        # Docker schema 2 requires its own config type; Docker Hub refuses others.
        raise ValueError(f"a Docker manifest needs a {mt.DOCKER_CONFIG} config")
    layers = tuple(layers)
    doc: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": media_type,
        "config": config.to_json(),
        "layers": [layer.to_json() for layer in layers],
    }
    if annotations:
        doc["annotations"] = dict(sorted(annotations.items()))
    raw = _canonical(doc)
    return Manifest(raw, Digest.of_bytes(raw), media_type, config, layers, dict(annotations or {}))


def build_index(
    manifests: Iterable[Descriptor],
    media_type: str = mt.OCI_INDEX,
    annotations: Mapping[str, str] | None = None,
) -> Index:
    """A new index (OCI) or manifest list (Docker) over ``manifests``, canonical bytes."""
    if media_type not in mt.INDEX_TYPES:
        raise ValueError(f"build_index: {media_type!r} is not an index media type")
    manifests = tuple(manifests)
    doc: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": media_type,
        "manifests": [m.to_json() for m in manifests],
    }
    if annotations:
        doc["annotations"] = dict(sorted(annotations.items()))
    raw = _canonical(doc)
    return Index(raw, Digest.of_bytes(raw), media_type, manifests, dict(annotations or {}))
