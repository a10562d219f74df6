"""Writing copied entries into a root with BuildKit's metadata rules (fsutil ``copy``).

The rules, as BuildKit's copier applies them and Docker users see them:

* every entry written keeps its source's mode and mtime; its owner is the
  ``--chown`` owner, else 0:0 from the context, else the source's own;
  ``--chmod`` replaces (octal) or edits (symbolic) the mode of every file and
  directory copied, never of a symbolic link;
* a directory met inside a copied tree takes the source's metadata whether it
  existed or not; the destination directory itself is left alone when it
  exists, and made 0755 with the ``--chown`` owner (else 0:0) when it does not,
  as are missing parents (fsutil ``MkdirAll``);
* a file replaces a file or link in its way; replacing a directory is an error;
* regular files hardlinked to each other in the source are hardlinked in the
  copy (fsutil ``getLinkSource``); sockets are skipped.

Confinement: host paths below the destination are only ever joined onto
directories this module has ``lstat``-ed as real directories, so no symlink in
the image can redirect a write outside the root.

Speed (issue 14): creating a small file costs 0.2-0.9 ms of kernel time on the
disks measured, far more than Python's share, so a directory tree's
non-directories (their ``lstat`` included) are copied by a few threads while the
main thread walks the source and makes directories; a directory's own metadata
is set once everything under it is written. Each entry has its own destination,
made by exactly one write; names of one multiply linked file are made one at a
time, so a link is made only to a whole file.
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
import stat
import threading
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from kanipy.executor.step import StepError
from kanipy.fs.rootfs import Rootfs

log = logging.getLogger(__name__)

# (path relative to the copied source, is a directory) -> leave it out
SkipRule = Callable[[str, bool], bool]

# Threads writing a tree's files. File creation is kernel work that releases the
# GIL; four kept both cores of the 2-vCPU machine busy (0.56 ms a file with one
# thread, 0.21 ms with four, 0.30 ms with eight: benchmarks/bench_build.py).
_WRITERS = 4
# Writes queued at most, so that memory does not grow with the number of files.
_MAX_QUEUED = 256


class _TreeWrites:
    """The files and links of one directory copy, written by a small thread pool,
    and the directories whose metadata waits until everything under them is written."""

    def __init__(self) -> None:
        self._pool: ThreadPoolExecutor | None = None
        self._queued: deque[Future[None]] = deque()
        self.dirs: list[tuple[Path, os.stat_result]] = []

    def submit(self, write: Callable[..., None], *args: object) -> None:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(_WRITERS, thread_name_prefix="kanipy-copy")
        if len(self._queued) >= _MAX_QUEUED:
            self._queued.popleft().result()
        self._queued.append(self._pool.submit(write, *args))

    def wait(self) -> None:
        """Every write done; the first failure (in the order written) is raised."""
        while self._queued:
            self._queued.popleft().result()

    def close(self) -> None:
        """Drop what has not started, wait for what has (nothing writes after a failure)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)


@dataclass(frozen=True)
class Ownership:
    """Owner policy: fixed ids, or None to keep each source entry's own."""

    uid: int | None
    gid: int | None

    @property
    def created_ids(self) -> tuple[int, int]:
        """Owner of directories the copy creates itself (fsutil MkdirAll's Chowner)."""
        return (self.uid or 0, self.gid or 0)


