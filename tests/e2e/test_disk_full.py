"""A full disk at every stage of a build (issue 11): unpacking a base, writing a layer, the
--cache-dir store, the --tar-path archive, the OCI layout. Each ends with exit 1 and
"no space left on MOUNT (tmpfs) while WHAT", never a traceback, and leaves no
half-written output. The full filesystem is a 2 MB tmpfs mounted by the test."""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.build_support import add_file, layer_tar, push_image
from tests.e2e.helpers import build, write_tree
from tests.fixtures.registry import Registry
from tests.tools import small_tmpfs


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    with small_tmpfs(tmp_path / "small", "2m") as mount:
        yield mount


def _big_context(tmp_path: Path) -> Path:
    # Random bytes: the layer compresses no smaller than the 3 MB file.
    return write_tree(tmp_path / "ctx", {"Dockerfile": "FROM scratch\nCOPY big /big\n",
                                         "big": os.urandom(3_000_000)})


def _check_full(result_stderr: str, returncode: int, mount: Path, doing: str) -> None:
    assert returncode == 1, result_stderr
    assert f"no space left on {mount} (tmpfs) while {doing}" in result_stderr, result_stderr
    assert "Traceback" not in result_stderr and "internal error" not in result_stderr


def test_unpacking_a_base(tmp_path: Path, small_fs: Path, registry: Registry) -> None:
    # 3 MB of zeros: a few KB to download, 3 MB to unpack.
    base = push_image(tmp_path / "base", registry.ref("diskfull/zeros:v1"),
                      [layer_tar(lambda tar: add_file(tar, "zeros", b"\0" * 3_000_000))],
                      "amd64")
    context = write_tree(tmp_path / "ctx", {"Dockerfile": f"FROM {base}\n"})
    result = build(context, "--no-push", "--kanipy-dir", str(small_fs),
                   "--custom-platform", "linux/amd64")
    _check_full(result.stderr, result.returncode, small_fs, "unpacking layer sha256:")
    assert "needs about" in result.stderr
    assert [p.name for p in small_fs.iterdir() if p.name != "run-cache"] == []


def test_downloading_a_base(tmp_path: Path, small_fs: Path, registry: Registry) -> None:
    # 3 MB of random bytes: 3 MB to download before anything is unpacked.
    base = push_image(tmp_path / "base", registry.ref("diskfull/random:v1"),
                      [layer_tar(lambda tar: add_file(tar, "r", os.urandom(3_000_000)))],
                      "amd64")
    context = write_tree(tmp_path / "ctx", {"Dockerfile": f"FROM {base}\n"})
    result = build(context, "--no-push", "--kanipy-dir", str(small_fs),
                   "--custom-platform", "linux/amd64")
    _check_full(result.stderr, result.returncode, small_fs, "downloading blob sha256:")
    assert "diskfull/random (needs about 3 MB)" in result.stderr
    assert [p.name for p in small_fs.iterdir() if p.name != "run-cache"] == []


def test_building_a_stage(tmp_path: Path, small_fs: Path) -> None:
    result = build(_big_context(tmp_path), "--no-push", "--kanipy-dir", str(small_fs))
    _check_full(result.stderr, result.returncode, small_fs, "building stage 1")
    # What the stage had written when the 2 MB filled: the room it needs at least.
    assert "(its root and its layers) (needs about 2 MB)" in result.stderr, result.stderr
    assert [p.name for p in small_fs.iterdir() if p.name != "run-cache"] == []


def test_layer_write_into_the_cache_dir(tmp_path: Path, small_fs: Path) -> None:
    cache = small_fs / "cache"
    result = build(_big_context(tmp_path), "--no-push", "--cache-dir", str(cache))
    _check_full(result.stderr, result.returncode, small_fs, "building stage 1")
    # The root (elsewhere) grew by the 3 MB file; the layer's partial blob is gone.
    assert re.search(r"needs about [1-9][0-9]* MB", result.stderr), result.stderr
    assert list((cache / "blobs" / ".tmp").iterdir()) == [], "no partial blob is kept"


def test_tar_output(tmp_path: Path, small_fs: Path) -> None:
    tar = small_fs / "out" / "image.tar"
    result = build(_big_context(tmp_path), "--no-push", "--tar-path", str(tar))
    _check_full(result.stderr, result.returncode, small_fs,
                f"writing the --tar-path archive {tar}")
    assert "needs about 3 MB" in result.stderr
    assert list(small_fs.iterdir()) == [], "neither the archive nor a temporary file is left"


@pytest.mark.parametrize("existing", [False, True], ids=["new-layout", "existing-layout"])
def test_oci_layout(tmp_path: Path, small_fs: Path, existing: bool) -> None:
    layout = small_fs / "layout"
    if existing:
        small = write_tree(tmp_path / "small", {"Dockerfile": "FROM scratch\nCOPY a /a\n",
                                                "a": "a"})
        build(small, "--no-push", "--oci-layout-path", str(layout)).check()
        index_before = (layout / "index.json").read_bytes()
    result = build(_big_context(tmp_path), "--no-push", "--oci-layout-path", str(layout))
    _check_full(result.stderr, result.returncode, small_fs,
                f"writing the OCI layout {layout}")
    assert "needs about 3 MB" in result.stderr, result.stderr
    if existing:
        # Still the complete layout it was: the old index, every blob it names.
        assert (layout / "index.json").read_bytes() == index_before
        subprocess.run(["skopeo", "inspect", f"oci:{layout}:latest"], check=True,
                       capture_output=True)
    else:
        assert not layout.exists() or list(layout.iterdir()) == [], \
            "a layout is complete with its index.json or not written at all"
