"""ADD's local archives: recognised by content and extracted inside the root.

Docker decides by content, never by name (BuildKit ``isArchivePath``: the
stream is decompressed when it starts with a gzip, bzip2, xz or zstd magic,
and is an archive when a tar reader finds a first header). Extraction keeps
the archive's modes, owners (unless ``--chown``), mtimes, links and
hardlinks; existing directories take the archive's metadata; every path is
resolved inside the root, so neither ``..`` nor a symlink (in the archive or
already in the image) can place anything outside it.
"""

from __future__ import annotations

import bz2
import gzip
import logging
import lzma
import os
import posixpath
import stat
import tarfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import BinaryIO

import zstandard

from kanipy.errors import BuildError
from kanipy.executor.handlers.copy_tree import Ownership
from kanipy.fs.rootfs import Rootfs

log = logging.getLogger(__name__)

_GZIP = b"\x1f\x8b\x08"
_BZIP2 = b"BZh"
_XZ = b"\xfd7zXZ\x00"
_ZSTD = b"\x28\xb5\x2f\xfd"


@contextmanager
def _decompressed(path: Path) -> Iterator[BinaryIO]:
    with open(path, "rb") as raw:
        head = raw.read(6)
        raw.seek(0)
        stream: BinaryIO
        if head.startswith(_GZIP):
            stream = gzip.GzipFile(fileobj=raw, mode="rb")  # type: ignore[assignment]
        elif head.startswith(_BZIP2):
            stream = bz2.BZ2File(raw, "rb")  # type: ignore[assignment]
        elif head.startswith(_XZ):
            stream = lzma.LZMAFile(raw, "rb")  # type: ignore[assignment]
        elif head.startswith(_ZSTD):
            stream = zstandard.ZstdDecompressor().stream_reader(raw)  # type: ignore[assignment]
        else:
            stream = raw
        try:
            yield stream
        finally:
            if stream is not raw:
                stream.close()


def is_tar_archive(path: Path) -> bool:
    """True when ``path`` holds a tar archive, plain or compressed (by content)."""
    try:
        with _decompressed(path) as stream, tarfile.open(fileobj=stream, mode="r|") as tar:
            return tar.next() is not None
    except (tarfile.TarError, OSError, EOFError, lzma.LZMAError, zstandard.ZstdError):
        return False


def extract_archive(path: Path, rootfs: Rootfs, dest: PurePosixPath, owner: Ownership,
                    where: str) -> list[PurePosixPath]:
    """Extract the archive at host ``path`` into the image directory ``dest`` (which
    exists); returns the image paths of its top-level entries."""
    top: set[PurePosixPath] = set()
    dir_times: list[tuple[Path, int]] = []
    links: list[tarfile.TarInfo] = []
    try:
        with _decompressed(path) as stream, tarfile.open(fileobj=stream, mode="r|") as tar:
            for member in tar:
                name = posixpath.normpath(member.name.lstrip("/"))
                if name == ".." or name.startswith("../"):
                    # moby/pkg/archive refuses these too ("breakout"), failing the step.
                    raise BuildError(f"{where}: ADD {path.name}: the archive entry "
                                     f"{member.name!r} is outside of the destination")
                if name == ".":
                    continue  # the archive's "./": the destination is left as it is
                target = dest / name
                top.add(dest / name.split("/")[0])
                if member.islnk():
                    links.append(member)  # after the files they point at exist
                    continue
                host = _place(rootfs, target)
                _write_member(tar, member, host, rootfs, dest, owner, where, dir_times)
            for member in links:
                _hardlink(member, rootfs, dest, where)
    except (tarfile.TarError, EOFError, lzma.LZMAError, zstandard.ZstdError) as exc:
        raise BuildError(f"{where}: ADD {path.name}: cannot extract the archive: {exc}") \
            from exc
    for host, mtime in reversed(dir_times):
        os.utime(host, (mtime, mtime), follow_symlinks=False)
    return sorted(top)


def _place(rootfs: Rootfs, target: PurePosixPath) -> Path:
    """The host path for ``target``: parents resolved (and made 0755 root) in the root,
    the last component not followed."""
    try:
        rootfs.mkdirs(target.parent)
    except NotADirectoryError as exc:
        raise BuildError(f"cannot extract {target}: {exc.strerror}") from None
    return rootfs.resolve(target.parent) / target.name


def _write_member(tar: tarfile.TarFile, member: tarfile.TarInfo, host: Path, rootfs: Rootfs,
                  dest: PurePosixPath, owner: Ownership, where: str,
                  dir_times: list[tuple[Path, int]]) -> None:
    existing = _lstat(host)
    if member.isdir():
        if existing is not None and not stat.S_ISDIR(existing.st_mode):
            os.unlink(host)
            existing = None
        if existing is None:
            os.mkdir(host, 0o700)
        dir_times.append((host, int(member.mtime)))
    else:
        if existing is not None:
            if stat.S_ISDIR(existing.st_mode):
                raise BuildError(f"{where}: ADD: the archive entry {member.name} would "
                                 f"replace the directory {rootfs.to_image_path(host)}")
            os.unlink(host)
        if member.isreg():
            fileobj = tar.extractfile(member)
            assert fileobj is not None
            fd = os.open(host, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            with os.fdopen(fd, "wb") as out:
                while chunk := fileobj.read(1 << 20):
                    out.write(chunk)
        elif member.issym():
            os.symlink(member.linkname, host)
        elif member.isfifo():
            os.mkfifo(host)
        elif member.ischr() or member.isblk():
            kind = stat.S_IFCHR if member.ischr() else stat.S_IFBLK
            os.mknod(host, kind | 0o600, os.makedev(member.devmajor, member.devminor))
        else:
            log.warning("%s: ADD: skipping %s (unsupported tar entry type)", where, member.name)
            return
    uid = member.uid if owner.uid is None else owner.uid
    gid = member.gid if owner.gid is None else owner.gid
    os.lchown(host, uid, gid)
    if not member.issym():
        os.chmod(host, member.mode & 0o7777)
        if not member.isdir():
            os.utime(host, (member.mtime, member.mtime))
    else:
        os.utime(host, (member.mtime, member.mtime), follow_symlinks=False)


def _hardlink(member: tarfile.TarInfo, rootfs: Rootfs, dest: PurePosixPath, where: str) -> None:
    name = posixpath.normpath("/" + member.name).lstrip("/")
    link_name = posixpath.normpath("/" + member.linkname).lstrip("/")
    source = rootfs.resolve(dest / link_name, follow_final=False)
    if not os.path.isfile(source) or os.path.islink(source):
        raise BuildError(f"{where}: ADD: the archive's hardlink {member.name} points at "
                         f"{member.linkname}, which is not a file in the archive")
    host = _place(rootfs, dest / name)
    if _lstat(host) is not None:
        os.unlink(host)
    os.link(source, host)


def _lstat(path: Path) -> os.stat_result | None:
    try:
        return os.lstat(path)
    except FileNotFoundError:
        return None

