"""Multi-stage builds and output formats end to end."""

from __future__ import annotations

import json
import platform
import re
from pathlib import Path

import pytest

from tests.e2e.build_support import copy_to_layout, raw_config
from tests.e2e.helpers import build, run_tool, skopeo_manifest, unpack_image, write_tree
from tests.fixtures.images import BaseImages
from tests.fixtures.registry import Registry
from tests.tools import require_tool

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"


def _multi_stage(base: str) -> str:
    return (
        f"FROM {base} AS builder\n"
        "RUN echo built > /artifact\n"
        f"FROM {base}\n"
        "RUN echo second > /second\n"
        f"FROM {base} AS broken\n"
        "RUN echo broken-stage-ran && exit 7\n"
        "FROM builder AS final\n"
        "COPY --from=builder /artifact /from-name\n"
        "COPY --from=1 /second /from-index\n"
        "RUN cat /artifact > /inherited\n"
    )


def _stage_lines(stderr: str) -> list[str]:
    """The stage lines in stage order (stages built at once may start in any order)."""
    lines = re.findall(r"^\[\d+/\d+\] STAGE.*$", stderr, re.MULTILINE)
    return sorted(lines, key=lambda line: int(line[1:line.index("/")]))


def test_multi_stage_builds_needed_stages_in_order(
        tmp_path: Path, registry: Registry, base_images: BaseImages) -> None:
    context = write_tree(tmp_path / "ctx", {"Dockerfile": _multi_stage(base_images.oci)})
    dest = registry.ref("e2e/stages:latest")
    result = build(context, "-d", dest).check()
    assert "broken-stage-ran" not in result.stderr.replace("RUN echo broken-stage-ran", "")
    stages = _stage_lines(result.stderr)
    assert len(stages) == 3, stages
    assert "builder" in stages[0] and "final" in stages[2], stages
    assert stages[2].endswith("STAGE final FROM builder"), stages
    assert [s.split()[0] for s in stages] == ["[1/3]", "[2/3]", "[3/3]"]
    rootfs = unpack_image(dest, tmp_path / "out")
    assert (rootfs / "from-name").read_text() == "built\n"
    assert (rootfs / "from-index").read_text() == "second\n"
    assert (rootfs / "inherited").read_text() == "built\n"
    assert (rootfs / "artifact").read_text() == "built\n", "FROM builder inherits its files"
    assert not (rootfs / "second").exists()


def _layer_bytes(stderr: str) -> dict[str, int | None]:
    """Each step's layer size from the JSON summary, by its instruction text."""
    summary = [json.loads(line) for line in stderr.splitlines()
               if line.startswith("{") and '"summary"' in line][-1]
    return {step["instruction"]: step["layer_bytes"] for step in summary["steps"]}


def test_stage_only_copied_from_makes_no_layer(tmp_path: Path, registry: Registry,
                                               base_images: BaseImages) -> None:
    """Issue 14: a stage read only by COPY --from is not in the image, so its steps make
    no layer (nothing to snapshot, tar or compress); its files still reach the stage
    that copies them, and a stage the final one is built FROM keeps its layers."""
    context = write_tree(tmp_path / "ctx", {"Dockerfile": _multi_stage(base_images.oci)})
    dest = registry.ref("e2e/stages-layers:latest")
    result = build(context, "-d", dest, "--log-format", "json").check()
    sizes = _layer_bytes(result.stderr)
    assert sizes["RUN echo second > /second"] is None, sizes
    assert (sizes["RUN echo built > /artifact"] or 0) > 0, "FROM builder: its layer is needed"
    assert (sizes["COPY --from=1 /second /from-index"] or 0) > 0
    rootfs = unpack_image(dest, tmp_path / "out")
    assert (rootfs / "from-index").read_text() == "second\n"
    config = json.loads(run_tool(["skopeo", "inspect", "--tls-verify=false", "--config",
                                  f"docker://{dest}"]))
    made = [h["created_by"] for h in config["history"] if not h.get("empty_layer")]
    assert not any("echo second" in text for text in made), made
    assert len(made) == len(config["rootfs"]["diff_ids"])


def test_target_builds_only_what_it_needs(tmp_path: Path, registry: Registry,
                                          base_images: BaseImages) -> None:
    context = write_tree(tmp_path / "ctx", {"Dockerfile": _multi_stage(base_images.oci)})
    dest = registry.ref("e2e/stages-target:latest")
    result = build(context, "-d", dest, "--target", "builder").check()
    stages = _stage_lines(result.stderr)
    assert len(stages) == 1 and "builder" in stages[0], stages
    rootfs = unpack_image(dest, tmp_path / "out")
    assert (rootfs / "artifact").exists()
    assert not (rootfs / "inherited").exists()
    # And the broken stage does fail when it is the target.
    failed = build(context, "-d", registry.ref("e2e/stages-broken:x"), "--target", "broken")
    assert failed.returncode == 1 and "exit code 7" in failed.stderr


