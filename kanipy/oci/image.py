"""Images and layers: read-only Protocols, an image kept in a BlobStore, its invariants.

``Image`` and ``Layer`` follow go-containerregistry's interfaces: every accessor
may do I/O and so may be lazy, and every ``open_*`` returns a fresh stream.
Every writer (registry push, OCI layout, docker archive) takes an ``Image``.
``StoredImage`` is the image whose manifest, config and layers live in a
BlobStore (an OCI layout is one); ``store_image`` makes the built image, one
from a config and layer descriptors; ``kanipy.registry.remote`` has the image a
registry holds. ``validate_image`` checks what must hold before an image is
written anywhere; the build calls it before every output.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass
from typing import BinaryIO, Protocol, cast

from kanipy.errors import IntegrityError, ManifestError
from kanipy.fieldwise import Fieldwise
from kanipy.fs.compression import open_decompressed_file
from kanipy.oci import mediatypes as mt
from kanipy.oci.blobstore import BlobStore
from kanipy.oci.config import ImageConfig
from kanipy.oci.descriptor import Descriptor
from kanipy.oci.digest import Digest
from kanipy.oci.manifest import Index, Manifest, build_manifest, parse_manifest

log = logging.getLogger(__name__)

_CHUNK = 1 << 20


class Layer(Protocol):
    """One layer: its compressed blob and the tar stream inside it."""

    def descriptor(self) -> Descriptor:
        """The manifest's entry for this layer: media type, digest, size."""
        ...

    def diff_id(self) -> Digest:
        """The digest of the uncompressed tar, as listed in the config's rootfs."""
        ...

    def open_compressed(self) -> BinaryIO:
        """A fresh stream of the blob as stored and pushed."""
        ...

    def open_uncompressed(self) -> BinaryIO:
        """A fresh stream of the tar inside the blob."""
        ...


class Image(Protocol):
    """One single-platform image: a manifest, its config, its layers."""

    def manifest(self) -> Manifest: ...

    def config(self) -> ImageConfig: ...

    def config_bytes(self) -> bytes:
        """The exact config bytes the manifest's config digest is over."""
        ...

    def layers(self) -> list[Layer]: ...


def open_decompressed(stream: BinaryIO, media_type: str) -> BinaryIO:
    """Wrap ``stream`` so reads give the tar inside a layer of ``media_type``."""
    return open_decompressed_file(stream, mt.layer_compression(media_type),
                                  f"layer of type {media_type}")


def layer_diff_id(image: Image, index: int) -> Digest:
    """The diff_id of ``image``'s layer ``index``, from its config (which may be fetched).

    Layers ask for their diff_id only when needed, so listing an image's
    layers costs nothing beyond its manifest.
    """
    diff_ids = image.config().diff_ids
    layers = image.manifest().layers
    if len(diff_ids) != len(layers):
        raise IntegrityError(
            f"image {image.manifest().digest}: {len(layers)} layers in the manifest "
            f"but {len(diff_ids)} diff_ids in the config"
        )
    return diff_ids[index]


class BlobSource(Image, Protocol):
    """An image that can open any of its blobs: what ``ImageLayer`` reads through."""

    def open_blob(self, descriptor: Descriptor) -> BinaryIO:
        """A fresh stream of the blob ``descriptor`` names, as stored and pushed."""
        ...


class ImageLayer:
    """Layer ``index`` of an image, read through the image (a BlobStore, a registry).

    Nothing is opened until asked: the diff_id comes from the image's config, the
    bytes from ``image.open_blob``, a fresh stream each time.
    """

    def __init__(self, image: BlobSource, index: int, descriptor: Descriptor) -> None:
        self._image = image
        self._index = index
        self._descriptor = descriptor

    def descriptor(self) -> Descriptor:
        return self._descriptor

    def diff_id(self) -> Digest:
        return layer_diff_id(self._image, self._index)

    def open_compressed(self) -> BinaryIO:
        return self._image.open_blob(self._descriptor)

    def open_uncompressed(self) -> BinaryIO:
        return open_decompressed(self.open_compressed(), self._descriptor.media_type)

    def __repr__(self) -> str:
        return f"ImageLayer({self._descriptor.digest.short})"