@dataclass
class TreeWriter:
    """Copies entries into ``rootfs`` under one owner and chmod policy.

    Failures are StepErrors: the stage loop says which instruction they come from.
    """

    rootfs: Rootfs
    owner: Ownership
    chmod: str | None
    _links: dict[tuple[int, int], Path] = field(default_factory=dict)
    _writes: _TreeWrites | None = field(default=None, init=False)
    # Held while a multiply linked file is copied or linked: the first of its names
    # must be whole before another is linked to it.
    _links_lock: threading.Lock = field(default_factory=threading.Lock, init=False)

    # --- directories the copy makes --------------------------------------------------

    def make_dirs(self, image_path: PurePosixPath) -> list[PurePosixPath]:
        uid, gid = self.owner.created_ids
        try:
            return self.rootfs.mkdirs(image_path, uid, gid, 0o755)
        except NotADirectoryError as exc:
            raise StepError(f"{exc.strerror}") from None

    def image_path(self, host: Path) -> PurePosixPath:
        return self.rootfs.to_image_path(host)

    # --- copying ---------------------------------------------------------------------

    def copy_contents(self, src: Path, dest: Path, skip: SkipRule | None = None,
                      rel: str = "") -> list[Path]:
        """The entries of directory ``src`` into the existing directory ``dest``.

        Returns what to snapshot: the host paths of entries written, where a new
        directory stands for its whole subtree but an existing one never does (it
        may hold much more than this copy wrote, e.g. ``COPY overlay/ /``)."""
        with self._tree_writes():
            return self._copy_contents(src, dest, skip, rel)

    def _copy_contents(self, src: Path, dest: Path, skip: SkipRule | None,
                       rel: str) -> list[Path]:
        written: list[Path] = []
        for entry in _sorted_entries(src):
            child_rel = f"{rel}/{entry.name}" if rel else entry.name
            if self._writes is not None and not entry.is_dir(follow_symlinks=False):
                # Everything about a non-directory, its lstat included, happens on a
                # writer thread; the walk goes on (the directory entry's type is known
                # without a system call).
                if skip is not None and skip(child_rel, False):
                    continue
                target = dest / entry.name
                self._writes.submit(self._copy_leaf, Path(entry.path), target)
                written.append(target)  # a socket is skipped: the snapshot skips it too
                continue
            written += self._copy_entry(Path(entry.path), dest / entry.name, skip, child_rel,
                                        None)
        return written

    def copy_entry(self, src: Path, dest: Path, skip: SkipRule | None = None,
                   rel: str = "", st: os.stat_result | None = None) -> list[Path]:
        """Copy ``src`` (not following a final link unless ``st`` says otherwise) to
        ``dest``, whose parent is a real directory; returns what to snapshot."""
        return self._copy_entry(src, dest, skip, rel, st)

    @contextmanager
    def _tree_writes(self) -> Iterator[None]:
        """Writes of files and links may go to threads until the outermost copy ends."""
        if self._writes is not None:
            yield
            return
        writes = self._writes = _TreeWrites()
        try:
            yield
            writes.wait()
            for dest, st in writes.dirs:  # children before parents, as they were copied
                self.set_metadata(dest, st)
        finally:
            self._writes = None
            writes.close()

    def _copy_entry(self, src: Path, dest: Path, skip: SkipRule | None, rel: str,
                    st: os.stat_result | None) -> list[Path]:
        st = st or os.lstat(src)
        is_dir = stat.S_ISDIR(st.st_mode)
        if skip is not None and rel and skip(rel, is_dir):
            return []
        if is_dir:
            created = self._ensure_dir(dest)
            with self._tree_writes():
                below = self._copy_contents(src, dest, skip, rel)
                assert self._writes is not None
                # Last: writing entries moves its mtime.
                self._writes.dirs.append((dest, st))
            return [dest] if created or not below else below
        if stat.S_ISSOCK(st.st_mode):
            log.debug("skipping socket %s", src)  # not content; Docker skips them too
            return []
        self._copy_non_dir(src, dest, st)
        return [dest]

    def _copy_leaf(self, src: Path, dest: Path) -> None:
        """A non-directory of a tree, on a writer thread."""
        st = os.lstat(src)
        if stat.S_ISSOCK(st.st_mode):
            log.debug("skipping socket %s", src)
            return
        self._copy_non_dir(src, dest, st)

    def _copy_non_dir(self, src: Path, dest: Path, st: os.stat_result) -> None:
        mode = st.st_mode
        if stat.S_ISREG(mode) and st.st_nlink > 1:
            with self._links_lock:
                self.clear_for_file(dest)
                key = (st.st_dev, st.st_ino)
                first = self._links.get(key)
                if first is not None and os.path.lexists(first):
                    os.link(first, dest)
                    return  # same inode: metadata already set
                copy_file_data(src, dest)
                self.set_metadata(dest, st)
                self._links[key] = dest
            return
        if stat.S_ISREG(mode) or stat.S_ISLNK(mode):
            self._write_leaf(src, dest, st)
            return
        self.clear_for_file(dest)
        if stat.S_ISFIFO(mode):
            os.mkfifo(dest)
        elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
            os.mknod(dest, mode, st.st_rdev)
        self.set_metadata(dest, st)

    def _write_leaf(self, src: Path, dest: Path, st: os.stat_result) -> None:
        """A regular file (not hardlinked) or a symbolic link, metadata included."""
        self.clear_for_file(dest)
        if stat.S_ISREG(st.st_mode):
            copy_file_data(src, dest)
        else:
            os.symlink(os.readlink(src), dest)
        self.set_metadata(dest, st)

    def write_file(self, dest: Path, data: bytes | Path, mode: int,
                   mtime_ns: int | None = None) -> None:
        """A file made by the build itself (heredoc, download): owner from the policy
        (0:0 without --chown), ``mode`` subject to --chmod."""
        self.clear_for_file(dest)
        if isinstance(data, Path):
            copy_file_data(data, dest)
        else:
            fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
        os.chown(dest, *self.owner.created_ids)
        os.chmod(dest, apply_chmod(self.chmod, mode, False) if self.chmod else mode)
        if mtime_ns is not None:
            os.utime(dest, ns=(mtime_ns, mtime_ns))

    def _ensure_dir(self, dest: Path) -> bool:
        """A real directory at ``dest``; True when it had to be made."""
        try:
            existing = os.lstat(dest)
        except FileNotFoundError:
            os.mkdir(dest, 0o700)
            return True
        if not stat.S_ISDIR(existing.st_mode):
            # fsutil: "cannot copy to non-directory"; a link to a directory is not
            # followed either, which also keeps writes from leaving the root.
            raise StepError(
                f"cannot copy a directory to {self.image_path(dest)}: it exists in the image "
                "and is not a directory")
        return False

    def clear_for_file(self, dest: Path) -> None:
        """Make room for a non-directory: a file or link in the way goes."""
        try:
            existing = os.lstat(dest)
        except FileNotFoundError:
            return
        if stat.S_ISDIR(existing.st_mode):
            raise StepError(f"cannot replace the directory {self.image_path(dest)} with a file")
        os.unlink(dest)

    def set_metadata(self, dest: Path, st: os.stat_result) -> None:
        """fsutil ``copyFileInfo``: owner, mode (not for links), then times."""
        uid = st.st_uid if self.owner.uid is None else self.owner.uid
        gid = st.st_gid if self.owner.gid is None else self.owner.gid
        os.lchown(dest, uid, gid)
        if not stat.S_ISLNK(st.st_mode):
            perm = stat.S_IMODE(st.st_mode)
            if self.chmod:
                perm = apply_chmod(self.chmod, perm, stat.S_ISDIR(st.st_mode))
            os.chmod(dest, perm)
        os.utime(dest, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)


