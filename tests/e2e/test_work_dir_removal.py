"""A successful build exits without waiting for its work directory to go (issue 14).

A detached process removes it, holding the build's lock, and a later build finishes
what a killed remover left (issue 11). ``--cleanup`` removes before kanipy exits.
Waits here are bounded polls for the remover: what is asserted is what is left.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from kanipy.executor.workdirs import LOCK_NAME, abandoned
from tests.e2e.helpers import build, write_tree
from tests.fixtures.images import BaseImages

# 20,000 files in the root: seconds of unlinks on this disk, against milliseconds from
# the hand-over to kanipy's exit.
MANY_FILES = ("RUN mkdir /many && cd /many && for i in $(seq 1 200); do mkdir $i && "
              "(cd $i && seq 1 100 | xargs touch); done\n")


def _left(work: Path) -> list[str]:
    return sorted(p.name for p in work.iterdir() if p.name != "run-cache")


def _wait_for(check: object, seconds: float = 180) -> None:
    deadline = time.monotonic() + seconds
    while not check() and time.monotonic() < deadline:  # type: ignore[operator]
        time.sleep(0.1)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _remover_named_in(lock: Path) -> int | None:
    """The pid in ``lock`` if it is a live remover's."""
    try:
        pid = int(lock.read_text())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError):
        return None
    return pid if _alive(pid) and b"remover.py" in cmdline else None


def test_a_build_exits_while_its_remover_works_and_a_killed_remover_is_swept(
        tmp_path: Path, base_images: BaseImages) -> None:
    context = write_tree(tmp_path / "ctx", {"Dockerfile": f"FROM {base_images.oci}\n"
                                                          + MANY_FILES})
    work = tmp_path / "work"
    work.mkdir()
    (work / "keep").write_text("the user's\n")  # --kanipy-dir is the user's: it stays
    build(context, "--no-push", "--kanipy-dir", str(work)).check()
    # kanipy has exited; its build directory is still there, locked by the remover.
    left = [p for p in work.iterdir() if p.name.startswith("build-")]
    assert len(left) == 1, "the tree is removed after the build, not before it exits"
    # The lock names kanipy's pid until the remover, starting, writes its own (under
    # load that can be after kanipy has exited; the flock is held all along).
    _wait_for(lambda: _remover_named_in(left[0] / LOCK_NAME) is not None, 60)
    pid = _remover_named_in(left[0] / LOCK_NAME)
    assert pid is not None, "the lock never named a live remover"
    assert abandoned(work, "build-") == [], "the remover holds the build's lock"
    # Killed half-way: what is left is recognisably abandoned, lock file and all...
    os.kill(pid, signal.SIGKILL)
    _wait_for(lambda: not _alive(pid))
    assert abandoned(work, "build-") == left
    assert list(left[0].rglob("*")), "the remover was killed before it had finished"
    # ... and the next build (or its own remover) removes it.
    quick = write_tree(tmp_path / "ctx2", {"Dockerfile": f"FROM {base_images.oci}\nENV A=1\n"})
    build(quick, "--no-push", "--kanipy-dir", str(work)).check()
    _wait_for(lambda: _left(work) == ["keep"])
    assert _left(work) == ["keep"]
    assert (work / "keep").read_text() == "the user's\n"


def test_cleanup_removes_before_kanipy_exits(tmp_path: Path, base_images: BaseImages) -> None:
    """Kaniko's --cleanup (and KANIKO_CLEANUP): the space is back when the command returns,
    for several builds in one container."""
    context = write_tree(tmp_path / "ctx", {"Dockerfile": f"FROM {base_images.oci}\n"
                                                          + MANY_FILES})
    work = tmp_path / "work"
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    build(context, "--no-push", "--kanipy-dir", str(work), "--cleanup").check()
    assert _left(work) == []
    build(context, "--no-push", env={"TMPDIR": str(scratch), "KANIKO_CLEANUP": "true"}).check()
    assert list(scratch.iterdir()) == []


def test_a_work_directory_kanipy_made_goes_whole(tmp_path: Path,
                                                 base_images: BaseImages) -> None:
    context = write_tree(tmp_path / "ctx", {"Dockerfile": f"FROM {base_images.oci}\nENV A=1\n"})
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    build(context, "--no-push", env={"TMPDIR": str(scratch)}).check()
    _wait_for(lambda: list(scratch.iterdir()) == [])
    assert list(scratch.iterdir()) == []