class StoredImage:
    """An image whose manifest, config and layer blobs are all in ``store``."""

    def __init__(self, store: BlobStore, manifest: Manifest) -> None:
        self.store = store
        self._manifest = manifest
        self._config: ImageConfig | None = None

    @classmethod
    def load(cls, store: BlobStore, digest: Digest, media_type: str | None = None) -> StoredImage:
        """The image whose manifest blob is ``digest`` in ``store``."""
        parsed = parse_manifest(store.read_bytes(digest), media_type)
        if isinstance(parsed, Index):
            raise ManifestError(
                f"{digest} is an image index, not an image; select a platform first"
            )
        return cls(store, parsed)

    @property
    def digest(self) -> Digest:
        return self._manifest.digest

    def manifest(self) -> Manifest:
        return self._manifest

    def config_bytes(self) -> bytes:
        return self.store.read_bytes(self._manifest.config.digest)

    def config(self) -> ImageConfig:
        if self._config is None:
            self._config = ImageConfig.parse(self.config_bytes())
        return self._config

    def layers(self) -> list[Layer]:
        return [ImageLayer(self, i, desc) for i, desc in enumerate(self._manifest.layers)]

    def open_blob(self, descriptor: Descriptor) -> BinaryIO:
        return self.store.open(descriptor.digest)

    def __repr__(self) -> str:
        return f"StoredImage({self.digest})"


def store_image(
    store: BlobStore,
    config: ImageConfig,
    layers: Iterable[Descriptor],
    image_format: str = "oci",
    annotations: dict[str, str] | None = None,
) -> StoredImage:
    """Put ``config`` and a new manifest over ``layers`` (blobs already in ``store``).

    ``image_format`` is ``"oci"`` or ``"docker"``; it picks the manifest and
    config media types. Layer descriptors are used as given.
    """
    if image_format not in ("oci", "docker"):
        raise ValueError(f"image_format must be 'oci' or 'docker', not {image_format!r}")
    raw_config = config.to_bytes()
    config_digest = store.put_bytes(raw_config)
    config_type = mt.DOCKER_CONFIG if image_format == "docker" else mt.OCI_CONFIG
    manifest_type = mt.DOCKER_MANIFEST if image_format == "docker" else mt.OCI_MANIFEST
    manifest = build_manifest(
        Descriptor(config_type, config_digest, len(raw_config)),
        layers, manifest_type, annotations,
    )
    store.put_bytes(manifest.raw)
    return StoredImage(store, manifest)


@dataclass(frozen=True, repr=False, eq=False)
class Blob(Fieldwise):
    """One blob of an image (its config or a layer) and how to open a fresh stream of it."""

    descriptor: Descriptor
    open: Callable[[], BinaryIO]


def image_blobs(image: Image) -> list[Blob]:
    """The config blob, then each distinct layer blob, of ``image``, in manifest order.

    What a writer (registry push, OCI layout) needs: every blob the manifest
    names, once. Opening one may do I/O (a remote layer downloads); listing
    them does none beyond the manifest and layers accessors.
    """
    manifest = image.manifest()
    blobs = [Blob(manifest.config, lambda: cast(BinaryIO, io.BytesIO(image.config_bytes())))]
    seen = {manifest.config.digest}
    for layer in image.layers():
        desc = layer.descriptor()
        if desc.digest not in seen:
            seen.add(desc.digest)
            blobs.append(Blob(desc, layer.open_compressed))
    return blobs


# Docker schema 2 media types and their OCI equivalents (OCI image spec,
# "Compatibility Matrix"); config bytes are the same document in both.
_DOCKER_TO_OCI = {
    mt.DOCKER_MANIFEST: mt.OCI_MANIFEST,
    mt.DOCKER_CONFIG: mt.OCI_CONFIG,
    mt.DOCKER_LAYER_GZIP: mt.OCI_LAYER_GZIP,
    mt.DOCKER_FOREIGN_LAYER_GZIP: mt.OCI_LAYER_NONDIST_GZIP,
}