def _sorted_entries(path: Path) -> list[os.DirEntry[str]]:
    with os.scandir(path) as it:
        return sorted(it, key=lambda e: e.name)


def copy_file_data(src: Path, dst: Path) -> None:
    """Copy a regular file's bytes (``sendfile`` in the kernel when it can)."""
    dst_fd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with open(src, "rb") as fin, os.fdopen(dst_fd, "wb") as fout:
        size = os.fstat(fin.fileno()).st_size
        offset = 0
        try:
            while offset < size:
                sent = os.sendfile(fout.fileno(), fin.fileno(), offset, size - offset)
                if sent == 0:
                    break
                offset += sent
        except OSError as exc:
            if exc.errno not in (errno.EINVAL, errno.ENOSYS) or offset:
                raise
            shutil.copyfileobj(fin, fout, 1 << 20)


def apply_chmod(spec: str, mode: int, is_dir: bool) -> int:
    """The permission bits ``--chmod=spec`` gives a copied entry that had ``mode``.

    Octal (``0755``) replaces the bits; symbolic clauses (``u+x,g-w,o=``, Dockerfile
    1.14+) edit them as chmod(1) does: ``X`` adds execute only to directories and to files
    that already have an execute bit. The Dockerfile front end has already checked ``spec``.
    """
    if 0 < len(spec) <= 4 and all(ch in "01234567" for ch in spec):
        return int(spec, 8)
    for clause in spec.split(","):
        at = 0
        while at < len(clause) and clause[at] in "ugoa":
            at += 1
        who = clause[:at] or "a"
        targets = [(target, shift) for target, shift in (("u", 6), ("g", 3), ("o", 0))
                   if target in who or "a" in who]
        while at < len(clause):
            op = clause[at]
            at += 1
            if op not in "-+=":
                continue
            end = at
            while end < len(clause) and clause[end] in "rwxXst":
                end += 1
            perms, at = clause[at:end], end
            bits = 0
            for target, shift in targets:
                for perm, value in (("r", 4), ("w", 2), ("x", 1)):
                    if perm in perms:
                        bits |= value << shift
                if "X" in perms and (is_dir or mode & 0o111):
                    bits |= 1 << shift
                if "s" in perms and target in "ug":
                    bits |= 0o4000 if target == "u" else 0o2000
            if "t" in perms:
                bits |= 0o1000
            if op == "+":
                mode |= bits
            elif op == "-":
                mode &= ~bits
            else:
                mask = 0
                for _, shift in targets:
                    mask |= 0o7 << shift
                mode = (mode & ~mask) | bits
    return mode & 0o7777
