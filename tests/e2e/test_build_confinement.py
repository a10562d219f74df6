"""A base image whose layer tries to leave the root is refused; nothing outside is touched."""

from __future__ import annotations

import platform
import tarfile
from pathlib import Path

import pytest

from tests.e2e.build_support import add_file, add_symlink, layer_tar, push_image, tag_exists
from tests.e2e.helpers import build, unpack_image, write_tree
from tests.fixtures.images import BaseImages
from tests.fixtures.registry import Registry

# Builds use --kanipy-dir WORK, so the root is WORK/build-*/stage-0 and
# "../../../sentinel" from the root is tmp_path/sentinel.
ESCAPES = [
    pytest.param(lambda t: add_file(t, "../escape"), "../escape", id="dotdot"),
    pytest.param(lambda t: add_file(t, "../../../sentinel", b"overwritten\n"),
                 "../../../sentinel", id="dotdot-onto-sentinel"),
    pytest.param(lambda t: add_file(t, "/abs-escape"), "/abs-escape", id="absolute"),
    pytest.param(lambda t: (add_symlink(t, "up", "../../.."),
                            add_file(t, "up/sentinel", b"overwritten\n")),
                 "up/sentinel", id="through-relative-symlink"),
    pytest.param(lambda t: (_add_hardlink(t, "hl", "../../../sentinel")),
                 "'hl' is a hardlink leaving the root", id="hardlink-outside"),
]


def _add_hardlink(tar: tarfile.TarFile, name: str, target: str) -> None:
    info = tarfile.TarInfo(name)
    info.type = tarfile.LNKTYPE
    info.linkname = target
    tar.addfile(info)


def _arch() -> str:
    machine = platform.machine().lower()
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(machine, machine)


@pytest.mark.parametrize(("fill", "entry"), ESCAPES)
def test_escaping_layer_is_refused(tmp_path: Path, registry: Registry, base_images: BaseImages,
                                   fill, entry: str) -> None:  # type: ignore[no-untyped-def]
    evil = layer_tar(fill)
    tag = f"e2e/evil:{abs(hash(entry)) % 10**8}"
    push_image(tmp_path / "layout", registry.ref(tag), [base_images.layer_tar, evil], _arch())
    sentinel = tmp_path / "sentinel"
    sentinel.write_text("original\n")
    work = tmp_path / "work"
    context = write_tree(tmp_path / "ctx", {"Dockerfile": (
        f"FROM {registry.ref(tag)}\nRUN echo must-not-run\n")})
    dest = registry.ref("e2e/evil-result:latest")
    result = build(context, "-d", dest, "--kanipy-dir", str(work))
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    message = result.stderr.strip().splitlines()[-1]
    assert entry.lstrip("/") in message or entry in message, message
    assert "layer sha256:" in message, message
    assert "must-not-run" not in result.stderr.replace("RUN echo must-not-run", "")
    assert sentinel.read_text() == "original\n"
    assert not (tmp_path / "escape").exists()
    assert not (work / "escape").exists()
    assert list(work.iterdir()) == [], "a failed build leaves nothing in --kanipy-dir"
    assert not Path("/abs-escape").exists()
    assert not tag_exists(dest)


def test_workdir_through_symlinks_stays_inside_the_root(
        tmp_path: Path, registry: Registry, base_images: BaseImages) -> None:
    """WORKDIR follows the image's own symlinks, resolved inside the root, never the host's."""
    marker = f"kanipy-e2e-pwned-{tmp_path.name}"
    context = write_tree(tmp_path / "ctx", {"Dockerfile": (
        f"FROM {base_images.oci}\n"
        "RUN mkdir /srv && ln -s /srv /link && ln -s ../../../../../../../.. /up"
        f" && ln -s /{marker}-abs /dangling\n"
        "WORKDIR /link/app\n"
        f"WORKDIR /up/tmp/{marker}\n"
        "WORKDIR /dangling/sub\n"
        "RUN pwd > /tmp/pwd\n"
    )})
    dest = registry.ref("e2e/workdir-symlinks:latest")
    build(context, "-d", dest).check()
    assert not Path(f"/tmp/{marker}").exists()
    assert not Path(f"/{marker}-abs").exists()
    rootfs = unpack_image(dest, tmp_path / "out")
    assert (rootfs / "srv/app").is_dir()
    assert (rootfs / "tmp" / marker).is_dir()
    assert (rootfs / f"{marker}-abs/sub").is_dir()
    assert (rootfs / "tmp/pwd").read_text() == f"/{marker}-abs/sub\n"
