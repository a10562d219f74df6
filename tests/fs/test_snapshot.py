"""Snapshots: every kind of change found from lstat records alone."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from kanipy.fs.snapshot import Changes, changes_for_paths, diff, take_snapshot


def base_tree(root: Path) -> None:
    (root / "etc").mkdir(parents=True)
    (root / "etc/conf").write_text("a=1\n")
    (root / "dir/sub").mkdir(parents=True)
    (root / "dir/sub/deep").write_text("x")
    (root / "dir/file").write_text("y")
    (root / "plain").write_text("p")
    os.symlink("etc", root / "link")
    (root / "proc").mkdir()


def rewrite_keeping_mtime(root: Path) -> None:
    path = root / "etc/conf"
    st = os.lstat(path)
    path.write_text("a=2\n")  # same size
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def scaffolding(root: Path) -> None:
    st = os.lstat(root / "etc")
    (root / "etc/resolv.conf").write_text("nameserver 1.1.1.1\n")
    (root / "etc/resolv.conf").unlink()
    os.utime(root / "etc", ns=(st.st_atime_ns, st.st_mtime_ns))


CASES: dict[str, tuple[Callable[[Path], object], Changes]] = {
    "nothing": (lambda r: None, Changes()),
    "add-file": (lambda r: (r / "etc/new").write_text("n"), Changes(
        added=("/etc/new",), modified=("/etc",))),
    "rewrite-same-size-same-mtime": (rewrite_keeping_mtime, Changes(modified=("/etc/conf",))),
    "chmod": (lambda r: os.chmod(r / "plain", 0o600), Changes(modified=("/plain",))),
    "chown": (lambda r: os.chown(r / "plain", 1000, 1000), Changes(modified=("/plain",))),
    "delete-file": (lambda r: (r / "plain").unlink(), Changes(deleted=("/plain",))),
    "delete-dir": (lambda r: shutil.rmtree(r / "dir"), Changes(deleted=("/dir",))),
    "dir-to-file": (
        lambda r: (shutil.rmtree(r / "dir"), (r / "dir").write_text("f")),
        Changes(modified=("/dir",)),
    ),
    "file-to-dir": (
        lambda r: ((r / "plain").unlink(), (r / "plain").mkdir()),
        Changes(modified=("/plain",)),
    ),
    "symlink-to-dir": (
        lambda r: ((r / "link").unlink(), (r / "link").mkdir(), (r / "link/f").write_text("")),
        Changes(added=("/link/f",), modified=("/link",)),
    ),
    "dir-to-symlink": (
        lambda r: (shutil.rmtree(r / "dir"), os.symlink("etc", r / "dir")),
        Changes(modified=("/dir",)),
    ),
    "retarget-symlink": (
        lambda r: ((r / "link").unlink(), os.symlink("plain", r / "link")),
        Changes(modified=("/link",)),
    ),
    "scaffolding-removed-with-mtime-restored": (scaffolding, Changes()),
    "excluded-mount-point": (lambda r: (r / "proc/1").mkdir(), Changes()),
}


@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_diff_finds_each_change(tmp_path: Path, case: str) -> None:
    root = tmp_path / "root"
    base_tree(root)
    before = take_snapshot(root, exclude={"/proc"})
    change, want = CASES[case]
    change(root)
    got = diff(before, take_snapshot(root, exclude={"/proc"}))
    assert got == want


def test_deleting_a_child_of_a_replaced_dir_needs_no_whiteout(tmp_path: Path) -> None:
    root = tmp_path / "root"
    base_tree(root)
    before = take_snapshot(root)
    shutil.rmtree(root / "dir")
    (root / "dir").mkdir()
    got = diff(before, take_snapshot(root))
    # A new directory in the same place: its old children each need a whiteout.
    assert got.deleted == ("/dir/file", "/dir/sub")


def test_excluded_paths_are_never_descended(tmp_path: Path) -> None:
    root = tmp_path / "root"
    base_tree(root)
    (root / "proc/self").mkdir()
    snap = take_snapshot(root, exclude={"/proc", "etc/conf"})
    assert "/proc" not in snap.records and "/proc/self" not in snap.records
    assert "/etc/conf" not in snap.records and "/etc" in snap.records


def test_changes_for_paths_takes_subtrees_and_parents(tmp_path: Path) -> None:
    root = tmp_path / "root"
    base_tree(root)
    (root / "app/src/pkg").mkdir(parents=True)
    (root / "app/src/pkg/mod.py").write_text("")
    got = changes_for_paths(root, ["/app/src", "/etc/conf", "/missing"])
    assert got.added == ("/app", "/app/src", "/app/src/pkg", "/app/src/pkg/mod.py", "/etc",
                         "/etc/conf")
    assert got.present == got.added and not got.deleted


def test_changes_for_paths_leaves_out_paths_under_an_excluded_one(tmp_path: Path) -> None:
    """--ignore-path /ignored: a COPY into it, or of a tree holding it, archives nothing
    of it, not even the ignored directory as a parent."""
    root = tmp_path / "root"
    base_tree(root)
    (root / "ignored/sub").mkdir(parents=True)
    (root / "ignored/sub/file").write_text("")
    (root / "app").mkdir()
    (root / "app/file").write_text("")
    got = changes_for_paths(root, ["/ignored/sub/file", "/app"], exclude={"/ignored"})
    assert got.added == ("/app", "/app/file")
    whole = changes_for_paths(root, ["/"], exclude={"/ignored", "/proc"})
    assert "/app/file" in whole.added
    assert not [p for p in whole.added if p.startswith(("/ignored", "/proc"))]


def test_paths_mounted_over_during_a_step_are_not_deleted(tmp_path: Path) -> None:
    """A RUN --mount target that already held files in the image: the snapshot after
    the step skips it, and the diff must not turn its contents into whiteouts."""
    base_tree(tmp_path)
    before = take_snapshot(tmp_path)
    (tmp_path / "plain").write_text("changed")
    mounted = frozenset({"/dir/sub"})
    after = take_snapshot(tmp_path, mounted)
    changes = diff(before, after, mounted)
    assert changes.deleted == ()
    assert changes.modified == ("/plain",)
    assert diff(before, after).deleted == ("/dir/sub",), "without ignore it looks deleted"
