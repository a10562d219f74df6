"""What a killed build left is found and removed; nothing a live build or another
user owns is touched (issue 11)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from kanipy.executor.workdirs import LOCK_NAME, WorkdirLock, abandoned, sweep

# A child process that takes a build's lock the way a build does, then sleeps.
_HOLD = (
    "import sys, time; from pathlib import Path\n"
    "from kanipy.executor.workdirs import WorkdirLock\n"
    "WorkdirLock(Path(sys.argv[1])); print('locked', flush=True); time.sleep(60)\n"
)


def _workdir(parent: Path, name: str) -> Path:
    path = parent / name
    path.mkdir(mode=0o700)
    (path / "rootfs").mkdir()
    (path / "rootfs" / "big").write_bytes(b"x" * 1024)
    return path


def _hold(directory: Path) -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, "-c", _HOLD, str(directory)],
                            stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(Path.cwd())})
    assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
    return proc


def test_a_killed_builds_directory_is_found_and_a_live_ones_is_not(tmp_path: Path) -> None:
    live = _workdir(tmp_path, "kanipy-live")
    killed = _workdir(tmp_path, "kanipy-killed")
    holders = [_hold(live), _hold(killed)]
    try:
        assert abandoned(tmp_path, "kanipy-") == []
        holders[1].send_signal(signal.SIGKILL)
        holders[1].wait()
        assert abandoned(tmp_path, "kanipy-") == [killed]
        thread = sweep(tmp_path, "kanipy-")
        assert thread is not None
        thread.join(10)
        assert not killed.exists()
        assert (live / "rootfs" / "big").exists(), "a running build's files are never removed"
    finally:
        for proc in holders:
            proc.kill()
            proc.wait()


def test_what_is_not_clearly_a_dead_build_is_left_alone(tmp_path: Path) -> None:
    no_lock = _workdir(tmp_path, "kanipy-nolock")  # being made, or not kanipy's
    empty_lock = _workdir(tmp_path, "kanipy-empty")  # locked but no pid written yet
    (empty_lock / LOCK_NAME).write_text("")
    shared = _workdir(tmp_path, "kanipy-shared")  # not private: not made by mkdtemp
    shared.chmod(0o755)
    (shared / LOCK_NAME).write_text("123\n")
    other = _workdir(tmp_path, "other-name")
    (other / LOCK_NAME).write_text("123\n")
    link_lock = _workdir(tmp_path, "kanipy-link")
    (tmp_path / "target").write_text("123\n")
    (link_lock / LOCK_NAME).symlink_to(tmp_path / "target")
    assert abandoned(tmp_path, "kanipy-") == []
    assert sweep(tmp_path, "kanipy-") is None
    for path in (no_lock, empty_lock, shared, other, link_lock):
        assert (path / "rootfs" / "big").exists()


def test_another_users_directory_is_left_alone(tmp_path: Path) -> None:
    theirs = _workdir(tmp_path, "kanipy-theirs")
    (theirs / LOCK_NAME).write_text("123\n")
    os.chown(theirs, 4242, 4242)
    assert abandoned(tmp_path, "kanipy-") == []


def test_a_released_lock_marks_the_directory_abandoned(tmp_path: Path) -> None:
    directory = _workdir(tmp_path, "build-x")
    lock = WorkdirLock(directory)
    assert abandoned(tmp_path, "build-") == []
    lock.release()
    assert abandoned(tmp_path, "build-") == [directory]
    assert (directory / LOCK_NAME).read_text().strip() == str(os.getpid())
