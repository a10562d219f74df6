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
"""

from __future__ import annotations

import errno
import logging
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import NamedTuple, Protocol

from kanipy.executor.step import StepError
from kanipy.fs.rootfs import Rootfs

log = logging.getLogger(__name__)


class SkipRule(Protocol):
    """What a copy leaves out (``.dockerignore``, ``--exclude``)."""

    def __call__(self, rel: str, is_dir: bool) -> bool:
        """Whether to leave out ``rel`` (relative to the copied source)."""

    def applies_below(self, rel: str) -> bool:
        """False when nothing strictly inside directory ``rel`` ("" for the source
        itself) can be left out, so the copy of that subtree asks no more."""


# O_EXCL: a link (even a dangling one) at the destination is never followed.
_CREATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
# Files up to this size are copied with one read and one write: for the small files
# a COPY is mostly made of, that costs less than sendfile (issue 14).
_READ_WHOLE = 1 << 16


class _NewFiles(NamedTuple):
    """What a file created in a given directory gets before any chown or chmod."""

    uid: int
    gid: int
    mode_changed_bits: int  # permission bits creation may not have set as asked


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
    _links: dict[tuple[int, int], str] = field(default_factory=dict)
    _umask: int | None = field(default_factory=lambda: _process_umask())

    # --- directories the copy makes --------------------------------------------------

    def make_dirs(self, image_path: PurePosixPath) -> list[PurePosixPath]:
        uid, gid = self.owner.created_ids
        try:
            return self.rootfs.mkdirs(image_path, uid, gid, 0o755)
        except NotADirectoryError as exc:
            raise StepError(f"{exc.strerror}") from None

    def image_path(self, host: str | Path) -> PurePosixPath:
        return self.rootfs.to_image_path(Path(host))

    # --- copying ---------------------------------------------------------------------

    def copy_contents(self, src: Path, dest: Path, skip: SkipRule | None = None,
                      rel: str = "") -> list[Path]:
        """The entries of directory ``src`` into the existing directory ``dest``.

        Returns what to snapshot: the host paths of entries written, where a new
        directory stands for its whole subtree but an existing one never does (it
        may hold much more than this copy wrote, e.g. ``COPY overlay/ /``)."""
        if skip is not None and not skip.applies_below(rel):
            skip = None
        return [Path(p) for p in self._copy_dir(os.fspath(src), os.fspath(dest), skip, rel)]

    def copy_entry(self, src: Path, dest: Path, skip: SkipRule | None = None,
                   rel: str = "", st: os.stat_result | None = None) -> list[Path]:
        """Copy ``src`` (not following a final link unless ``st`` says otherwise) to
        ``dest``, whose parent is a real directory; returns what to snapshot."""
        dest_str = os.fspath(dest)
        new_files = self._new_file_defaults(os.path.dirname(dest_str))
        written = self._copy_entry(os.fspath(src), dest_str, skip, rel,
                                   st or os.lstat(src), new_files)
        return [Path(p) for p in written]

    # Issue 14: a COPY of 100,000 small files spends its Python time here, so paths are
    # strings (no pathlib objects per entry), a regular file is written through one
    # descriptor (no Python file objects) and its metadata set on that descriptor, and
    # calls whose result is already there are left out (_copy_file).

    def _copy_dir(self, src: str, dest: str, skip: SkipRule | None, rel: str) -> list[str]:
        written: list[str] = []
        new_files = self._new_file_defaults(dest)
        for entry in _sorted_entries(src):
            name = entry.name
            child_rel = f"{rel}/{name}" if rel else name
            st = entry.stat(follow_symlinks=False)
            written += self._copy_entry(entry.path, dest + "/" + name, skip, child_rel, st,
                                        new_files)
        return written

    def _copy_entry(self, src: str, dest: str, skip: SkipRule | None, rel: str,
                    st: os.stat_result, new_files: _NewFiles) -> list[str]:
        mode = st.st_mode
        if stat.S_ISREG(mode):
            if skip is not None and rel and skip(rel, False):
                return []
            if st.st_nlink > 1:
                key = (st.st_dev, st.st_ino)
                first = self._links.get(key)
                if first is not None and os.path.lexists(first):
                    self.clear_for_file(dest)
                    os.link(first, dest)
                    return [dest]  # same inode: metadata already set
                self._links[key] = dest
            self._copy_file(src, dest, st, new_files)
            return [dest]
        is_dir = stat.S_ISDIR(mode)
        if skip is not None and rel and skip(rel, is_dir):
            return []
        if is_dir:
            created = self._ensure_dir(dest)
            inner = skip if skip is not None and skip.applies_below(rel) else None
            below = self._copy_dir(src, dest, inner, rel)
            self.set_metadata(dest, st)  # last: writing entries moved its mtime
            return [dest] if created or not below else below
        if stat.S_ISSOCK(mode):
            log.debug("skipping socket %s", src)  # not content; Docker skips them too
            return []
        self.clear_for_file(dest)
        if stat.S_ISLNK(mode):
            os.symlink(os.readlink(src), dest)
        elif stat.S_ISFIFO(mode):
            os.mkfifo(dest)
        elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
            os.mknod(dest, mode, st.st_rdev)
        self.set_metadata(dest, st)
        return [dest]

    def _copy_file(self, src: str, dest: str, st: os.stat_result, new_files: _NewFiles) -> None:
        """A regular file's bytes and metadata, through one descriptor of the copy.

        Created with its final permission bits, so ``fchmod`` is needed only where the
        umask, a default ACL or a special bit (setuid, setgid, sticky) can have changed
        them; ``fchown`` only where the new file's owner is not already the right one
        (_NewFiles says what a new file in the directory gets)."""
        perm = stat.S_IMODE(st.st_mode)
        if self.chmod:
            perm = apply_chmod(self.chmod, perm, False)
        try:
            out = os.open(dest, _CREATE_FLAGS, perm & 0o777)
        except FileExistsError:
            self.clear_for_file(dest)  # a directory in the way is an error
            out = os.open(dest, _CREATE_FLAGS, perm & 0o777)
        try:
            _copy_bytes(src, out, st.st_size)
            uid = st.st_uid if self.owner.uid is None else self.owner.uid
            gid = st.st_gid if self.owner.gid is None else self.owner.gid
            if uid != new_files.uid or gid != new_files.gid:
                os.fchown(out, uid, gid)
            if perm & new_files.mode_changed_bits:
                os.fchmod(out, perm)
            os.utime(out, ns=(st.st_atime_ns, st.st_mtime_ns))
        finally:
            os.close(out)

    def _new_file_defaults(self, directory: str) -> _NewFiles:
        """What a file created in ``directory`` gets before any chown or chmod."""
        st = os.lstat(directory)
        # A setgid directory gives new entries its group (also to root).
        gid = st.st_gid if st.st_mode & stat.S_ISGID else os.getegid()
        changed = 0o7777  # unknown: every bit may differ, always chmod
        umask = self._umask
        if umask is not None and not _has_default_acl(directory):
            changed = 0o7000 | umask
        return _NewFiles(os.geteuid(), gid, changed)

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

    def _ensure_dir(self, dest: str) -> bool:
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

    def clear_for_file(self, dest: str | Path) -> None:
        """Make room for a non-directory: a file or link in the way goes."""
        try:
            existing = os.lstat(dest)
        except FileNotFoundError:
            return
        if stat.S_ISDIR(existing.st_mode):
            raise StepError(f"cannot replace the directory {self.image_path(dest)} with a file")
        os.unlink(dest)

    def set_metadata(self, dest: str | Path, st: os.stat_result) -> None:
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


def _sorted_entries(path: str) -> list[os.DirEntry[str]]:
    with os.scandir(path) as it:
        return sorted(it, key=lambda e: e.name)


def copy_file_data(src: str | Path, dst: str | Path) -> None:
    """Copy a regular file's bytes into a new file ``dst`` (mode 0600)."""
    out = os.open(dst, _CREATE_FLAGS, 0o600)
    try:
        _copy_bytes(os.fspath(src), out, -1)
    finally:
        os.close(out)


