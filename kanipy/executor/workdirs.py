"""A build's work directory, and the ones killed builds left behind.

A build's work directory is removed when it ends, even on SIGTERM or SIGINT.
Only SIGKILL (or the OOM killer, a power cut, or the end of the container's
init while the detached remover below works) leaves one behind: a root
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

The stage roots are removed on a background thread while the image is
pushed. A successful build then hands the rest of its tree, and its lock, to a
detached process (``executor/remover.py``) and exits without waiting for it
(issue 14); a failed or stopped build, or one given ``--cleanup``, removes it
before it exits. Whoever removes holds the lock until the tree is empty and
removes the lock file last, so a removal cut short by a kill is finished by
a later build.
"""

from __future__ import annotations

import fcntl
import logging
import os
import subprocess
import sys
import threading
from pathlib import Path

from kanipy.executor import remover
from kanipy.executor.remover import LOCK_NAME

log = logging.getLogger(__name__)

__all__ = ["LOCK_NAME", "Sweep", "WorkdirLock", "abandoned", "sweep"]


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

    def hand_over(self, sweep_parent: Path, prefix: str) -> int | None:
        """Give the directory's removal, and the lock with it, to a detached process.

        The process gets the locked descriptor itself, so the lock is never free
        while files remain; it starts a session of its own (a Ctrl-C at the
        terminal or a signal to kanipy's process group does not reach it) with
        nothing of kanipy's open but that descriptor, and after the tree it
        sweeps ``sweep_parent`` for ``prefix*`` directories killed builds left.
        Its pid, or None when it could not be started (the caller removes).
        """
        if self._fd is None or not sys.executable:
            return None
        tree = self.path.parent
        try:
            proc = subprocess.Popen(
                [sys.executable, "-I", "-S", remover.__file__, str(self._fd),
                 os.fsencode(tree), os.fsencode(sweep_parent), os.fsencode(prefix)],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL, pass_fds=(self._fd,), close_fds=True,
                start_new_session=True, cwd="/", env={})
        except OSError as exc:
            log.debug("could not start the work directory's remover: %s", exc)
            return None
        # In a process that lives on (the Python API), the remover is reaped when it
        # ends; the command exits first and leaves it to init.
        threading.Thread(target=proc.wait, name="kanipy-remover-wait", daemon=True).start()
        log.debug("removing %s in process %d", tree, proc.pid)
        self.release()
        return proc.pid

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def abandoned(parent: Path, prefix: str) -> list[Path]:
    """The directories named ``prefix*`` in ``parent`` that a killed build left."""
    found: list[Path] = []
    for path in remover.abandoned_names(str(parent), prefix):
        fd = remover.take_abandoned(path)
        if fd is not None:
            os.close(fd)
            found.append(Path(path))
    return found


class Sweep:
    """The removal of what killed builds left, on a daemon thread."""

    def __init__(self, parent: Path, prefix: str) -> None:
        self._stopping = threading.Event()
        self._thread = threading.Thread(
            target=remover.sweep_now, args=(str(parent), prefix, self._stopping.is_set),
            name="kanipy-sweep", daemon=True)
        self._thread.start()

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)

    def stop(self) -> None:
        """End the sweep at its next entry; what is left stays locked-last for the next."""
        self._stopping.set()
        self._thread.join()


def sweep(parent: Path, prefix: str) -> Sweep | None:
    """Remove what killed builds left in ``parent``, on a daemon thread; None if nothing."""
    leftovers = abandoned(parent, prefix)
    if not leftovers:
        return None
    for path in leftovers:
        log.info("removing %s, left by a build that was killed", path)
    return Sweep(parent, prefix)
