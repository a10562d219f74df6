"""OCI image layout directories: write an image into one, read an image back out.

OCI image spec, "Image Layout": ``oci-layout``, ``blobs/<alg>/<hex>`` and an
``index.json`` whose entries point at manifests. A tag is the entry's
``org.opencontainers.image.ref.name`` annotation ("Pre-Defined Annotation
Keys"); that is what ``skopeo inspect oci:DIR:TAG`` and ``umoci`` look up.
Writing appends to an existing layout: other images and unknown fields of
``index.json`` stay, an entry with the same tag is replaced.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from kanipy.errors import LayoutError, ManifestError
from kanipy.oci import mediatypes as mt
from kanipy.oci.blobstore import BlobStore, write_file_atomically
from kanipy.oci.descriptor import Descriptor, Platform
from kanipy.oci.image import Image, StoredImage, image_blobs, oci_manifest
from kanipy.oci.manifest import Index, Manifest, parse_manifest

log = logging.getLogger(__name__)

REF_NAME = "org.opencontainers.image.ref.name"


def _read_index(root: Path) -> dict[str, Any]:
    path = root / "index.json"
    if not path.exists():
        return {"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": []}
    try:
        doc = json.loads(path.read_bytes())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise LayoutError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(doc, dict) or not isinstance(doc.get("manifests", []), list):
        raise LayoutError(f"{path}: not an OCI image index")
    doc.setdefault("manifests", [])
    return doc


def write_layout(
    path: str | os.PathLike[str], image: Image, tags: Sequence[str] = (),
    *, oci_media_types: bool = True,
) -> StoredImage:
    """Write ``image`` into the OCI layout at ``path`` (created if missing).

    Blobs of a StoredImage are hardlinked from its store where possible, else
    copied; other images' blobs are streamed in and verified. Each tag becomes
    an index.json entry annotated with its ref name; without tags the image
    gets one unnamed entry. A Docker schema 2 image is written with OCI media
    types (a new manifest digest over the same blobs) unless
    ``oci_media_types`` is False, because skopeo and umoci skip Docker
    manifests in a layout. Returns the image as it now stands in the layout.
    """
    root = Path(path)
    manifest = image.manifest()
    if oci_media_types and manifest.media_type != mt.OCI_MANIFEST:
        converted = oci_manifest(manifest)
        log.info(
            "OCI layout %s gets the OCI form of %s: manifest %s",
            root, manifest.digest, converted.digest,
        )
        manifest = converted
    if root.exists() and not root.is_dir():
        raise LayoutError(f"{root} exists and is not a directory; an OCI layout is a directory")
    source = image.store if isinstance(image, StoredImage) else None
    same_store = (source is not None and root.exists()
                  and root.resolve() == source.root.resolve())
    target = BlobStore(root)
    for blob in image_blobs(image):
        digest = blob.descriptor.digest
        if source is not None and source.has(digest):
            target.link_from(source, digest)
        elif not target.has(digest):
            with blob.open() as stream:
                target.ingest(stream, expected=digest, size=blob.descriptor.size,
                              what=f"blob {digest}")
    target.put_bytes(manifest.raw)
    if not same_store:
        # BlobStore's ingest directory is ours, not part of the layout format.
        try:
            (root / "blobs" / ".tmp").rmdir()
        except OSError:
            pass

    doc = _read_index(root)
    entries: list[dict[str, Any]] = doc["manifests"]
    if tags:
        for tag in tags:
            entries = [
                e for e in entries if (e.get("annotations") or {}).get(REF_NAME) != tag
            ]
            entries.append(manifest.descriptor(annotations={REF_NAME: tag}).to_json())
    elif not any(e.get("digest") == str(manifest.digest) for e in entries):
        entries.append(manifest.descriptor().to_json())
    doc["manifests"] = entries
    write_file_atomically(
        root / "index.json",
        json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode(),
    )
    log.debug("wrote %s to OCI layout %s as %s", manifest.digest, root, list(tags))
    return StoredImage(target, manifest)


def _open_store(root: Path) -> BlobStore:
    """A read-only BlobStore over an existing layout: reading leaves it untouched."""
    return BlobStore(root, readonly=True)


def layout_refs(path: str | os.PathLike[str]) -> list[str]:
    """The ref names (tags) of the layout's index.json entries, in order."""
    doc = _read_index(Path(path))
    return [
        e["annotations"][REF_NAME]
        for e in doc["manifests"]
        if isinstance(e.get("annotations"), dict) and REF_NAME in e["annotations"]
    ]


def read_layout(
    path: str | os.PathLike[str], ref: str | None = None, platform: Platform | None = None
) -> StoredImage:
    """The image tagged ``ref`` in the layout at ``path`` (or its only image).

    When the entry is an index, ``platform`` (default linux/amd64) selects the
    image in it.
    """
    root = Path(path)
    if not (root / "oci-layout").is_file() or not (root / "index.json").is_file():
        raise LayoutError(f"{root} is not an OCI image layout (no oci-layout or index.json)")
    doc = _read_index(root)
    entries = [Descriptor.from_json(e) for e in doc["manifests"]]
    if ref is not None:
        chosen = [d for d in entries if (d.annotations or {}).get(REF_NAME) == ref]
        if not chosen:
            have = ", ".join(layout_refs(root)) or "none"
            raise LayoutError(f"{root} has no image tagged {ref!r}; tags present: {have}")
    else:
        chosen = entries
        if len(chosen) != 1:
            have = ", ".join(layout_refs(root)) or "none"
            raise LayoutError(
                f"{root} holds {len(chosen)} images; name one of its tags: {have}"
            )
    store = _open_store(root)
    desc = chosen[-1]
    parsed: Manifest | Index = parse_manifest(store.read_bytes(desc.digest), desc.media_type)
    if isinstance(parsed, Index):
        desc = parsed.select(platform or Platform())
        parsed = parse_manifest(store.read_bytes(desc.digest), desc.media_type)
        if isinstance(parsed, Index):
            raise ManifestError(f"{root}: nested image indexes are not supported")
    return StoredImage(store, parsed)