def oci_manifest(manifest: Manifest) -> Manifest:
    """``manifest`` with OCI media types: same config and layer blobs, new manifest bytes.

    OCI tools (skopeo's ``oci:`` transport, umoci) only look at OCI manifests
    in a layout. A manifest that is OCI already is returned as it is.
    """
    if manifest.media_type == mt.OCI_MANIFEST:
        return manifest

    def convert(desc: Descriptor) -> Descriptor:
        return Descriptor(
            _DOCKER_TO_OCI.get(desc.media_type, desc.media_type), desc.digest, desc.size,
            desc.annotations, desc.platform, desc.urls,
        )

    return build_manifest(
        convert(manifest.config), [convert(d) for d in manifest.layers],
        mt.OCI_MANIFEST, manifest.annotations,
    )


def _hash_stream(stream: BinaryIO, algorithm: str) -> tuple[Digest, int]:
    hasher = Digest(algorithm, "").new_hasher()
    size = 0
    with stream:
        while chunk := stream.read(_CHUNK):
            hasher.update(chunk)
            size += len(chunk)
    return Digest(algorithm, hasher.hexdigest()), size


def validate_image(image: Image, *, check_diff_ids: bool = True,
                   remote_layers: Collection[Digest] = ()) -> None:
    """Check an image's invariants; raise IntegrityError listing every violation.

    The manifest digest is over its raw bytes; the config blob matches the
    manifest's digest and size; each layer blob matches its descriptor; the
    config has one diff_id per layer and one non-empty history entry per layer
    (when it has history at all). With ``check_diff_ids`` each layer is also
    decompressed to check its diff_id, which reads every byte of the image.
    Blobs in ``remote_layers`` are not read: they are mounted from where they
    already are (a layer cache hit), and that registry verified them.

    Without ``check_diff_ids``, a layer of a StoredImage whose blob its store
    wrote in this process is not read again either (``BlobStore.written_here``):
    its digest was computed over the bytes as they were written, the blob got
    its name from that digest (decision 5), and the file is unchanged since (inode, size,
    mtime), so a second hash would only repeat the first (0.2 s for 300 MB).
    Its size is still checked against the descriptor.
    """
    problems: list[str] = []
    manifest = image.manifest()
    if Digest.of_bytes(manifest.raw, manifest.digest.algorithm) != manifest.digest:
        problems.append("manifest digest is not the digest of its raw bytes")

    raw_config = image.config_bytes()
    want = manifest.config
    got = Digest.of_bytes(raw_config, want.digest.algorithm)
    if got != want.digest:
        problems.append(f"config digest {got} differs from the manifest's {want.digest}")
    if len(raw_config) != want.size:
        problems.append(f"config size {len(raw_config)} differs from the manifest's {want.size}")

    config = ImageConfig.parse(raw_config)
    if len(config.diff_ids) != len(manifest.layers):
        problems.append(
            f"{len(manifest.layers)} layers in the manifest but "
            f"{len(config.diff_ids)} diff_ids in the config"
        )
    history = config.history
    if history:
        non_empty = sum(1 for h in history if not h.empty_layer)
        if non_empty != len(manifest.layers):
            problems.append(
                f"{len(manifest.layers)} layers but {non_empty} history entries "
                "without empty_layer"
            )

    store = image.store if isinstance(image, StoredImage) and not check_diff_ids else None
    if not problems:
        for i, layer in enumerate(image.layers()):
            desc = layer.descriptor()
            if desc != manifest.layers[i]:
                problems.append(f"layer {i}: descriptor differs from the manifest's")
            if desc.digest in remote_layers:
                continue
            written = store.written_here(desc.digest) if store is not None else None
            if written is not None:
                if written != desc.size:
                    problems.append(f"layer {i}: blob size {written}, manifest says {desc.size}")
                continue
            digest, size = _hash_stream(layer.open_compressed(), desc.digest.algorithm)
            if digest != desc.digest:
                problems.append(f"layer {i}: blob digest {digest}, manifest says {desc.digest}")
            if size != desc.size:
                problems.append(f"layer {i}: blob size {size}, manifest says {desc.size}")
            if check_diff_ids and digest == desc.digest:
                diff_id, _ = _hash_stream(layer.open_uncompressed(), layer.diff_id().algorithm)
                if diff_id != layer.diff_id():
                    problems.append(
                        f"layer {i}: uncompressed digest {diff_id}, config says "
                        f"{layer.diff_id()}"
                    )
    if problems:
        raise IntegrityError(f"image {manifest.digest} is invalid: " + "; ".join(problems))
