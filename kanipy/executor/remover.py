"""Removing a build's work directory, in the build or in a process that outlives it.

A large root costs one unlink per file (100,000 files: 4-45 s on an ext4 CI
disk), and a successful build has nothing left to do but wait for it. Peers
do not wait: Kaniko's container is thrown away, buildah keeps its storage. So
a successful build hands its tree to a detached process running this file as
a script (``python -I -S remover.py LOCK_FD TREE [PARENT PREFIX]``) and exits
(issue 14); failed and stopped builds, and ``--cleanup``, remove in the build.

Issue 11's promises hold whoever removes (``executor/workdirs.py``): the tree's
lock is held until the tree is empty, so no other build's sweep takes it while
files remain; the lock file goes last, so a remover killed half-way leaves a
directory that a later build's sweep recognises as abandoned; no symlink is
followed (every entry is reached through its directory's descriptor, opened
``O_NOFOLLOW``); and nothing on another mount is touched, so a file system
mounted inside the tree keeps its files.

As a script this module imports only what the interpreter has loaded anyway
and ``fcntl``: it starts in about 20 ms and needs no kanipy package on its path.
"""

from __future__ import annotations

import fcntl
import os
import stat
import sys

TYPE_CHECKING = False  # not ``typing``'s: the script imports as little as it can
if TYPE_CHECKING:
    from collections.abc import Callable

LOCK_NAME = ".kanipy-build.lock"
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def remove_tree(path: str | os.PathLike[str], last: str | None = None,
                stop: Callable[[], bool] | None = None) -> bool:
    """Remove ``path`` and everything under it on its own mount; whether it is gone.

    ``last``: a name directly in ``path`` removed only once everything else is
    (the lock file). ``stop``: asked between entries; when it says so the removal
    ends where it is, ``last`` kept. Nothing raises for an entry that cannot be
    removed (a mount point, an immutable file): it stays, and so do its parents.
    """
    try:
        top = os.open(path, _DIR_FLAGS)
    except FileNotFoundError:
        return True
    except OSError:
        return False
    try:
        if not _clear(top, last, stop):
            return False
        if last is not None:
            try:
                os.unlink(last, dir_fd=top)
            except FileNotFoundError:
                pass
    finally:
        os.close(top)
    try:
        os.rmdir(path)
    except FileNotFoundError:
        pass
    except OSError:
        return False
    return True


def _clear(top: int, keep: str | None, stop: Callable[[], bool] | None) -> bool:
    """Empty the directory open as ``top`` but for ``keep``; whether it is empty.

    Depth first with a stack of open directories, not recursion: a root may be
    deeper than Python's recursion limit.
    """
    mount = _mount_of(top)
    complete = True
    # Each frame: an open directory, its entries still to remove, its name in the
    # frame below (None for the top).
    stack: list[tuple[int, list[tuple[str, bool]], str | None]] = [
        (top, _entries(top, keep), None)]
    try:
        while stack:
            if stop is not None and stop():
                return False
            fd, entries, name = stack[-1]
            if not entries:
                stack.pop()
                if name is None:
                    break
                os.close(fd)
                try:
                    os.rmdir(name, dir_fd=stack[-1][0])
                except FileNotFoundError:
                    pass
                except OSError:
                    complete = False
                continue
            entry, is_dir = entries.pop()
            if not is_dir:
                try:
                    os.unlink(entry, dir_fd=fd)
                except FileNotFoundError:
                    pass
                except IsADirectoryError:
                    entries.append((entry, True))  # a directory made there meanwhile
                except OSError:
                    complete = False  # a file mounted over, an immutable one
                continue
            try:
                child = os.open(entry, _DIR_FLAGS, dir_fd=fd)
            except FileNotFoundError:
                continue
            except OSError:
                # Replaced by a symlink or a file meanwhile (ELOOP, ENOTDIR): unlink
                # that; anything else (EMFILE in a very deep tree) stays.
                try:
                    os.unlink(entry, dir_fd=fd)
                except OSError:
                    complete = False
                continue
            if _mount_of(child) != mount:
                os.close(child)  # another file system mounted here: not ours to empty
                complete = False
                continue
            try:
                stack.append((child, _entries(child, None), entry))
            except OSError:
                os.close(child)
                complete = False
    finally:
        for fd, _, name in stack:
            if name is not None:
                os.close(fd)
    return complete


