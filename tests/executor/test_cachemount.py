"""RUN cache mounts shared by builds at once: BuildKit's sharing modes, with real processes."""

from __future__ import annotations

import multiprocessing
import os
import time
from contextlib import ExitStack
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Event
from pathlib import Path

import pytest

from kanipy.executor.cachemount import (
    CacheMountRequest,
    cache_dir_name,
    open_cache_dirs,
)

_CTX = multiprocessing.get_context("spawn")


def _hold(root: str, requests: list[CacheMountRequest], got: Queue[list[str]],
          release: Event) -> None:
    """Open the caches, report their directories, keep them until ``release``."""
    with ExitStack() as held:
        dirs = open_cache_dirs(requests, Path(root), held)
        got.put([str(d) for d in dirs])
        release.wait(30)


def _start(root: Path, requests: list[CacheMountRequest]) -> tuple[
        multiprocessing.process.BaseProcess, Queue[list[str]], Event]:
    got: Queue[list[str]] = _CTX.Queue()
    release = _CTX.Event()
    process = _CTX.Process(target=_hold, args=(str(root), requests, got, release))
    process.start()
    return process, got, release


def _finish(*holders: tuple[multiprocessing.process.BaseProcess, Queue[list[str]], Event]
            ) -> None:
    for _, _, release in holders:
        release.set()
    for process, _, _ in holders:
        process.join(20)
        if process.is_alive():
            process.kill()


def test_shared_caches_are_used_at_once(tmp_path: Path) -> None:
    request = CacheMountRequest("/root/.cache/pip")
    a = _start(tmp_path, [request])
    b = _start(tmp_path, [request])
    try:
        assert a[1].get(timeout=20) == b[1].get(timeout=20)
    finally:
        _finish(a, b)


def test_locked_waits_for_the_first_user(tmp_path: Path) -> None:
    request = CacheMountRequest("apt", sharing="locked")
    a = _start(tmp_path, [request])
    try:
        first = a[1].get(timeout=20)
        b = _start(tmp_path, [request])
        try:
            time.sleep(0.5)
            assert b[1].empty(), "a second user of a locked cache did not wait"
            a[2].set()
            assert b[1].get(timeout=20) == first
        finally:
            _finish(b)
    finally:
        _finish(a)


def test_private_gives_a_second_user_its_own_directory(tmp_path: Path) -> None:
    request = CacheMountRequest("go-build", sharing="private", mode=0o700)
    a = _start(tmp_path, [request])
    try:
        [first] = a[1].get(timeout=20)
        b = _start(tmp_path, [request])
        try:
            [second] = b[1].get(timeout=20)
        finally:
            _finish(b)
    finally:
        _finish(a)
    assert first != second
    assert Path(second).name == f"{cache_dir_name('go-build')}.1"
    assert Path(second).stat().st_mode & 0o777 == 0o700


def test_two_builds_locking_two_caches_in_opposite_orders_do_not_deadlock(
    tmp_path: Path,
) -> None:
    x = CacheMountRequest("x", sharing="locked")
    y = CacheMountRequest("y", sharing="locked")
    for _ in range(3):
        a = _start(tmp_path, [x, y])
        b = _start(tmp_path, [y, x])
        try:
            # Whichever got both caches first lets them go; then the other gets them.
            got: dict[int, list[str]] = {}
            deadline = time.monotonic() + 20
            while len(got) < 2 and time.monotonic() < deadline:
                for i, holder in enumerate((a, b)):
                    if i not in got and not holder[1].empty():
                        got[i] = holder[1].get()
                        holder[2].set()
                time.sleep(0.01)
        finally:
            _finish(a, b)
        assert len(got) == 2, "deadlocked"
        assert got[0] == list(reversed(got[1]))


def test_a_cache_mounted_twice_by_one_step_is_locked_once(tmp_path: Path) -> None:
    requests = [CacheMountRequest("dup", sharing="locked"),
                CacheMountRequest("dup", sharing="shared")]
    a = _start(tmp_path, requests)
    try:
        first, second = a[1].get(timeout=10)
    finally:
        _finish(a)
    assert first == second


def test_a_private_and_a_shared_mount_of_one_cache_in_one_step(tmp_path: Path) -> None:
    with ExitStack() as held:
        shared, private = open_cache_dirs(
            [CacheMountRequest("c"), CacheMountRequest("c", sharing="private")], tmp_path,
            held)
    assert shared != private


@pytest.mark.parametrize("processes", [8], ids=["8-builds"])
def test_builds_making_one_new_cache_at_once_share_one_directory(
    tmp_path: Path, processes: int,
) -> None:
    request = CacheMountRequest("new", uid=os.getuid(), gid=os.getgid(), mode=0o750)
    holders = [_start(tmp_path, [request]) for _ in range(processes)]
    try:
        dirs = {h[1].get(timeout=30)[0] for h in holders}
        # While every build holds it, each one's directory is the one its name gives.
        inodes = {os.stat(d).st_ino for d in dirs}
    finally:
        _finish(*holders)
    assert len(dirs) == 1 and len(inodes) == 1
    directory = Path(dirs.pop())
    assert directory.stat().st_mode & 0o777 == 0o750
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".new-")] == []


def test_an_unknown_sharing_mode_is_refused(tmp_path: Path) -> None:
    with ExitStack() as held, pytest.raises(ValueError, match="sharing 'exclusive'"):
        open_cache_dirs([CacheMountRequest("c", sharing="exclusive")], tmp_path, held)
