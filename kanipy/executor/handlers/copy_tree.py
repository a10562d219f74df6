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
import shutil
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from kanipy.executor.step import StepError
from kanipy.fs.rootfs import Rootfs

log = logging.getLogger(__name__)

# (path relative to the copied source, is a directory) -> leave it out
SkipRule = Callable[[str, bool], bool]


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
        written: list[Path] = []
        for entry in _sorted_entries(src):
            child_rel = f"{rel}/{entry.name}" if rel else entry.name
            written += self.copy_entry(Path(entry.path), dest / entry.name, skip, child_rel)
        return written

    def copy_entry(self, src: Path, dest: Path, skip: SkipRule | None = None,
                   rel: str = "", st: os.stat_result | None = None) -> list[Path]:
        """Copy ``src`` (not following a final link unless ``st`` says otherwise) to
        ``dest``, whose parent is a real directory; returns what to snapshot."""
        st = st or os.lstat(src)
        is_dir = stat.S_ISDIR(st.st_mode)
        if skip is not None and rel and skip(rel, is_dir):
            return []
        if is_dir:
            created = self._ensure_dir(dest)
            below = self.copy_contents(src, dest, skip, rel)
            self.set_metadata(dest, st)  # last: writing entries moved its mtime
            return [dest] if created or not below else below
        if stat.S_ISSOCK(st.st_mode):
            log.debug("skipping socket %s", src)  # not content; Docker skips them too
            return []
        self.clear_for_file(dest)
        mode = st.st_mode
        if stat.S_ISREG(mode):
            key = (st.st_dev, st.st_ino)
            first = self._links.get(key) if st.st_nlink > 1 else None
            if first is not None and os.path.lexists(first):
                os.link(first, dest)
                return [dest]  # same inode: metadata already set
            copy_file_data(src, dest)
            if st.st_nlink > 1:
                self._links[key] = dest
        elif stat.S_ISLNK(mode):
            os.symlink(os.readlink(src), dest)
        elif stat.S_ISFIFO(mode):
            os.mkfifo(dest)
        elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
            os.mknod(dest, mode, st.st_rdev)
        self.set_metadata(dest, st)
        return [dest]

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
