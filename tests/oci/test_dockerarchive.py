"""docker load tarballs: skopeo's docker-archive transport reads what kanipy writes."""

from __future__ import annotations

import json
import subprocess
import tarfile
from pathlib import Path

import pytest

from kanipy.errors import IntegrityError, UsageError
from kanipy.oci.blobstore import BlobStore
from kanipy.oci.dockerarchive import docker_repo_tag, write_docker_archive
from kanipy.oci.image import StoredImage, validate_image
from kanipy.oci.layout import read_layout
from tests.tools import require_tool

from .conftest import make_image


def _run(*args: str) -> str:
    done = subprocess.run(args, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, f"{args[0]} failed: {done.stderr}"
    return done.stdout


@pytest.mark.parametrize(
    ("compression", "compressed_layers"),
    [("gzip", False), ("zstd", False), ("gzip", True)],
    ids=["gzip-as-layer-tar", "zstd-as-layer-tar", "gzip-kept-compressed"],
)
def test_skopeo_copies_archive_back(
    tmp_path: Path, store: BlobStore, compression: str, compressed_layers: bool
) -> None:
    skopeo = require_tool("skopeo")
    image = make_image(store, [{"etc/hello": b"hello\n"}, {"srv/x": b"x" * 5000}],
                       "docker", compression)
    archive = write_docker_archive(tmp_path / "img.tar", image, ["example.com/app:v1"],
                                   compressed_layers=compressed_layers)
    config = json.loads(_run(skopeo, "inspect", "--config", f"docker-archive:{archive}"))
    assert config["rootfs"]["diff_ids"] == [str(d) for d in image.config().diff_ids]
    assert config["config"]["Cmd"] == ["/bin/sh"]

    other = tmp_path / "copied"
    _run(skopeo, "--insecure-policy", "copy", f"docker-archive:{archive}", f"oci:{other}:v1")
    copied = read_layout(other, "v1")
    validate_image(copied)  # layers decompress to the diff_ids we wrote
    assert copied.config().diff_ids == image.config().diff_ids


def test_archive_layout_is_docker_save(tmp_path: Path, image: StoredImage) -> None:
    archive = write_docker_archive(tmp_path / "img.tar", image, ["app", "reg:5000/x/app:2"])
    diff_ids = [d.hex for d in image.config().diff_ids]
    config_name = f"{image.manifest().config.digest.hex}.json"
    with tarfile.open(archive) as tar:
        names = tar.getnames()
        manifest = json.load(tar.extractfile("manifest.json"))  # type: ignore[arg-type]
        repositories = json.load(tar.extractfile("repositories"))  # type: ignore[arg-type]
        assert tar.extractfile(config_name).read() == image.config_bytes()  # type: ignore[union-attr]
        layer = tar.getmember(f"{diff_ids[1]}/layer.tar")
        assert layer.size > 1024 and layer.mtime == 0 and layer.uid == 0
    assert names == [config_name, f"{diff_ids[0]}", f"{diff_ids[0]}/layer.tar",
                     f"{diff_ids[1]}", f"{diff_ids[1]}/layer.tar", "manifest.json",
                     "repositories"]
    assert manifest == [{"Config": config_name,
                         "RepoTags": ["app:latest", "reg:5000/x/app:2"],
                         "Layers": [f"{d}/layer.tar" for d in diff_ids]}]
    assert repositories == {"app": {"latest": diff_ids[1]}, "reg:5000/x/app": {"2": diff_ids[1]}}
    # Deterministic: the same image gives the same archive.
    again = write_docker_archive(tmp_path / "again.tar", image, ["app", "reg:5000/x/app:2"])
    assert again.read_bytes() == archive.read_bytes()


def test_repeated_layer_stored_once(tmp_path: Path, store: BlobStore) -> None:
    image = make_image(store, [{"same": b"1"}, {"same": b"1"}])
    archive = write_docker_archive(tmp_path / "img.tar", image)
    with tarfile.open(archive) as tar:
        assert sum(n.endswith("layer.tar") for n in tar.getnames()) == 1
        manifest = json.load(tar.extractfile("manifest.json"))  # type: ignore[arg-type]
    assert len(manifest[0]["Layers"]) == 2 and manifest[0]["RepoTags"] == []


def test_wrong_diff_id_leaves_no_archive(tmp_path: Path, store: BlobStore) -> None:
    image = make_image(store, [{"a": b"1"}], compression="none")
    blob = store.path(image.manifest().layers[0].digest)
    blob.write_bytes(blob.read_bytes().replace(b"1", b"2"))
    with pytest.raises(IntegrityError, match="layer 0"):
        write_docker_archive(tmp_path / "img.tar", image, ["app:1"])
    assert list(tmp_path.iterdir()) == [tmp_path / "store"]


@pytest.mark.parametrize(
    ("tag", "want"),
    [("app", ("app", "latest")), ("app:1.0", ("app", "1.0")),
     ("localhost:5000/app", ("localhost:5000/app", "latest")),
     ("localhost:5000/app:v2", ("localhost:5000/app", "v2"))],
    ids=["bare", "tagged", "port-no-tag", "port-and-tag"],
)
def test_docker_repo_tag(tag: str, want: tuple[str, str]) -> None:
    assert docker_repo_tag(tag) == want


@pytest.mark.parametrize("tag", ["app@sha256:" + "a" * 64, "app:"], ids=["digest", "empty-tag"])
def test_docker_repo_tag_refuses(tag: str) -> None:
    with pytest.raises(UsageError):
        docker_repo_tag(tag)
