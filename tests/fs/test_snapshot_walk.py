"""The snapshot walk made cheaper per entry (issue 14), attacked where it changed:
one descriptor per directory (never many at once), lstat through it, and the diff's
fast path for unchanged records."""

from __future__ import annotations

import os
import resource
from pathlib import Path

from kanipy.fs.snapshot import Changes, changes_for_paths, diff, take_snapshot


def test_a_wide_tree_is_walked_with_few_descriptors(tmp_path: Path) -> None:
    """300 sibling directories with a limit of 40 more open files than now: a walk
    that kept a descriptor per pending directory would fail with EMFILE."""
    for i in range(300):
        (tmp_path / "wide" / f"d{i:03d}" / "inner").mkdir(parents=True)
        (tmp_path / "wide" / f"d{i:03d}" / "inner" / "f").write_text(str(i))
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    in_use = len(os.listdir("/proc/self/fd"))
    resource.setrlimit(resource.RLIMIT_NOFILE, (in_use + 40, hard))
    try:
        snapshot = take_snapshot(tmp_path)
        changes = changes_for_paths(tmp_path, ["/wide"])
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert len(snapshot) == 1 + 300 * 3
    assert len(changes.added) == 1 + 300 * 3


def test_a_deep_rewrite_with_size_and_mtime_kept_is_found(tmp_path: Path) -> None:
    """A RUN that rewrites a file in place, same size, mtime put back, deep in a tree
    where nothing else moved (no directory's mtime changes): the file's ctime moved."""
    deep = tmp_path / "a" / "b" / "c" / "d"
    deep.mkdir(parents=True)
    for i in range(50):
        (deep / f"f{i}").write_text("same")
    before = take_snapshot(tmp_path)
    target = deep / "f17"
    st = os.lstat(target)
    dir_st = os.lstat(deep)
    target.write_text("diff")
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert os.lstat(deep).st_mtime_ns == dir_st.st_mtime_ns
    assert diff(before, take_snapshot(tmp_path)) == Changes(modified=("/a/b/c/d/f17",))


def test_symlinks_are_recorded_with_their_targets(tmp_path: Path) -> None:
    """Links are read through the directory's descriptor: a retarget to a target of the
    same length, with the link's times unchanged by a rename over it, is a change."""
    (tmp_path / "d").mkdir()
    os.symlink("aaaa", tmp_path / "d" / "l")
    before = take_snapshot(tmp_path)
    os.symlink("bbbb", tmp_path / "d" / "l.new")
    os.rename(tmp_path / "d" / "l.new", tmp_path / "d" / "l")
    after = take_snapshot(tmp_path)
    assert after.records["/d/l"].endswith(b"bbbb")
    assert "/d/l" in diff(before, after).modified
