"""OCI image layouts: what kanipy writes, skopeo and umoci read; what they write, kanipy reads."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from kanipy.errors import LayoutError
from kanipy.oci import mediatypes as mt
from kanipy.oci.blobstore import BlobStore
from kanipy.oci.config import ImageConfig
from kanipy.oci.descriptor import Platform
from kanipy.oci.image import Layer, StoredImage, validate_image
from kanipy.oci.layout import REF_NAME, layout_refs, read_layout, write_layout
from kanipy.oci.manifest import Manifest, build_index
from tests.tools import require_tool

from .conftest import DATA, make_image


def _run(*args: str) -> str:
    done = subprocess.run(args, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, f"{args[0]} failed: {done.stderr}"
    return done.stdout


def _index(root: Path) -> dict:
    return json.loads((root / "index.json").read_bytes())


@pytest.mark.parametrize("image_format", ["oci", "docker"])
def test_skopeo_inspects_written_layout(
    tmp_path: Path, store: BlobStore, image_format: str
) -> None:
    skopeo = require_tool("skopeo")
    image = make_image(store, [{"a": b"1"}, {"b": b"2"}], image_format)
    out = tmp_path / "layout"
    written = write_layout(out, image, ["v1"])
    info = json.loads(_run(skopeo, "inspect", f"oci:{out}:v1"))
    assert info["Digest"] == str(written.digest)
    assert info["Layers"] == [str(d.digest) for d in image.manifest().layers]
    assert info["Architecture"] == "amd64" and info["Os"] == "linux"
    assert not (out / "blobs" / ".tmp").exists()
    # A Docker image is written in its OCI form: same blobs, OCI media types.
    assert written.manifest().media_type == mt.OCI_MANIFEST
    assert (written.digest == image.digest) is (image_format == "oci")
    assert written.config_bytes() == image.config_bytes()
    validate_image(written)


def test_docker_media_types_kept_on_request(tmp_path: Path, store: BlobStore) -> None:
    image = make_image(store, [{"a": b"1"}], "docker")
    written = write_layout(tmp_path / "layout", image, ["d"], oci_media_types=False)
    assert written.digest == image.digest
    assert read_layout(tmp_path / "layout", "d").manifest().media_type == mt.DOCKER_MANIFEST


def test_umoci_unpacks_written_layout(tmp_path: Path, image: StoredImage) -> None:
    umoci = require_tool("umoci")
    layout = tmp_path / "layout"
    write_layout(layout, image, ["app"])
    bundle = tmp_path / "bundle"
    rootless = [] if os.geteuid() == 0 else ["--rootless"]
    _run(umoci, "unpack", *rootless, "--image", f"{layout}:app", str(bundle))
    rootfs = bundle / "rootfs"
    assert (rootfs / "etc/hello").read_bytes() == b"hello\n"
    assert (rootfs / "etc/greeting").read_bytes() == b"hi there\n"
    assert (rootfs / "srv/app/run.sh").stat().st_mode & 0o777 == 0o644
    config = json.loads((bundle / "config.json").read_bytes())
    assert config["process"]["args"] == ["/bin/sh"]


def test_layout_appends_and_retags(tmp_path: Path, store: BlobStore, image: StoredImage) -> None:
    layout = tmp_path / "layout"
    write_layout(layout, image, ["v1", "latest"])
    other = make_image(store, [{"other": b"x"}])
    write_layout(layout, other, ["v2", "latest"])
    assert layout_refs(layout) == ["v1", "v2", "latest"]
    by_tag = {e["annotations"][REF_NAME]: e["digest"] for e in _index(layout)["manifests"]}
    assert by_tag == {"v1": str(image.digest), "v2": str(other.digest),
                      "latest": str(other.digest)}
    assert read_layout(layout, "latest").digest == other.digest
    assert read_layout(layout, "v1").digest == image.digest
    validate_image(read_layout(layout, "v1"))


def test_layout_keeps_foreign_index_fields(tmp_path: Path, image: StoredImage) -> None:
    layout = tmp_path / "layout"
    shutil.copytree(DATA / "umoci-layout", layout)
    doc = _index(layout)
    doc["annotations"] = {"org.example.keep": "yes"}
    (layout / "index.json").write_text(json.dumps(doc))
    write_layout(layout, image, ["mine"])
    doc = _index(layout)
    assert doc["annotations"] == {"org.example.keep": "yes"}
    assert layout_refs(layout) == ["base", "mine"]


def test_untagged_image_gets_one_entry(tmp_path: Path, image: StoredImage) -> None:
    layout = tmp_path / "layout"
    write_layout(layout, image)
    write_layout(layout, image)
    assert [e["digest"] for e in _index(layout)["manifests"]] == [str(image.digest)]
    assert read_layout(layout).digest == image.digest


def test_blobs_are_hardlinked_from_the_store(tmp_path: Path, image: StoredImage) -> None:
    layout = tmp_path / "layout"
    write_layout(layout, image, ["v1"])
    layer = image.manifest().layers[0].digest
    assert (layout / "blobs/sha256" / layer.hex).stat().st_ino == \
        image.store.path(layer).stat().st_ino


def test_read_umoci_layout() -> None:
    image = read_layout(DATA / "umoci-layout", "base")
    validate_image(image)
    assert image.config().cmd == ["/bin/sh"]
    assert image.config().to_bytes() == image.config_bytes()
    assert not (DATA / "umoci-layout/blobs/.tmp").exists()


def test_read_index_entry_selects_platform(tmp_path: Path, store: BlobStore) -> None:
    amd = make_image(store, [{"amd": b"1"}])
    arm = make_image(store, [{"arm": b"2"}])
    index = build_index([
        amd.manifest().descriptor(platform=Platform("linux", "amd64")),
        arm.manifest().descriptor(platform=Platform("linux", "arm64", "v8")),
    ])
    layout = tmp_path / "layout"
    write_layout(layout, amd)
    write_layout(layout, arm)
    BlobStore(layout).put_bytes(index.raw)
    doc = _index(layout)
    doc["manifests"] = [index.descriptor({REF_NAME: "multi"}).to_json()]
    (layout / "index.json").write_text(json.dumps(doc))
    assert read_layout(layout, "multi").digest == amd.digest
    assert read_layout(layout, "multi", Platform.parse("linux/arm64")).digest == arm.digest
    assert index.media_type == mt.OCI_INDEX


@pytest.mark.parametrize(
    ("ref", "message"),
    [("nope", "no image tagged 'nope'; tags present: v1, v2"),
     (None, "holds 2 images; name one of its tags: v1, v2")],
    ids=["unknown-tag", "ambiguous"],
)
def test_read_layout_errors_name_the_tags(
    tmp_path: Path, store: BlobStore, image: StoredImage, ref: str | None, message: str
) -> None:
    layout = tmp_path / "layout"
    write_layout(layout, image, ["v1"])
    write_layout(layout, make_image(store, [{"z": b""}]), ["v2"])
    with pytest.raises(LayoutError, match=message) as err:
        read_layout(layout, ref)
    assert err.value.exit_code == 2


def test_read_layout_of_plain_directory(tmp_path: Path) -> None:
    with pytest.raises(LayoutError, match="not an OCI image layout"):
        read_layout(tmp_path)


class _Unstored:
    """An Image that is not a StoredImage: its blobs can only be read through the protocol."""

    def __init__(self, image: StoredImage) -> None:
        self._image = image

    def manifest(self) -> Manifest:
        return self._image.manifest()

    def config(self) -> ImageConfig:
        return self._image.config()

    def config_bytes(self) -> bytes:
        return self._image.config_bytes()

    def layers(self) -> list[Layer]:
        return self._image.layers()


def test_any_image_can_be_written(tmp_path: Path, image: StoredImage) -> None:
    layout = tmp_path / "layout"
    written = write_layout(layout, _Unstored(image), ["v1"])
    assert written.digest == image.digest
    layer = image.manifest().layers[0].digest
    # Streamed in and verified, not hardlinked from the store.
    assert (layout / "blobs/sha256" / layer.hex).stat().st_ino != \
        image.store.path(layer).stat().st_ino
    validate_image(read_layout(layout, "v1"))