def _entries(fd: int, keep: str | None) -> list[tuple[str, bool]]:
    with os.scandir(fd) as listing:
        return [(e.name, e.is_dir(follow_symlinks=False)) for e in listing if e.name != keep]


def _mount_of(fd: int) -> tuple[int, int]:
    """The device and the mount the directory open as ``fd`` is on.

    ``st_dev`` alone misses a bind mount from the same file system; the kernel's
    ``mnt_id`` (``/proc/self/fdinfo``, Linux 3.15) does not. Without ``/proc`` the
    device alone decides.
    """
    device = os.fstat(fd).st_dev
    try:
        with open(f"/proc/self/fdinfo/{fd}", "rb") as info:
            for line in info:
                if line.startswith(b"mnt_id:"):
                    return device, int(line.split()[1])
    except (OSError, ValueError):
        pass
    return device, -1


def take_abandoned(directory: str, lock: str = LOCK_NAME) -> int | None:
    """An exclusive lock on ``directory``'s lock file if the build that wrote it is gone.

    The descriptor holding it, or None: the file is missing, empty (a build
    between taking its lock and writing its pid), not a regular file, or locked
    by a live build or by another build removing it.
    """
    try:
        fd = os.open(os.path.join(directory, lock),
                     os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        if stat.S_ISREG(os.fstat(fd).st_mode):
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            if os.pread(fd, 32, 0).strip().isdigit():
                return fd
    except OSError:
        pass
    os.close(fd)
    return None


def abandoned_names(parent: str, prefix: str) -> list[str]:
    """The paths named ``prefix*`` in ``parent`` that could be a killed build's: private
    directories of this user (the lock is checked by ``take_abandoned``)."""
    found: list[str] = []
    uid = os.getuid()
    try:
        with os.scandir(parent) as listing:
            for entry in listing:
                if not entry.name.startswith(prefix):
                    continue
                try:
                    info = entry.stat(follow_symlinks=False)
                except OSError:
                    continue
                if stat.S_ISDIR(info.st_mode) and info.st_uid == uid and \
                        stat.S_IMODE(info.st_mode) == 0o700:
                    found.append(entry.path)
    except OSError:
        pass
    return sorted(found)


def sweep_now(parent: str, prefix: str, stop: Callable[[], bool] | None = None) -> None:
    """Remove, here and now, what killed builds (or killed removers) left in ``parent``.

    Each directory's lock is held while it is removed, so two builds sweeping at
    once do not both work on one, and its lock file goes last, so a sweep cut
    short is taken up by the next one.
    """
    for path in abandoned_names(parent, prefix):
        if stop is not None and stop():
            return
        fd = take_abandoned(path)
        if fd is None:
            continue
        try:
            remove_tree(path, last=LOCK_NAME, stop=stop)
        finally:
            os.close(fd)


def _same_file(fd: int, directory: int, name: str) -> bool:
    try:
        mine = os.fstat(fd)
        there = os.stat(name, dir_fd=directory, follow_symlinks=False)
    except OSError:
        return False
    return (mine.st_dev, mine.st_ino) == (there.st_dev, there.st_ino)


def main(argv: list[str]) -> int:
    """``LOCK_FD TREE [PARENT PREFIX]``: remove TREE, whose lock LOCK_FD holds, then sweep
    PARENT for abandoned ``PREFIX*`` directories."""
    lock_fd, tree = int(argv[0]), argv[1]
    _raise_open_files_limit()
    try:
        top = os.open(tree, _DIR_FLAGS)
    except OSError:
        return 1
    try:
        # Only the tree whose lock we were given: anything else is not ours.
        if not _same_file(lock_fd, top, LOCK_NAME):
            return 1
    finally:
        os.close(top)
    # The pid in the lock file is the remover's now (a live holder, for whoever looks);
    # written in place and then cut, so the file never reads as empty.
    pid = f"{os.getpid()}\n".encode()
    try:
        os.pwrite(lock_fd, pid, 0)
        os.ftruncate(lock_fd, len(pid))
    except OSError:
        pass
    remove_tree(tree, last=LOCK_NAME)
    os.close(lock_fd)
    if len(argv) >= 4:
        sweep_now(argv[2], argv[3])
    return 0


def _raise_open_files_limit() -> None:
    """A deep tree holds a descriptor per level: the soft limit goes up to the hard one."""
    try:
        import resource
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft != hard:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ImportError, OSError, ValueError):
        pass


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
