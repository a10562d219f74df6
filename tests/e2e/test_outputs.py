"""Outputs a CI step scripts against: digest files, a docker-archive tarball, an OCI layout.

Every output is read back with skopeo, never with kanipy, and the digests are
compared with what the registry itself reports.
"""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

from tests.e2e.helpers import build, run_tool, skopeo_config, write_tree
from tests.fixtures.images import BaseImages
from tests.fixtures.registry import Registry
from tests.tools import require_tool


def _context(tmp_path: Path, base: str) -> Path:
    return write_tree(tmp_path / "ctx", {
        "Dockerfile": f"FROM {base}\nCOPY app.txt /app.txt\nRUN echo built > /built.txt\n",
        "app.txt": "app\n",
    })


def _registry_digest(ref: str) -> str:
    require_tool("skopeo")
    return json.loads(run_tool(["skopeo", "inspect", "--tls-verify=false",
                                f"docker://{ref}"]))["Digest"]


def _archive_tags(tar: Path) -> list[str]:
    with tarfile.open(tar) as archive:
        member = archive.extractfile("manifest.json")
        assert member is not None
        return [t for entry in json.load(member) for t in entry["RepoTags"]]


def test_digest_files_match_the_registry(tmp_path: Path, registry: Registry,
                                         base_images: BaseImages) -> None:
    context = _context(tmp_path, base_images.oci)
    first = registry.ref("out/files:v1")
    second = registry.ref("out/files")  # no tag: Kaniko writes it as :latest
    out = tmp_path / "out"
    result = build(
        context, "-d", first, "-d", second,
        "--digest-file", str(out / "digest"),
        "--image-name-with-digest-file", str(out / "name-digest"),
        "--image-name-tag-with-digest-file", str(out / "name-tag-digest"),
    ).check()

    digest = _registry_digest(first)
    assert digest == _registry_digest(second + ":latest")
    # Kaniko's formats: the digest alone with no newline (Tekton reads it as
    # IMAGE_DIGEST verbatim); one NAME@DIGEST / NAME:TAG@DIGEST line per destination.
    assert (out / "digest").read_text() == digest
    name = f"{registry.host}/out/files"
    assert (out / "name-digest").read_text() == f"{name}@{digest}\n{name}@{digest}\n"
    assert (out / "name-tag-digest").read_text() == \
        f"{name}:v1@{digest}\n{name}:latest@{digest}\n"
    assert result.stdout.splitlines() == [f"{name}@{digest}", f"{name}@{digest}"]


def test_no_push_writes_tarball_and_layout(tmp_path: Path, registry: Registry,
                                           base_images: BaseImages) -> None:
    require_tool("skopeo")
    context = _context(tmp_path, base_images.oci)
    dest = registry.ref("out/never-pushed:1.0")
    tar = tmp_path / "image.tar"
    layout = tmp_path / "layout"
    digest_file = tmp_path / "digest"
    result = build(context, "-d", dest, "--no-push", "--tar-path", str(tar),
                   "--oci-layout-path", str(layout), "--digest-file", str(digest_file)
                   ).check()
    assert "out/never-pushed" not in registry.catalog()
    digest = digest_file.read_text()
    assert result.stdout.strip() == digest

    # The docker-archive is readable by skopeo under its tag, and copies to OCI.
    inspected = json.loads(run_tool(["skopeo", "inspect", f"docker-archive:{tar}"]))
    assert _archive_tags(tar) == [dest]
    assert len(inspected["Layers"]) == 3
    copied = tmp_path / "copied"
    run_tool(["skopeo", "copy", "--quiet", f"docker-archive:{tar}:{dest}",
              f"oci:{copied}:x"])
    assert (copied / "index.json").exists()

    # The OCI layout holds exactly the image whose digest was written.
    index = json.loads((layout / "index.json").read_text())
    assert [m["digest"] for m in index["manifests"]] == [digest]
    config = json.loads(run_tool(["skopeo", "inspect", "--config", f"oci:{layout}:1.0"]))
    assert config["rootfs"]["diff_ids"] == inspected["Layers"]


def test_tar_path_without_destination(tmp_path: Path, base_images: BaseImages) -> None:
    """Kaniko names an untagged ``--no-push --tar-path`` image unset-repo/unset-image-name."""
    require_tool("skopeo")
    context = _context(tmp_path, base_images.oci)
    tar = tmp_path / "image.tar"
    build(context, "--no-push", "--tar-path", str(tar)).check()
    inspected = json.loads(run_tool(["skopeo", "inspect", f"docker-archive:{tar}"]))
    assert len(inspected["Layers"]) == 3
    assert _archive_tags(tar) == ["docker.io/unset-repo/unset-image-name:latest"]


def test_image_format_docker_from_oci_base(tmp_path: Path, registry: Registry,
                                           base_images: BaseImages) -> None:
    from tests.e2e.helpers import skopeo_manifest

    context = _context(tmp_path, base_images.oci)
    dest = registry.ref("out/docker-format:1")
    layout = tmp_path / "layout"
    build(context, "-d", dest, "--image-format", "docker",
          "--oci-layout-path", str(layout)).check()
    manifest = skopeo_manifest(dest)
    # As Kaniko does, the layout holds the very image pushed (Docker media types and
    # all), so the digest is the same everywhere.
    index = json.loads((layout / "index.json").read_text())
    assert [(m["digest"], m["mediaType"]) for m in index["manifests"]] == \
        [(_registry_digest(dest), manifest["mediaType"])]
    assert manifest["mediaType"] == "application/vnd.docker.distribution.manifest.v2+json"
    assert {layer["mediaType"] for layer in manifest["layers"]} == \
        {"application/vnd.docker.image.rootfs.diff.tar.gzip"}
    assert skopeo_config(dest)["rootfs"]["diff_ids"]
