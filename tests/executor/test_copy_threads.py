"""COPY of a tree with file threads (issue 14): the same files, modes, owners, times
and links as on one thread, nothing written through a link, errors as before.

Each copy runs three ways: one thread (``KANIPY_FILE_THREADS=1``), real file threads,
and a pool that runs queued files only when a result is waited for, newest first
(tests/fs/test_unpack_threads.py): a directory's metadata set before its files are
made, or a hardlink made before its target, shows there on every run.
"""

from __future__ import annotations

import errno
import os
import stat
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from kanipy.executor.handlers.copy_tree import Ownership, TreeWriter
from kanipy.executor.step import StepError
from kanipy.fs import workers
from kanipy.fs.rootfs import Rootfs
from tests.fs.test_unpack_threads import LatestFirstPool
from tests.tools import require_root, small_tmpfs

WAYS = ("serial", "threads", "latest-first")
MTIME = 1_500_000_000_000_000_000
SOURCE_OWNERS = Ownership(None, None)


def make_source(src: Path) -> None:
    """A tree with what a copy must keep: modes, owners, times, links, nesting."""
    for i in range(40):
        sub = src / f"d{i % 4}" / f"e{i % 3}"
        sub.mkdir(parents=True, exist_ok=True)
        (sub / f"f{i}").write_bytes(b"%d" % i * (i + 1))
        os.chmod(sub / f"f{i}", 0o600 + (i % 8))
        os.chown(sub / f"f{i}", 1000 + i, 2000 + i)
        os.utime(sub / f"f{i}", ns=(MTIME + i, MTIME + i))
    (src / "big").write_bytes(os.urandom(workers.MAX_FILE + 1))
    (src / "setuid").write_bytes(b"s")
    os.chmod(src / "setuid", 0o4755)
    (src / "linked").write_bytes(b"one inode")
    os.link(src / "linked", src / "d0" / "also-linked")
    os.symlink("../linked", src / "d1" / "sym")
    for dirpath, _, _ in os.walk(src):
        os.utime(dirpath, ns=(MTIME, MTIME))


def seen(root: Path) -> dict[str, tuple[object, ...]]:
    out: dict[str, tuple[object, ...]] = {}
    inodes: dict[int, str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in sorted(dirnames + filenames):
            path = Path(dirpath) / name
            st = os.lstat(path)
            rel = str(path.relative_to(root))
            body: object = None
            if stat.S_ISREG(st.st_mode):
                body = path.read_bytes()
            elif stat.S_ISLNK(st.st_mode):
                body = os.readlink(path)
            # Hardlinks show as the first path with the same inode.
            first = inodes.setdefault(st.st_ino, rel) if st.st_nlink > 1 else rel
            # The destination itself existed: its time is the copy's.
            mtime = None if rel == "dest" else st.st_mtime_ns
            out[rel] = (oct(st.st_mode), st.st_uid, st.st_gid, mtime, body, first)
    return out


def copy_three_ways(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                    prepare: Callable[[Path, Path], None] | None = None,
                    owner: Ownership = SOURCE_OWNERS, chmod: str | None = None
                    ) -> dict[str, object]:
    src = tmp_path / "src"
    if not src.exists():
        make_source(src)
    results: dict[str, object] = {}
    for way in WAYS:
        root = tmp_path / way / "root"
        (root / "dest").mkdir(parents=True)
        if prepare is not None:
            prepare(root, tmp_path / way)
        with monkeypatch.context() as patch:
            patch.setenv("KANIPY_FILE_THREADS", "1" if way == "serial" else "4")
            if way == "latest-first":
                patch.setattr(workers, "ThreadPoolExecutor", LatestFirstPool)
            writer = TreeWriter(Rootfs(root), owner, chmod)
            try:
                writer.copy_contents(src, root / "dest")
                results[way] = seen(root)
            except (StepError, OSError) as exc:
                results[way] = f"{type(exc).__name__}: {exc}".replace(str(tmp_path / way), "")
    return results


def test_a_tree_copies_the_same_on_threads(tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    require_root()
    LatestFirstPool.submitted = 0
    results = copy_three_ways(tmp_path, monkeypatch)
    assert LatestFirstPool.submitted > 40
    assert results["threads"] == results["serial"]
    assert results["latest-first"] == results["serial"]
    copied = results["serial"]
    assert isinstance(copied, dict)
    assert copied["dest/d0"][3] == MTIME  # a directory's time, set after its files
    assert copied["dest/d0/also-linked"][5] == "dest/linked"  # still one inode
    assert copied["dest/setuid"][0] == "0o104755"
    assert copied["dest/d1/e1/f1"][:3] == ("0o100601", 1001, 2001)


def test_chown_and_chmod_apply_on_threads(tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    require_root()
    results = copy_three_ways(tmp_path, monkeypatch, owner=Ownership(7, 8), chmod="go-rwx")
    assert results["threads"] == results["serial"]
    assert results["latest-first"] == results["serial"]
    copied = results["serial"]
    assert isinstance(copied, dict)
    assert copied["dest/d2/e2/f2"][:3] == ("0o100600", 7, 8)


def test_a_link_in_the_way_is_replaced_never_followed(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Links planted where copied files go point outside the root: the copy replaces them
    and nothing outside changes."""
    require_root()

    def plant(root: Path, top: Path) -> None:
        (top / "outside").mkdir()
        for rel in ("dest/linked", "dest/d0/e0/f0", "dest/d1/e1/f25"):
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            os.symlink(top / "outside" / "victim", root / rel)

    results = copy_three_ways(tmp_path, monkeypatch, prepare=plant)
    for way in WAYS:
        assert os.listdir(tmp_path / way / "outside") == [], way
    assert results["threads"] == results["serial"]
    assert results["latest-first"] == results["serial"]
    copied = results["serial"]
    assert isinstance(copied, dict)
    assert copied["dest/d0/e0/f0"][4] == b"0"


def test_a_directory_in_the_way_is_the_same_error(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    require_root()

    def block(root: Path, top: Path) -> None:
        (root / "dest/d0/e2/f32").mkdir(parents=True)

    results = copy_three_ways(tmp_path, monkeypatch, prepare=block)
    assert results["serial"] == ("StepError: cannot replace the directory /dest/d0/e2/f32 "
                                 "with a file")
    assert results["threads"] == results["serial"]
    assert results["latest-first"] == results["serial"]


def test_a_full_disk_on_a_file_thread_raises_as_on_one(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    require_root()
    monkeypatch.setenv("KANIPY_FILE_THREADS", "4")
    src = tmp_path / "src"
    src.mkdir()
    for i in range(200):
        (src / f"f{i:03d}").write_bytes(os.urandom(16 << 10))
    with small_tmpfs(tmp_path / "tiny", "1m") as mount:
        (mount / "dest").mkdir()
        with pytest.raises(OSError) as caught:
            TreeWriter(Rootfs(mount), Ownership(None, None), None).copy_contents(
                src, mount / "dest")
        assert [t for t in threading.enumerate() if t.name.startswith("kanipy-files")] == []
    assert caught.value.errno == errno.ENOSPC
