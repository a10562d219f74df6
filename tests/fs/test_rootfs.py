"""Rootfs: image paths resolve inside the root, following the image's own symlinks."""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath

import pytest

from kanipy.errors import ConfinementError
from kanipy.fs.rootfs import Rootfs


@pytest.fixture()
def rootfs(tmp_path: Path) -> Rootfs:
    root = tmp_path / "root"
    (root / "usr" / "bin").mkdir(parents=True)
    (root / "run").mkdir()
    (root / "var").mkdir()
    os.symlink("usr/bin", root / "bin")
    os.symlink("/run", root / "var" / "run")  # absolute: relative to the root
    os.symlink("../../../../../etc", root / "var" / "climb")  # climbs above: clamped
    os.symlink("loop2", root / "loop1")
    os.symlink("loop1", root / "loop2")
    return Rootfs(root)


@pytest.mark.parametrize(
    ("image_path", "want"),
    [
        ("/bin/sh", "usr/bin/sh"),
        ("/var/run/x.pid", "run/x.pid"),
        ("/var/climb/passwd", "etc/passwd"),
        ("/../../etc/shadow", "etc/shadow"),
        ("usr/../usr/bin", "usr/bin"),
        ("/", ""),
    ],
    ids=["relative-link", "absolute-link", "link-climbing-above-root", "dotdot", "relative",
         "root"],
)
def test_resolve_stays_inside_root(rootfs: Rootfs, image_path: str, want: str) -> None:
    assert rootfs.resolve(image_path) == (rootfs.path / want if want else rootfs.path)


def test_resolve_final_component_not_followed(rootfs: Rootfs) -> None:
    assert rootfs.resolve("/bin", follow_final=False) == rootfs.path / "bin"
    assert rootfs.resolve_image_path("/var/run") == PurePosixPath("/run")


def test_symlink_loop_is_an_error(rootfs: Rootfs) -> None:
    with pytest.raises(ConfinementError, match="too many levels"):
        rootfs.resolve("/loop1/x")


def test_symlink_expansions_are_capped_like_the_kernel(
        rootfs: Rootfs, monkeypatch: pytest.MonkeyPatch) -> None:
    """40 links per lookup (Linux's MAXSYMLINKS), so one resolution through links
    that each add 800 components does a bounded number of lstat calls (issue 11)."""
    (rootfs.path / "d").mkdir()
    os.symlink("d/../" * 800 + "s", rootfs.path / "s")
    calls = 0
    real_lstat = os.lstat

    def counting_lstat(path: object) -> os.stat_result:
        nonlocal calls
        calls += 1
        return real_lstat(path)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "lstat", counting_lstat)
    with pytest.raises(ConfinementError, match="too many levels of symbolic links "
                                               "resolving /s/f"):
        rootfs.resolve("/s/f")
    assert calls <= 41 * 801


def test_strict_resolution_refuses_links_climbing_out(rootfs: Rootfs) -> None:
    with pytest.raises(ConfinementError, match="leads outside"):
        rootfs.resolve("/var/climb/passwd", escape_is_error=True)


def test_mkdirs_reports_created_dirs_through_symlinks(rootfs: Rootfs) -> None:
    created = rootfs.mkdirs("/var/run/app/data", uid=1000, gid=1000, mode=0o750)
    assert created == [PurePosixPath("/run/app"), PurePosixPath("/run/app/data")]
    st = rootfs.lstat("/var/run/app/data")
    assert (st.st_uid, st.st_gid, st.st_mode & 0o7777) == (1000, 1000, 0o750)
    assert rootfs.mkdirs("/run/app") == []
    assert rootfs.exists("/var/run/app")
    assert not rootfs.exists("/nope")


def test_mkdirs_refuses_a_file_in_the_way(rootfs: Rootfs) -> None:
    (rootfs.path / "usr" / "bin" / "sh").write_text("")
    with pytest.raises(NotADirectoryError):
        rootfs.mkdirs("/bin/sh/x")