FORMATS = [
    pytest.param("oci", (), OCI_MANIFEST, OCI_LAYER, id="oci-base-gives-oci"),
    pytest.param("docker", (), DOCKER_MANIFEST, DOCKER_LAYER, id="docker-base-gives-docker"),
    pytest.param("scratch", (), OCI_MANIFEST, OCI_LAYER, id="scratch-gives-oci"),
    pytest.param("scratch", ("--image-format", "docker"), DOCKER_MANIFEST, DOCKER_LAYER,
                 id="scratch-forced-docker"),
    pytest.param("oci", ("--image-format", "docker"), DOCKER_MANIFEST, DOCKER_LAYER,
                 id="oci-base-forced-docker"),
    pytest.param("docker", ("--image-format", "oci"), OCI_MANIFEST, OCI_LAYER,
                 id="docker-base-forced-oci"),
]


@pytest.mark.parametrize(("base", "flags", "manifest_type", "layer_type"), FORMATS)
def test_manifest_format(tmp_path: Path, registry: Registry, base_images: BaseImages,
                         base: str, flags: tuple[str, ...], manifest_type: str,
                         layer_type: str) -> None:
    base_ref = "scratch" if base == "scratch" else getattr(base_images, base)
    context = write_tree(tmp_path / "ctx", {
        "Dockerfile": f"FROM {base_ref}\nCOPY file.txt /file.txt\n",
        "file.txt": "content\n",
    })
    dest = registry.ref(f"e2e/format:{base}{len(flags)}{flags[-1] if flags else ''}")
    build(context, "-d", dest, *flags).check()
    manifest = skopeo_manifest(dest)
    assert manifest["mediaType"] == manifest_type
    assert {layer["mediaType"] for layer in manifest["layers"]} == {layer_type}
    config_type = ("application/vnd.oci.image.config.v1+json" if manifest_type == OCI_MANIFEST
                   else "application/vnd.docker.container.image.v1+json")
    assert manifest["config"]["mediaType"] == config_type
    rootfs = unpack_image(dest, tmp_path / "out")
    assert (rootfs / "file.txt").read_text() == "content\n"


def test_custom_platform_picks_from_the_index(tmp_path: Path, registry: Registry,
                                              base_images: BaseImages) -> None:
    context = write_tree(tmp_path / "ctx", {
        "Dockerfile": f"FROM {base_images.multi}\nCOPY file.txt /file.txt\nLABEL p=arm\n",
        "file.txt": "content\n",
    })
    dest = registry.ref("e2e/platform:arm64")
    build(context, "-d", dest, "--custom-platform", "linux/arm64").check()
    config = raw_config(dest)
    assert config["architecture"] == "arm64"
    assert config["os"] == "linux"
    assert config.get("variant") == "v8"


def test_zstd_on_a_docker_base_gives_an_oci_image(tmp_path: Path, registry: Registry,
                                                  base_images: BaseImages) -> None:
    """Docker schema 2 has no zstd layer type: the image becomes OCI, readable by skopeo."""
    context = write_tree(tmp_path / "ctx", {
        "Dockerfile": f"FROM {base_images.docker}\nCOPY file.txt /file.txt\n",
        "file.txt": "content\n",
    })
    dest = registry.ref("e2e/format:zstd")
    build(context, "-d", dest, "--compression", "zstd").check()
    manifest = skopeo_manifest(dest)
    assert manifest["mediaType"] == OCI_MANIFEST
    assert [layer["mediaType"] for layer in manifest["layers"]] == \
        [OCI_LAYER, "application/vnd.oci.image.layer.v1.tar+zstd"]
    # This umoci cannot unpack zstd; skopeo copies it and GNU tar (zstd) reads the layer.
    layout = tmp_path / "layout"
    copied = copy_to_layout(dest, layout)
    blob = layout / "blobs" / "sha256" / copied["layers"][-1]["digest"].split(":")[1]
    require_tool("zstd")
    assert run_tool(["tar", "--zstd", "-xOf", str(blob), "file.txt"]) == "content\n"

    forced = build(context, "-d", registry.ref("e2e/format:zstd-docker"),
                   "--compression", "zstd", "--image-format", "docker")
    assert forced.returncode == 2, forced.stderr
    assert "zstd" in forced.stderr.strip().splitlines()[-1]


def _other_arch() -> str:
    machine = platform.machine().lower()
    return "arm64" if {"x86_64": "amd64", "aarch64": "arm64"}.get(machine, machine) == "amd64" \
        else "amd64"


@pytest.mark.parametrize("how", ["from-platform", "custom-platform"])
def test_single_platform_base_for_another_platform_is_refused(
        tmp_path: Path, base_images: BaseImages, how: str) -> None:
    """A single-platform manifest has no platform but its config's: when a platform was
    asked for and the config names another, the build stops (BuildKit refuses too)
    instead of building the host's architecture under the asked one's name (issue 11)."""
    other = f"linux/{_other_arch()}"
    flag = f"--platform={other} " if how == "from-platform" else ""
    context = write_tree(tmp_path / "ctx", {
        "Dockerfile": f"FROM {flag}{base_images.oci}\nCOPY file.txt /file.txt\n",
        "file.txt": "content\n",
    })
    args = ["--no-push"] + (["--custom-platform", other] if how == "custom-platform" else [])
    result = build(context, *args)
    assert result.returncode == 2, result.stderr
    assert f"not {other} as asked" in result.stderr, result.stderr
    assert base_images.oci in result.stderr
    if how == "from-platform":
        assert "FROM on Dockerfile:1" in result.stderr
