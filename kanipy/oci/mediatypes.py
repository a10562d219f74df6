"""Media type names from the OCI image spec and Docker's image manifest v2 schema 2."""

from __future__ import annotations

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
OCI_LAYER_NONDIST_GZIP = "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
DOCKER_FOREIGN_LAYER_GZIP = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"
# Docker has no zstd media type of its own; BuildKit writes the OCI one into
# Docker manifests, and so do we.
DOCKER_LAYER_ZSTD = OCI_LAYER_ZSTD
# Schema 1 is long deprecated; recognised only to say so clearly.
DOCKER_MANIFEST_V1_SIGNED = "application/vnd.docker.distribution.manifest.v1+prettyjws"
DOCKER_MANIFEST_V1 = "application/vnd.docker.distribution.manifest.v1+json"

INDEX_TYPES = frozenset({OCI_INDEX, DOCKER_MANIFEST_LIST})
MANIFEST_TYPES = frozenset({OCI_MANIFEST, DOCKER_MANIFEST})

# Every manifest type a pull accepts, in the order sent in the Accept header.
ACCEPT_MANIFESTS = (
    OCI_INDEX,
    DOCKER_MANIFEST_LIST,
    OCI_MANIFEST,
    DOCKER_MANIFEST,
)


def layer_compression(media_type: str) -> str:
    """``"gzip"``, ``"zstd"`` or ``"none"`` for a layer media type."""
    if media_type.endswith("+zstd") or media_type.endswith(".zstd"):
        return "zstd"
    if media_type.endswith("gzip"):
        return "gzip"
    return "none"


def layer_media_type(image_format: str, compression: str) -> str:
    """The layer media type for ``image_format`` ("oci"/"docker") and a compression."""
    if image_format == "docker":
        if compression == "zstd":
            return DOCKER_LAYER_ZSTD
        if compression == "gzip":
            return DOCKER_LAYER_GZIP
        # Docker has no uncompressed layer type of its own.
        return OCI_LAYER
    return {"gzip": OCI_LAYER_GZIP, "zstd": OCI_LAYER_ZSTD}.get(compression, OCI_LAYER)
