"""Giving a RUN step files and directories without mounting, and taking them back exactly.

Where mounts are not permitted (uid 0 with Docker's default capabilities, the
CI container Kaniko runs in), what a step is given (``/dev``, ``/proc``,
``/etc/resolv.conf``, ``/etc/hosts``, ``/etc/hostname``, every ``RUN --mount``)
is put into the root directory itself for the step, and removed after it.

Whatever the image had at such a path is renamed aside into a stash directory
beside the root (same filesystem) and renamed back after the step: content,
mode, owner, times and inode stay exactly as they were (only the ctime moves,
which the kernel sets on a rename; these paths are left out of the snapshot).
Directories created on the way to a path are removed again when empty, and
their parents' times are put back unless the step itself changed them.

Image paths are resolved inside the root: every symlink on the way is
followed as the step would see it, never out of the root (``..`` stops at
the root, absolute targets start from it). The last component is never
followed: a symlink at the path itself is stashed, not written through.

Only the standard library may be used here, and only what imports fast: this
runs in the step helper (runner_init's docstring). ``shutil`` is imported by
the functions that copy trees (only for ``RUN --mount``).
"""

from __future__ import annotations

import errno
import os
import stat

# typing.TYPE_CHECKING without importing typing (the helper's start-up time).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from typing import Any

# Enough for any real image; a loop of links ends with ELOOP, as the kernel does.
MAX_LINKS = 40


def resolve_parent(root: str, image_path: str) -> tuple[str, str]:
    """``(host directory, final name)`` for ``image_path``: its parent resolved inside ``root``.

    Missing components are allowed (the caller creates them): the result
    then names where they will be. Raises OSError(ELOOP) on a symlink loop.
    """
    parts = [p for p in image_path.split("/") if p and p != "."]
    if not parts:
        raise OSError(errno.EINVAL, "the root itself cannot be provided")
    *dirs, name = parts
    if name == "..":
        raise OSError(errno.EINVAL, f"{image_path}: a path must not end in ..")
    resolved: list[str] = []
    pending = list(reversed(dirs))
    links = 0
    while pending:
        part = pending.pop()
        if part in ("", "."):
            continue
        if part == "..":
            if resolved:
                resolved.pop()
            continue
        host = os.path.join(root, *resolved, part)
        try:
            st = os.lstat(host)
        except FileNotFoundError:
            resolved.append(part)
            continue
        if stat.S_ISLNK(st.st_mode):
            links += 1
            if links > MAX_LINKS:
                raise OSError(errno.ELOOP, f"{image_path}: too many levels of symbolic links")
            target = os.readlink(host)
            if target.startswith("/"):
                resolved = []
            pending.extend(reversed(target.split("/")))
            continue
        resolved.append(part)
    return os.path.join(root, *resolved), name


class _Placed:
    # Plain classes rather than dataclasses: ``dataclasses`` imports ``inspect``,
    # several milliseconds of every RUN step's start.
    __slots__ = ("image_path", "host", "stashed", "give_back")

    def __init__(self, image_path: str, host: str, stashed: str | None,
                 give_back: Callable[[str], None] | None = None) -> None:
        self.image_path = image_path
        self.host = host
        self.stashed = stashed  # where the image's own entry waits, if it had one
        # What takes our entry away after the step (default: remove it); a cache
        # directory is renamed (or copied) back to where it lives.
        self.give_back = give_back


