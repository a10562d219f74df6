"""A build's work directory, and the ones killed builds left behind.

A build removes its work directory when it ends, even on SIGTERM or SIGINT.
Only SIGKILL (or the OOM killer, or a power cut) leaves one behind: a root
file system and a blob store, often gigabytes, in ``$TMPDIR`` or
``--kanipy-dir``. On a CI runner that keeps its disk, these pile up until the
disk is full (issue 11: a killed build leaves nothing a later build could
trip over).

So each build holds an exclusive ``flock`` on a file in its work directory for
as long as it runs, and writes its pid there after taking the lock. The kernel
drops the lock when the process dies, however it dies. A later build removes a
sibling directory whose lock it can take and whose file names a pid: the
build that wrote it is gone. An empty file (a build between taking its lock
and writing it) or no file at all (not a kanipy work directory, or one being
made) is left alone, and so is anything not owned by this user or not private
(mode 0700, as ``mkdtemp`` makes it): in a shared ``/tmp`` another user's
directory is none of kanipy's business.

The removal runs on a background thread while the build works; the build
waits for it only before it exits, so no half-removed tree is left.
"""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
import stat
import threading
from pathlib import Path

log = logging.getLogger(__name__)

LOCK_NAME = ".kanipy-build.lock"


class WorkdirLock:
    """The lock a running build holds on its work directory."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / LOCK_NAME
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            os.write(fd, f"{os.getpid()}\n".encode())
        except BaseException:
            os.close(fd)
            raise
        self._fd: int | None = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def abandoned(parent: Path, prefix: str) -> list[Path]:
    """The directories named ``prefix*`` in ``parent`` that a killed build left."""
    found: list[Path] = []
    try:
        entries = list(os.scandir(parent))
    except OSError:
        return found
    uid = os.getuid()
    for entry in entries:
        if not entry.name.startswith(prefix):
            continue
        try:
            info = entry.stat(follow_symlinks=False)
        except OSError:
            continue
        if not stat.S_ISDIR(info.st_mode) or info.st_uid != uid or \
                stat.S_IMODE(info.st_mode) != 0o700:
            continue
        if _dead(Path(entry.path) / LOCK_NAME):
            found.append(Path(entry.path))
    return found


def _dead(lock: Path) -> bool:
    """Whether ``lock`` was written by a build that no longer holds it."""
    try:
        fd = os.open(lock, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return False
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            return False  # a running build holds it
        return os.read(fd, 32).strip().isdigit()
    finally:
        os.close(fd)


def sweep(parent: Path, prefix: str) -> threading.Thread | None:
    """Remove what killed builds left in ``parent``, on a daemon thread; the thread."""
    leftovers = abandoned(parent, prefix)
    if not leftovers:
        return None
    for path in leftovers:
        log.info("removing %s, left by a build that was killed", path)

    def remove() -> None:
        for path in leftovers:
            shutil.rmtree(path, ignore_errors=True)

    thread = threading.Thread(target=remove, name="kanipy-sweep", daemon=True)
    thread.start()
    return thread
