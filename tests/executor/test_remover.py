"""The work directory's removal: in the build, or by a detached process after it (issue 14),
with issue 11's promises kept: the lock held until the tree is empty and removed last, no
symlink followed out of the tree, no other mount entered."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kanipy.executor import remover
from kanipy.executor.remover import LOCK_NAME, remove_tree
from kanipy.executor.workdirs import WorkdirLock, abandoned


def _tree(path: Path, files: int = 50) -> Path:
    path.mkdir(mode=0o700)
    for d in range(max(1, files // 10)):
        sub = path / "root" / f"d{d}"
        sub.mkdir(parents=True)
        for f in range(10):
            (sub / f"f{f}").write_bytes(b"x")
    return path


def _wait_gone(path: Path, seconds: float = 120) -> None:
    """Poll (bounded) for a detached remover's end: the test asserts the outcome, not
    how long it took."""
    deadline = time.monotonic() + seconds
    while path.exists() and time.monotonic() < deadline:
        time.sleep(0.05)


def test_symlinks_are_removed_never_followed(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "sentinel").write_text("keep\n")
    tree = _tree(tmp_path / "tree")
    (tree / "root" / "to-dir").symlink_to(outside)
    (tree / "root" / "to-file").symlink_to(outside / "sentinel")
    (tree / "root" / "d0" / "up").symlink_to("../../..")
    assert remove_tree(tree) is True
    assert not tree.exists()
    assert (outside / "sentinel").read_text() == "keep\n"


@pytest.mark.parametrize("kind", ["tmpfs", "bind-same-fs"])
def test_another_mount_inside_the_tree_is_left_whole(tmp_path: Path, kind: str) -> None:
    """A file system mounted in the tree (a bind mount from the same disk included, which
    st_dev alone would not tell) keeps its files; everything else goes."""
    if os.geteuid() != 0:
        pytest.skip("mounting needs root")
    source = tmp_path / "source"
    source.mkdir()
    tree = _tree(tmp_path / "tree")
    point = tree / "root" / "d0" / "mnt"
    point.mkdir()
    if kind == "tmpfs":
        subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(point)], check=True)
    else:
        subprocess.run(["mount", "--bind", str(source), str(point)], check=True)
    try:
        (point / "sentinel").write_text("keep\n")
        assert remove_tree(tree) is False  # not all of it: the mount point stays
        assert (point / "sentinel").read_text() == "keep\n"
        left = sorted(str(p.relative_to(tree)) for p in tree.rglob("*")
                      if not str(p).startswith(str(point) + "/"))
        assert left == ["root", "root/d0", "root/d0/mnt"]
    finally:
        subprocess.run(["umount", str(point)], check=True)
    assert remove_tree(tree) is True


def test_the_lock_file_goes_last_and_a_stopped_removal_is_swept_later(tmp_path: Path) -> None:
    """A removal cut short (a killed remover) leaves the lock file and the pid in it, so a
    later build's sweep recognises the directory as abandoned and finishes it."""
    tree = _tree(tmp_path / "kanipy-x", files=200)
    (tree / LOCK_NAME).write_text("12345\n")
    asked = 0

    def stop_half_way() -> bool:
        nonlocal asked
        asked += 1
        return asked > 100

    assert remove_tree(tree, last=LOCK_NAME, stop=stop_half_way) is False
    assert (tree / LOCK_NAME).read_text() == "12345\n"
    assert 0 < sum(1 for _ in tree.rglob("f*")) < 200
    assert abandoned(tmp_path, "kanipy-") == [tree]
    remover.sweep_now(str(tmp_path), "kanipy-")
    assert not tree.exists()


def test_a_deep_tree_is_removed(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    tree.mkdir()
    fd = os.open(tree, os.O_RDONLY | os.O_DIRECTORY)
    for _ in range(1500):  # deeper than Python's recursion limit
        os.mkdir("d", dir_fd=fd)
        child = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
        os.close(fd)
        fd = child
    os.close(os.open("f", os.O_CREAT | os.O_WRONLY, dir_fd=fd))
    os.close(fd)
    assert remove_tree(tree) is True
    assert not tree.exists()


def _fd_targets(pid: int) -> dict[int, str]:
    found = {}
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            found[int(fd)] = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            pass
    return found


def test_the_lock_passes_to_the_detached_remover_with_nothing_else(tmp_path: Path) -> None:
    """The remover holds the build's lock from the moment it exists (no other build can
    take the directory while files remain), in a session of its own, with /dev/null as
    its stdio and no other descriptor of the build (a pipe held would make whoever reads
    kanipy's output wait for the removal)."""
    tree = _tree(tmp_path / "kanipy-mine", files=5_000)
    lock = WorkdirLock(tree)
    read_end, write_end = os.pipe()  # a descriptor of "kanipy's" that must not leak
    try:
        pid = lock.hand_over(tmp_path, "kanipy-")
        assert pid is not None
        os.kill(pid, signal.SIGSTOP)
        try:
            assert os.getsid(pid) == pid
            fds = _fd_targets(pid)
            assert all(fds[fd] == "/dev/null" for fd in (0, 1, 2)), fds
            assert not [t for t in fds.values() if t.startswith(("pipe:", "socket:"))], fds
            if tree.exists():  # the usual case: 5,000 files take a while
                assert abandoned(tmp_path, "kanipy-") == [], "the lock was free meanwhile"
        finally:
            os.kill(pid, signal.SIGCONT)
        _wait_gone(tree)
        assert not tree.exists()
    finally:
        os.close(read_end)
        os.close(write_end)


def test_the_remover_removes_only_the_tree_its_lock_is_in(tmp_path: Path) -> None:
    mine = _tree(tmp_path / "kanipy-mine")
    other = _tree(tmp_path / "kanipy-other")
    lock = WorkdirLock(mine)
    assert lock._fd is not None
    result = subprocess.run(
        [sys.executable, "-I", "-S", remover.__file__, str(lock._fd), str(other)],
        pass_fds=(lock._fd,), check=False)
    assert result.returncode == 1
    assert sum(1 for _ in other.rglob("f*")) == 50 and mine.exists()
    lock.release()


def test_the_remover_finishes_what_killed_builds_left(tmp_path: Path) -> None:
    mine = _tree(tmp_path / "kanipy-mine")
    killed = _tree(tmp_path / "kanipy-killed")
    (killed / LOCK_NAME).write_text("999999\n")
    lock = WorkdirLock(mine)
    pid = lock.hand_over(tmp_path, "kanipy-")
    assert pid is not None
    _wait_gone(mine)
    _wait_gone(killed)
    assert sorted(p.name for p in tmp_path.iterdir()) == []
