"""How the image is made: reproducible digests, zstd layers, one snapshot, platform, mirrors."""

from __future__ import annotations

import json
import os
import subprocess
import tarfile
import time
from pathlib import Path

from tests.e2e.helpers import build, run_tool, skopeo_config, skopeo_manifest, write_tree
from tests.fixtures.images import BaseImages
from tests.fixtures.registry import Registry
from tests.tools import require_tool

DOCKERFILE = (
    "FROM {base}\n"
    "COPY app.txt /app/app.txt\n"
    "RUN echo built > /app/run.txt && mkdir -p /var/x && touch /var/x/y\n"
)


def _digest_of(path: Path) -> str:
    return path.read_text()


def test_reproducible_builds_agree_across_work_dirs_and_times(
        tmp_path: Path, base_images: BaseImages) -> None:
    context = write_tree(tmp_path / "ctx", {
        "Dockerfile": DOCKERFILE.format(base=base_images.oci), "app.txt": "app\n"})
    digests = []
    for n in range(2):
        if n:
            time.sleep(1.1)
            for path in context.iterdir():
                os.utime(path)  # new mtimes: a reproducible build ignores them
        out = tmp_path / f"digest-{n}"
        build(context, "--no-push", "--reproducible", "--kanipy-dir",
              str(tmp_path / f"work-{n}"), "--digest-file", str(out),
              "--oci-layout-path", str(tmp_path / f"layout-{n}")).check()
        digests.append(_digest_of(out))
    assert digests[0] == digests[1]

    config = json.loads(run_tool(["skopeo", "inspect", "--config",
                                  f"oci:{tmp_path / 'layout-0'}:latest"]))
    assert config["created"] == "1970-01-01T00:00:00Z"
    assert {h["created"] for h in config["history"][1:]} == {"1970-01-01T00:00:00Z"}


def test_source_date_epoch_sets_created_and_clamps_mtimes(
        tmp_path: Path, registry: Registry, base_images: BaseImages) -> None:
    context = write_tree(tmp_path / "ctx", {
        "Dockerfile": DOCKERFILE.format(base=base_images.oci), "app.txt": "app\n"})
    dest = registry.ref("img/sde:1")
    epoch = 1700000000
    build(context, "-d", dest, "--reproducible",
          env={"SOURCE_DATE_EPOCH": str(epoch)}).check()
    config = skopeo_config(dest)
    assert config["created"] == "2023-11-14T22:13:20Z"
    manifest = skopeo_manifest(dest)
    base = skopeo_manifest(base_images.oci)
    # Base layers are kept byte for byte.
    assert manifest["layers"][0] == base["layers"][0]
    layout = tmp_path / "layout"
    run_tool(["skopeo", "copy", "--quiet", "--src-tls-verify=false", f"docker://{dest}",
              f"oci:{layout}:x"])
    for layer in manifest["layers"][1:]:
        blob = layout / "blobs/sha256" / layer["digest"].split(":")[1]
        with tarfile.open(blob) as tar:
            mtimes = {m.name: m.mtime for m in tar.getmembers()}
        assert mtimes and max(mtimes.values()) <= epoch, mtimes


def test_zstd_layers(tmp_path: Path, registry: Registry, base_images: BaseImages) -> None:
    require_tool("zstd")
    context = write_tree(tmp_path / "ctx", {
        "Dockerfile": DOCKERFILE.format(base=base_images.oci), "app.txt": "app\n"})
    dest = registry.ref("img/zstd:1")
    build(context, "-d", dest, "--compression", "zstd", "--compression-level", "19").check()
    manifest = skopeo_manifest(dest)
    new_layers = manifest["layers"][1:]
    assert {layer["mediaType"] for layer in new_layers} == \
        {"application/vnd.oci.image.layer.v1.tar+zstd"}
    layout = tmp_path / "layout"
    run_tool(["skopeo", "copy", "--quiet", "--src-tls-verify=false", f"docker://{dest}",
              f"oci:{layout}:x"])
    # umoci 0.4.7 (Debian) knows only gzip layers, so each zstd layer is checked
    # with the zstd tool and tar instead.
    names = set()
    for layer in new_layers:
        blob = layout / "blobs/sha256" / layer["digest"].split(":")[1]
        raw = subprocess.run(["zstd", "-dc", str(blob)], capture_output=True, check=True).stdout
        listing = tmp_path / "layer.tar"
        listing.write_bytes(raw)
        with tarfile.open(listing) as tar:
            names |= set(tar.getnames())
    assert {"app/app.txt", "app/run.txt", "var/x/y"} <= names


def test_single_snapshot_makes_one_layer(tmp_path: Path, registry: Registry,
                                         base_images: BaseImages) -> None:
    context = write_tree(tmp_path / "ctx", {
        "Dockerfile": DOCKERFILE.format(base=base_images.oci), "app.txt": "app\n"})
    dest = registry.ref("img/single:1")
    build(context, "-d", dest, "--single-snapshot").check()
    config = skopeo_config(dest)
    assert len(config["rootfs"]["diff_ids"]) == 2  # the base layer and one for the stage
    assert len([h for h in config["history"] if not h.get("empty_layer")]) == 2


def test_custom_platform_picks_from_an_index(tmp_path: Path, registry: Registry,
                                             base_images: BaseImages) -> None:
    # No RUN: the arm64 entry holds an amd64 busybox, fit to be copied, not run.
    context = write_tree(tmp_path / "ctx", {
        "Dockerfile": f"FROM {base_images.multi}\nCOPY app.txt /app.txt\n", "app.txt": "a\n"})
    dest = registry.ref("img/arm64:1")
    build(context, "-d", dest, "--custom-platform", "linux/arm64/v8").check()
    config = skopeo_config(dest)
    assert (config["os"], config["architecture"], config.get("variant")) == \
        ("linux", "arm64", "v8")


def test_registry_mirror_serves_docker_hub_names(tmp_path: Path, registry: Registry,
                                                 base_images: BaseImages) -> None:
    """``FROM library/busybox`` is pulled from the mirror; docker.io is never reached."""
    require_tool("skopeo")
    run_tool(["skopeo", "copy", "--quiet", "--src-tls-verify=false", "--dest-tls-verify=false",
              f"docker://{base_images.oci}",
              f"docker://{registry.ref('library/busybox:mirrored')}"])
    context = write_tree(tmp_path / "ctx", {
        "Dockerfile": "FROM busybox:mirrored\nRUN echo ok > /ok\n"})
    dest = registry.ref("img/mirrored:1")
    # A dead mirror first: kanipy falls through to the next one.
    result = build(context, "-d", dest, "--registry-mirror", "127.0.0.1:9",
                   "--registry-mirror", registry.host, "--push-retry", "0").check()
    assert "127.0.0.1:9" in result.stderr
    assert skopeo_manifest(dest)["layers"][0] == skopeo_manifest(base_images.oci)["layers"][0]


def test_compression_level_out_of_range_is_a_usage_error(tmp_path: Path) -> None:
    context = write_tree(tmp_path / "ctx", {"Dockerfile": "FROM scratch\nCOPY f /f\n", "f": "x"})
    result = build(context, "--no-push", "--compression-level", "15")
    assert result.returncode == 2
    assert "gzip levels are 1 to 9" in result.stderr
