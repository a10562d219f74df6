"""Small test images assembled by hand (tarfile + JSON), put into a BlobStore."""

from __future__ import annotations

import gzip
import io
import json
import os
import tarfile
from dataclasses import dataclass

from kanipy.oci import mediatypes
from kanipy.oci.blobstore import BlobStore
from kanipy.oci.descriptor import Descriptor
from kanipy.oci.digest import Digest
from kanipy.oci.image import StoredImage
from kanipy.oci.manifest import Manifest, parse_manifest


@dataclass
class HandmadeImage:
    manifest_raw: bytes
    media_type: str
    config: Descriptor
    layers: list[Descriptor]
    store: BlobStore

    def stored(self, store: BlobStore | None = None) -> StoredImage:
        """The image as a StoredImage over ``store`` (by default the one it was made in)."""
        manifest = parse_manifest(self.manifest_raw)
        assert isinstance(manifest, Manifest)
        return StoredImage(store or self.store, manifest)

    @property
    def blobs(self) -> list[Descriptor]:
        return [self.config, *self.layers]

    @property
    def digest(self) -> Digest:
        return Digest.of_bytes(self.manifest_raw)


def layer_blob(files: dict[str, bytes]) -> tuple[bytes, bytes]:
    """(uncompressed tar, gzip'd tar) holding ``files``."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in sorted(files.items()):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = 1_700_000_000
            tar.addfile(info, io.BytesIO(data))
    tar_bytes = raw.getvalue()
    return tar_bytes, gzip.compress(tar_bytes, mtime=0)


def make_image(store: BlobStore, layer_files: list[dict[str, bytes]],
               docker: bool = False, label: str = "test") -> HandmadeImage:
    layers: list[Descriptor] = []
    diff_ids: list[str] = []
    layer_type = mediatypes.DOCKER_LAYER_GZIP if docker else mediatypes.OCI_LAYER_GZIP
    for files in layer_files:
        tar_bytes, gz = layer_blob(files)
        digest = store.put_bytes(gz)
        layers.append(Descriptor(layer_type, digest, len(gz)))
        diff_ids.append(str(Digest.of_bytes(tar_bytes)))
    config_raw = json.dumps({
        "architecture": "amd64", "os": "linux",
        "config": {"Labels": {"kanipy.test": label}},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": [{"created_by": "test"} for _ in diff_ids],
    }, sort_keys=True).encode()
    config_type = mediatypes.DOCKER_CONFIG if docker else mediatypes.OCI_CONFIG
    config = Descriptor(config_type, store.put_bytes(config_raw), len(config_raw))
    media_type = mediatypes.DOCKER_MANIFEST if docker else mediatypes.OCI_MANIFEST
    manifest_raw = json.dumps({
        "schemaVersion": 2, "mediaType": media_type,
        "config": config.to_json(), "layers": [d.to_json() for d in layers],
    }, indent=2).encode()
    return HandmadeImage(manifest_raw, media_type, config, layers, store)


def random_image(store: BlobStore, sizes: list[int], label: str = "test") -> HandmadeImage:
    """An image whose layers hold incompressible files of the given sizes."""
    return make_image(store, [{f"data/{i}.bin": os.urandom(n)} for i, n in enumerate(sizes)],
                      label=label)