def _copy_bytes(src: str, out: int, size: int) -> None:
    """The bytes of file ``src`` into descriptor ``out``; ``size`` is what its lstat
    said (-1: unknown). A small file is read with one byte to spare, so a file that
    grew since shows without a second read; larger ones go through ``sendfile``."""
    fd = os.open(src, os.O_RDONLY | os.O_CLOEXEC)
    try:
        offset = 0
        if 0 <= size <= _READ_WHOLE:
            data = os.read(fd, size + 1)
            _write_all(out, data)
            if len(data) <= size:
                return
            offset = len(data)
        _send(fd, out, offset, os.fstat(fd).st_size)
    finally:
        os.close(fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _send(src: int, out: int, offset: int, size: int) -> None:
    """Bytes ``offset`` to ``size`` of ``src`` onto ``out`` (``sendfile`` in the
    kernel when it can, else reads and writes)."""
    start = offset
    try:
        while offset < size:
            sent = os.sendfile(out, src, offset, size - offset)
            if sent == 0:
                return
            offset += sent
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.ENOSYS) or offset != start:
            raise
        while offset < size:
            data = os.pread(src, min(size - offset, 1 << 20), offset)
            if not data:
                return
            _write_all(out, data)
            offset += len(data)


def _has_default_acl(directory: str) -> bool:
    """Whether ``directory`` has a default ACL (which, not the umask, then decides the
    mode of a file created in it)."""
    try:
        os.getxattr(directory, "system.posix_acl_default", follow_symlinks=False)
    except OSError as exc:
        # No ACL, or a filesystem without them; anything else: assume one.
        return exc.errno not in (errno.ENODATA, errno.EOPNOTSUPP)
    return True


def _process_umask() -> int | None:
    """The process's umask (Linux 4.7+ shows it in /proc), or None when unknown.

    0 counts as unknown: kanipy sets a 0 umask only for moments (sandbox_nomount,
    runner_init) before restoring it, so a 0 read here may be one of those. Any file
    created during such a moment gets exactly the bits asked, which is what the
    check against the umask read here assumes anyway.
    """
    try:
        with open("/proc/self/status", "rb") as fh:
            for line in fh:
                if line.startswith(b"Umask:"):
                    return int(line.split()[1], 8) or None
    except (OSError, ValueError, IndexError):
        pass
    return None


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