class Provisioner:
    """Places things at image paths in ``root`` for one step; ``restore`` undoes it all.

    The image's own entries wait in ``stash``, a new private directory beside
    ``root`` unless one is given.
    """

    def __init__(self, root: str, stash: str = "") -> None:
        self.root = root
        self.stash = stash or _make_private_dir(
            os.path.dirname(os.path.abspath(root)), ".kanipy-stash-")
        self.placed: list[_Placed] = []
        self.created_dirs: list[str] = []
        # parent dir -> (atime_ns, mtime_ns before we touched it, mtime_ns after our last touch)
        self.parents: dict[str, tuple[int, int, int]] = {}
        self.warnings: list[str] = []

    @property
    def image_paths(self) -> list[str]:
        return [p.image_path for p in self.placed]

    def _touch_parent(self, directory: str, change: Callable[[], None]) -> None:
        """Run ``change`` (which edits ``directory``'s entries), remembering its times."""
        before = os.stat(directory)
        change()
        after = os.stat(directory).st_mtime_ns
        original = self.parents.get(directory)
        if original is None:
            self.parents[directory] = (before.st_atime_ns, before.st_mtime_ns, after)
        else:
            self.parents[directory] = (original[0], original[1], after)

    def _make_parents(self, directory: str) -> None:
        if os.path.isdir(directory):
            return
        rel = os.path.relpath(directory, self.root)
        current = self.root
        for part in rel.split("/"):
            path = os.path.join(current, part)
            if not os.path.lexists(path):
                # Called at once, inside this iteration.
                self._touch_parent(current, lambda: os.mkdir(path, 0o755))  # noqa: B023
                self.created_dirs.append(path)
            elif not os.path.isdir(path) or os.path.islink(path):
                raise OSError(errno.ENOTDIR, f"{path[len(self.root):]} in the image is not "
                              "a directory")
            current = path

    def place(self, image_path: str, make: Callable[[str], None],
              give_back: Callable[[str], None] | None = None) -> str:
        """Stash what is at ``image_path`` and call ``make(host_path)`` to put ours there.

        After the step ``give_back(host_path)`` takes it away (default: removed).
        """
        directory, name = resolve_parent(self.root, image_path)
        self._make_parents(directory)
        host = os.path.join(directory, name)
        stashed: str | None = None
        if os.path.lexists(host):
            stashed = os.path.join(self.stash, str(len(self.placed)))
            self._touch_parent(directory, lambda: os.rename(host, stashed))
        self.placed.append(_Placed(image_path, host, stashed, give_back))
        self._touch_parent(directory, lambda: make(host))
        return host

    def restore(self) -> None:
        """Remove what was placed, rename the image's entries back, put parent times back.

        A parent directory's times stay as the step left them when the step
        itself changed the directory (its mtime is not the one we last left).
        """
        step_times: dict[str, tuple[int, int] | None] = {}
        for parent, (_, _, ours) in self.parents.items():
            try:
                st = os.stat(parent)
            except OSError:
                continue
            step_times[parent] = (
                None if st.st_mtime_ns == ours else (st.st_atime_ns, st.st_mtime_ns))
        for entry in reversed(self.placed):
            self._take_back(entry)
        for path in reversed(self.created_dirs):
            try:
                os.rmdir(path)
            except OSError as exc:
                # The step put files in a directory we created: they are real
                # changes and stay, with the directory.
                if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOENT):
                    self.warnings.append(f"could not remove {path[len(self.root):]}: {exc}")
        for parent, (atime, mtime, _) in self.parents.items():
            if parent in step_times and os.path.isdir(parent):
                os.utime(parent, ns=step_times[parent] or (atime, mtime),
                         follow_symlinks=False)
        try:
            os.rmdir(self.stash)
        except OSError as exc:
            self.warnings.append(f"could not remove {self.stash}: {exc}")

    def _take_back(self, entry: _Placed) -> None:
        host = entry.host
        try:
            st = os.lstat(host)
        except FileNotFoundError:
            st = None
        if st is not None:
            try:
                (entry.give_back or remove_entry)(host)
            except OSError as exc:
                self.warnings.append(f"could not take {entry.image_path} back: {exc}")
        if entry.stashed is None:
            return
        try:
            os.rename(entry.stashed, host)
        except OSError as exc:
            self.warnings.append(f"could not put the image's {entry.image_path} back: {exc}")


def _make_private_dir(parent: str, prefix: str) -> str:
    """A new directory (mode 0700) with a random name under ``parent``, as
    ``tempfile.mkdtemp`` makes one (without importing ``tempfile`` and ``random``)."""
    while True:
        path = os.path.join(parent, prefix + os.urandom(6).hex())
        try:
            os.mkdir(path, 0o700)
        except FileExistsError:
            continue
        return path


def remove_entry(path: str) -> None:
    """Remove a file, symlink or whole directory, never following a symlink."""
    st = os.lstat(path)
    if stat.S_ISDIR(st.st_mode):
        remove_tree(path)
    else:
        os.unlink(path)


