"""Hostile base images and contexts, built for real (issue 11): each fails with a named
error and the right exit code, and nothing outside kanipy's own directories is touched."""

from __future__ import annotations

import platform
import tarfile
from pathlib import Path

from tests.e2e.build_support import add_file, layer_tar, push_image, tag_exists
from tests.e2e.helpers import build, unpack_image, write_tree
from tests.fixtures.images import BaseImages
from tests.fixtures.registry import Registry


def _arch() -> str:
    machine = platform.machine().lower()
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(machine, machine)


def _whiteout_of_parent(tar: tarfile.TarFile) -> None:
    add_file(tar, "etc/hostname", b"evil\n")
    add_file(tar, ".wh...", b"")  # the whiteout of "..": the root's parent


def test_whiteout_of_the_roots_parent_is_refused(
        tmp_path: Path, registry: Registry, base_images: BaseImages) -> None:
    ref = push_image(tmp_path / "layout", registry.ref("e2e/whiteout-parent:latest"),
                     [base_images.layer_tar, layer_tar(_whiteout_of_parent)], _arch())
    work = tmp_path / "work"
    work.mkdir()
    (work / "keep").write_text("kanipy-dir content\n")
    sentinel = tmp_path / "sentinel"
    sentinel.write_text("beside the work dir\n")
    context = write_tree(tmp_path / "ctx", {"Dockerfile": f"FROM {ref}\nRUN echo ran\n"})
    dest = registry.ref("e2e/whiteout-parent-result:latest")
    result = build(context, "-d", dest, "--kanipy-dir", str(work))
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    message = result.stderr.strip().splitlines()[-1]
    assert "layer sha256:" in message, message
    assert "entry '.wh...' is a whiteout of '..'" in message, message
    assert work.is_dir() and (work / "keep").read_text() == "kanipy-dir content\n"
    assert sentinel.read_text() == "beside the work dir\n"
    assert sorted(p.name for p in work.iterdir()) == ["keep"], "the build dir is cleaned up"
    assert not tag_exists(dest)


def test_dockerfile_symlink_leading_out_of_the_context_is_refused(tmp_path: Path) -> None:
    (tmp_path / "secret").write_text("TOPSECRET hunter2\n")
    context = tmp_path / "ctx"
    context.mkdir()
    (context / "Dockerfile").symlink_to("../secret")
    result = build(context, "--no-push")
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert "TOPSECRET" not in result.stderr
    assert "Dockerfile 'Dockerfile' is a symlink leading outside the build context" \
        in result.stderr


def test_invalid_dockerignore_names_the_file_and_line(tmp_path: Path) -> None:
    context = write_tree(tmp_path / "ctx", {"Dockerfile": "FROM scratch\nCOPY . /\n",
                                            ".dockerignore": "*.md\n[abc\n"})
    result = build(context, "--no-push")
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert ".dockerignore:2: invalid pattern '[abc': unterminated [" in result.stderr


def test_pathological_dockerignore_on_a_deep_context_builds(
        tmp_path: Path, registry: Registry) -> None:
    deep = "/".join(["d"] * 40)
    context = write_tree(tmp_path / "ctx", {
        "Dockerfile": "FROM scratch\nCOPY . /ctx/\n",
        ".dockerignore": "/".join(["**"] * 12) + "/x\n",
        f"{deep}/kept": "kept\n",
        f"{deep}/x": "ignored\n",
    })
    dest = registry.ref("e2e/deep-ignore:latest")
    # Backtracking took hours per path for this pattern; linear matching, no time at all.
    build(context, "-d", dest).check()
    rootfs = unpack_image(dest, tmp_path / "out")
    assert (rootfs / "ctx" / deep / "kept").read_text() == "kept\n"
    assert not (rootfs / "ctx" / deep / "x").exists()