def remove_tree(path: str) -> None:
    """Remove the directory ``path`` and all in it, never following a symlink.

    What ``shutil.rmtree`` does, through directory descriptors as it does; the
    unprivileged mode removes the ``/dev`` it placed after every step, and
    importing ``shutil`` (with ``re``, ``bz2`` and ``lzma``) would add to each
    step more than the removal itself costs.
    """
    for _, dirnames, filenames, dirfd in os.fwalk(path, topdown=False,
                                                  follow_symlinks=False):
        for name in filenames:
            os.unlink(name, dir_fd=dirfd)
        for name in dirnames:
            try:
                os.rmdir(name, dir_fd=dirfd)
            except NotADirectoryError:
                # fwalk lists a symlink to a directory among the directories
                # (without entering it): the link is removed, not its target.
                os.unlink(name, dir_fd=dirfd)
    os.rmdir(path)


def copy_entry(source: str, target: str) -> None:
    """Copy a file or directory tree with modes, owners and times (symlinks as symlinks)."""
    st = os.lstat(source)
    if stat.S_ISDIR(st.st_mode):
        import shutil

        shutil.copytree(source, target, symlinks=True, copy_function=_copy_file)
        _copy_owner_tree(source, target)
    else:
        _copy_file(source, target)


def copy_plain_file(source: str, target: str) -> None:
    """Copy a regular file with its mode, owner and times, as ``shutil.copy2`` would
    for the runner's own DNS and host-name files, which every unprivileged step
    gets: without importing ``shutil`` (with ``re``, ``bz2`` and ``lzma``)."""
    src = os.open(source, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        st = os.fstat(src)
        if not stat.S_ISREG(st.st_mode):
            raise OSError(errno.EINVAL, f"{source} is not a regular file")
        dst = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                      | os.O_CLOEXEC, 0o600)
        try:
            while os.sendfile(dst, src, None, 1 << 20):
                pass
            os.fchown(dst, st.st_uid, st.st_gid)
            os.fchmod(dst, stat.S_IMODE(st.st_mode))
            os.utime(dst, ns=(st.st_atime_ns, st.st_mtime_ns))
        finally:
            os.close(dst)
    finally:
        os.close(src)


def _copy_file(source: str, target: str) -> None:
    if os.path.islink(source):
        os.symlink(os.readlink(source), target)
    else:
        import shutil

        shutil.copy2(source, target, follow_symlinks=False)
    st = os.lstat(source)
    os.lchown(target, st.st_uid, st.st_gid)


def _copy_owner_tree(source: str, target: str) -> None:
    # copytree keeps modes and times, not owners; directories' times go last,
    # after their entries were written.
    for dirpath, dirnames, filenames in os.walk(source, topdown=False):
        rel = os.path.relpath(dirpath, source)
        dest = os.path.normpath(os.path.join(target, rel))
        for name in dirnames + filenames:
            st = os.lstat(os.path.join(dirpath, name))
            os.lchown(os.path.join(dest, name), st.st_uid, st.st_gid)
        st = os.lstat(dirpath)
        os.lchown(dest, st.st_uid, st.st_gid)
        os.utime(dest, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)


def move_or_copy(source: str, target: str) -> bool:
    """Rename ``source`` to ``target``; copy when they are on different filesystems.

    True when it was renamed (so it must be renamed back after the step).
    """
    try:
        os.rename(source, target)
        return True
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
    copy_entry(source, target)
    return False


def write_secret(host: str, value: bytes, m: Mapping[str, Any]) -> None:
    """The secret ``value`` at ``host``, with the owner and mode of mount ``m``
    (``uid``, ``gid``, ``mode``): never readable beyond them, even half-written.

    Both modes use it: the isolated one on the step's private tmpfs, the
    unprivileged one at the target inside the step's root (which lies in the
    build's 0700 directory), taken back when the step ends, also when kanipy
    was killed (runner_init: the helper's death reaches the init as SIGTERM).
    """
    fd = os.open(host, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0)
    try:
        os.fchown(fd, m["uid"], m["gid"])
        os.fchmod(fd, m["mode"])
        view = memoryview(value)
        while view:
            view = view[os.write(fd, view):]
    finally:
        os.close(fd)
