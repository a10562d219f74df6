"""The one tar extractor: a tar stream into a Rootfs, every entry confined to it.

It applies image layers (``unpack_layer``), ADD's local archives and context
tarballs (``extract_tar`` with other ``ExtractRules``). The rules differ the
way Docker's do, and only there:

* image layers (OCI image spec, "Image Layer Filesystem Changeset"): entries
  replace what lower layers put at the same path (a file may replace a
  directory and vice versa), ``.wh.NAME`` deletes NAME from lower layers and
  ``.wh..wh..opq`` hides everything lower layers put in its directory while
  keeping what this layer adds, wherever in the tar it appears; owners are the
  archive's numeric ids; entry names with ``..`` components or absolute names,
  and parents reached through a symlink that climbs above the root, are refused;
* ADD archives (moby ``pkg/archive.Unpack``): names are relative to the
  destination (a leading ``/`` is dropped, ``..`` that climbs above the
  destination is refused), ``.wh.`` names are ordinary files, existing
  directories are merged and take the archive's metadata but are never
  replaced by a non-directory, ``--chown`` overrides the archive's owners;
* context tarballs: as ADD, owners are left as created, and symbolic links
  leaving the root are refused (what ``tarfile``'s "data" filter refused).

Confinement (docs/architecture.md, decision 1) goes through ``Rootfs.resolve``: parent
directories are resolved with the image's own symlinks inside the root (an
absolute link such as ``/var/run -> /run`` works as it would under chroot),
the final component is never followed (whatever is there is removed and
replaced), and hardlinks are resolved inside the root like any other name.
Anything refused raises ConfinementError before it is written, and so does a
whiteout of ``.``, ``..`` or an empty name (``.wh...`` would delete the root's
parent, issue 11).

An entry no Linux filesystem can hold (a name component over 255 bytes, a path
over 4095, a NUL in a name, an owner, time or device number out of range, a
hardlink to a directory), one nested over 512 directories deep, or one that
the filesystem refuses is a BuildError naming the archive and the entry, never
a traceback. The work an entry costs is bounded by the bytes the archive
holds: a sparse file's holes are skipped, never written or even read as zeros,
and the file is sized with ``ftruncate``.
"""

from __future__ import annotations

import logging
import os
import posixpath
import shutil
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import BinaryIO

from kanipy.errors import BuildError, ConfinementError, IntegrityError
from kanipy.fieldwise import Fieldwise
from kanipy.fs.compression import Readable, open_decompressed
from kanipy.fs.rootfs import Rootfs, image_parts
from kanipy.fs.tarreader import (
    BLKTYPE,
    CHRTYPE,
    DIRTYPE,
    FIFOTYPE,
    LNKTYPE,
    REGTYPE,
    SYMTYPE,
    TarEntry,
    TarReader,
)
from kanipy.fs.workers import MAX_FILE, FileJobs, Job, ThreadChoice

log = logging.getLogger(__name__)

WHITEOUT_PREFIX = ".wh."
WHITEOUT_META_PREFIX = ".wh..wh."
WHITEOUT_OPAQUE = ".wh..wh..opq"

_READ_CHUNK = 1 << 20
_OPEN_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
# Linux's limits (limits.h: NAME_MAX, PATH_MAX with its NUL; kdev_t.h: MINORBITS
# 20 of a 32-bit dev_t) and the range of uid_t and a 64-bit time_t.
_NAME_MAX = 255
_PATH_MAX = 4095
_MAJOR_LIMIT = 1 << 12
_MINOR_LIMIT = 1 << 20
_ID_LIMIT = 1 << 32
_TIME_LIMIT_NS = (1 << 63) * 1_000_000_000
# Directories nested deeper than this (counted on the host, symlinks followed)
# are refused: os.makedirs and shutil.rmtree, which create and clean the root,
# recurse once per level and stop near Python's 1,000-frame limit. No real
# image comes near it; PATH_MAX alone would allow 2,047 levels, and symlinks more.
_MAX_DEPTH = 512


def _shown(name: str) -> str:
    """An entry name for a message: quoted, and shortened when it is too long to read."""
    if len(name) > 160:
        name = name[:80] + "..." + name[-60:]
    return repr(name)
_ROOT = PurePosixPath("/")


@dataclass(frozen=True, repr=False, eq=False)
class ExtractRules(Fieldwise):
    """How an archive's entries land in the root; the defaults are an image layer's."""

    # ``.wh.NAME`` and ``.wh..wh..opq`` delete from lower layers (layers only).
    whiteouts: bool = True
    # False: absolute names and any ``..`` component are refused (layers). True:
    # names are relative to the destination, cleaned, and refused only when they
    # climb above it (moby's ``pkg/archive``, "breakout").
    relative_names: bool = False
    # A non-directory entry may replace an existing directory (layers); else refused.
    replace_directories: bool = True
    # Owners: the archive's numeric ids, each overridden when set (ADD --chown) ...
    uid: int | None = None
    gid: int | None = None
    # ... or left as created (a context tarball, possibly unpacked without root).
    chown: bool = True
    xattrs: bool = True
    # A parent reached through a symlink whose target climbs above the root is
    # refused (layers) instead of resolved as under chroot, where ``..`` stops at /.
    escape_is_error: bool = True
    # Symbolic links that are absolute or climb above the root are refused.
    confine_symlinks: bool = False


LAYER_RULES = ExtractRules()
CONTEXT_RULES = ExtractRules(whiteouts=False, relative_names=True, replace_directories=False,
                             chown=False, xattrs=False, escape_is_error=False,
                             confine_symlinks=True)


def add_archive_rules(uid: int | None, gid: int | None) -> ExtractRules:
    """ADD's rules for a local archive; ``uid``/``gid`` from ``--chown`` (None: the archive's)."""
    return ExtractRules(whiteouts=False, relative_names=True, replace_directories=False,
                        uid=uid, gid=gid, xattrs=False, escape_is_error=False)


@dataclass(frozen=True, repr=False, eq=False)
class UnpackStats(Fieldwise):
    """What one extraction wrote; ``top`` holds the first component of every entry
    name (the names it created or changed directly under the destination)."""

    entries: int
    file_bytes: int
    top: frozenset[str] = frozenset()


def unpack_layer(
    rootfs: Rootfs, fileobj: BinaryIO, *, compression: str = "auto", layer_name: str,
    select: Callable[[TarEntry], bool] | None = None,
) -> UnpackStats:
    """Apply the layer tar in ``fileobj`` onto ``rootfs`` (streamed, never held in memory).

    ``compression`` is one of ``kanipy.fs.compression.COMPRESSIONS`` or ``auto``.
    ``layer_name`` (its digest, usually) names the layer in errors. Raises
    ConfinementError for an entry that would land outside the root,
    IntegrityError for a corrupt stream, BuildError for an entry that cannot
    be applied (a parent that is a file, a name too long, an out-of-range
    number, anything the filesystem refuses). ``select``, when given, sees every
    entry and says which are applied (the layer cache unpacks a layer in parts).
    """
    what = f"layer {layer_name}"
    stream = open_decompressed(fileobj, compression, what)
    return extract_tar(rootfs, stream, what=what, select=select)


def extract_tar(rootfs: Rootfs, stream: Readable, *, what: str,
                rules: ExtractRules = LAYER_RULES, dest: PurePosixPath = _ROOT,
                select: Callable[[TarEntry], bool] | None = None) -> UnpackStats:
    """Extract the (uncompressed) tar ``stream`` into the image directory ``dest`` of
    ``rootfs`` by ``rules``; ``what`` names the archive in errors.

    ``dest`` must be a symlink-free path of an existing directory
    (``Rootfs.resolve_image_path``). Errors are as for ``unpack_layer``.
    """
    unpacker = _Unpacker(rootfs, what, rules, dest)
    # Our own reader, not tarfile: its header parsing cost four times GNU tar's
    # whole unpack on a layer of small files (see kanipy/fs/tarreader.py).
    reader = TarReader(stream, what)
    try:
        for entry in reader:
            if select is not None and not select(entry):
                continue
            try:
                unpacker.apply(entry, reader)
            except OSError as exc:
                # What the filesystem refused (ENAMETOOLONG under a long root,
                # ENOSPC, EMLINK...) is about this entry; say which.
                raise _cannot_apply(what, entry.name, exc) from exc
        unpacker.finish()
    finally:
        # On an error too: no file thread may write once we have returned.
        unpacker.close()
    log.debug("extracted %s: %d entries", what, unpacker.entries)
    return UnpackStats(unpacker.entries, unpacker.file_bytes, frozenset(unpacker.top))


def _cannot_apply(what: str, name: str, exc: OSError) -> BuildError:
    return BuildError(f"{what}: entry {_shown(name)} cannot be applied: "
                      f"{exc.strerror or exc}")


def is_tar_stream(stream: Readable, what: str) -> bool:
    """True when a tar reader finds a first entry in ``stream`` (BuildKit's test for
    an archive: ``tar.Reader.Next`` succeeds)."""
    try:
        return next(iter(TarReader(stream, what)), None) is not None
    except IntegrityError:
        return False


class _Unpacker:
    """The state of one archive being extracted: resolved directories and what it added.

    Small regular files and symbolic links are made on file threads
    (``FileJobs``, issue 14) while this thread reads on; everything else happens
    here, in entry order. A file job never lands outside the root, and the result is
    the one a serial extraction gives, because of four rules kept here:

    * a job's path is its parent's host directory, resolved and checked by
      this thread (a real directory inside the root, no symlink in it), plus a
      name the job creates without following (``O_NOFOLLOW|O_EXCL``, symlink);
      it unlinks a non-directory in its way and reports a directory back
      (``_drain`` replaces it; see ``_make_symlink``);
    * nothing is removed (a replaced entry, a whiteout, an opaque directory)
      before every job has ended (``_drain`` in ``_remove`` and ``_opaque``), so
      no directory on a job's path can become a symlink or disappear while the
      job runs: a directory is only ever replaced after its removal;
    * an entry at a path still in flight, a hardlink to one, a parent looked
      up anew (a cache miss, which may meet a file not made yet) and
      ``finish`` all wait for the jobs first, so the last entry still wins and
      a hardlink finds its target;
    * a file or link over a directory this archive has looked up (or over a
      symlink, once a looked-up directory was reached through one), one with
      xattrs, a sparse file or one over ``MAX_FILE`` is made on this thread, as
      before, and so is everything until ``ThreadChoice`` has found file
      creation slow here (never, on tmpfs).
    """

    def __init__(self, rootfs: Rootfs, what: str, rules: ExtractRules,
                 dest: PurePosixPath) -> None:
        self.rootfs = rootfs
        self.what = what
        self.rules = rules
        self.dest = dest
        self.dest_depth = len(image_parts(dest))
        self.root = str(rootfs.resolve(dest))
        self._root_slashes = self.root.count("/")
        # directory (as named in the tar) -> real host directory; only
        # symlink-free host paths are cached, and any removal of a directory or
        # symlink drops the entries under it (see _forget).
        self._dirs: dict[str, str] = {"": self.root}
        # host paths this archive created: opaque whiteouts and whiteouts spare them.
        self._added: set[str] = set()
        # directories whose lower-layer contents this layer has already hidden.
        self._opaqued: set[str] = set()
        # directory metadata applied after their contents are written.
        self._dir_meta: list[tuple[str, int, int]] = []
        self.entries = 0
        self.file_bytes = 0
        self.top: set[str] = set()
        self._warned_xattr = False
        # Set by every removal (a replaced entry, a whiteout, an opaque directory):
        # until then every directory this archive made or merged is still one.
        self._removed_any = False
        # Host directories ever cached in _dirs (a superset: never pruned).
        self._dir_hosts: set[str] = {self.root}
        # Whether a cached directory was reached through a symlink ("usr/lib" -> the
        # host's "lib"): removing any symlink then empties the cache, since _forget
        # finds entries by the host path they lead to, not by the links on the way.
        self._through_link = False
        self._choice = ThreadChoice()
        self._jobs: FileJobs | None = None  # started with the first small file

    def _job_failed(self, job: Job, exc: OSError) -> Exception:
        return _cannot_apply(self.what, job.name, exc)

    def _drain(self) -> None:
        """Wait for every file job; make the files that found something in the way."""
        jobs = self._jobs
        if jobs is None or not jobs.busy:
            return
        for job in jobs.wait_all():
            work, args = job.payload
            try:
                self._replace(job.path, os.lstat(job.path), job.name)
                work(job.path, *args)
            except OSError as exc:
                raise _cannot_apply(self.what, job.name, exc) from exc

    def close(self) -> None:
        if self._jobs is not None:
            self._jobs.close()

    def _fail(self, name: str, reason: str) -> ConfinementError:
        return ConfinementError(f"{self.what}: entry {_shown(name)} {reason}")

    def _refuse(self, name: str, reason: str) -> BuildError:
        return BuildError(f"{self.what}: entry {_shown(name)} {reason}")

    def _split(self, name: str) -> list[str]:
        if "\0" in name:
            raise self._refuse(name, "has a NUL byte in its name")
        if self.rules.relative_names:
            clean = posixpath.normpath(name.lstrip("/"))
            if clean == ".." or clean.startswith("../"):
                # moby/pkg/archive refuses these too ("breakout"), failing the step.
                raise self._fail(name, "is outside of the destination")
            parts = [p for p in clean.split("/") if p and p != "."]
        else:
            if name.startswith("/"):
                raise self._fail(name, "has an absolute name")
            parts = [p for p in name.split("/") if p and p != "."]
            if ".." in parts:
                raise self._fail(name, "has a '..' component")
        if len(name) > _PATH_MAX // 4 or max(map(len, parts), default=0) > _NAME_MAX // 4:
            # Only names that could be too long pay for encoding (4 bytes a char at most).
            length = len(os.fsencode(name))
            if length > _PATH_MAX:
                raise self._refuse(name, f"has a path of {length} bytes, over the "
                                         f"{_PATH_MAX} Linux allows")
            for part in parts:
                size = len(os.fsencode(part))
                if size > _NAME_MAX:
                    raise self._refuse(name, f"has a name component of {size} bytes, over "
                                             f"the {_NAME_MAX} a Linux filesystem allows")
        return parts

    def _check_numbers(self, member: TarEntry) -> None:
        """Refuse owners, times and device numbers no Linux filesystem can hold
        (a pax header may carry any number: 10**30)."""
        for what, value in (("uid", member.uid), ("gid", member.gid)):
            if not 0 <= value < _ID_LIMIT:
                raise self._refuse(member.name, f"has {what} {value}, out of range "
                                                f"(0 to {_ID_LIMIT - 1})")
        if not -_TIME_LIMIT_NS <= member.mtime_ns < _TIME_LIMIT_NS:
            raise self._refuse(member.name, f"has mtime {member.mtime_ns // 1_000_000_000}, "
                                            "out of the range of a 64-bit time_t")
        if member.type == CHRTYPE or member.type == BLKTYPE:
            if not (0 <= member.devmajor < _MAJOR_LIMIT and
                    0 <= member.devminor < _MINOR_LIMIT):
                raise self._refuse(
                    member.name, f"has device number {member.devmajor}:{member.devminor}, "
                                 f"out of Linux's range (major below {_MAJOR_LIMIT}, "
                                 f"minor below {_MINOR_LIMIT})")

    def _parent_dir(self, parts: list[str], name: str, create: bool) -> str | None:
        key = "/".join(parts)
        hit = self._dirs.get(key)
        if hit is not None:
            return hit
        # Looking on disk: a file in flight may be on the way (it must be found).
        self._drain()
        try:
            host = str(self.rootfs.resolve(self.dest.joinpath(*parts),
                                           escape_is_error=self.rules.escape_is_error))
        except ConfinementError as exc:
            raise self._fail(
                name, f"has a parent path that leads outside the root: {exc}"
            ) from exc
        if host.count("/") - self._root_slashes >= _MAX_DEPTH:
            raise self._too_deep(name)
        try:
            st = os.lstat(host)
        except FileNotFoundError:
            if not create:
                return None
            try:
                os.makedirs(host, 0o755, exist_ok=True)
            except (NotADirectoryError, FileExistsError) as exc:
                raise BuildError(
                    f"{self.what}: entry {name!r}: a parent is not a directory"
                ) from exc
        except NotADirectoryError as exc:
            if not create:
                return None
            raise BuildError(
                f"{self.what}: entry {name!r}: a parent is not a directory"
            ) from exc
        else:
            if not stat.S_ISDIR(st.st_mode):
                if not create:
                    return None
                raise BuildError(
                    f"{self.what}: entry {name!r}: a parent is not a directory"
                )
        if host != (self.root + "/" + key if key else self.root):
            self._through_link = True
        self._dirs[key] = host
        self._dir_hosts.add(host)
        return host

    def _too_deep(self, name: str) -> BuildError:
        return self._refuse(name, f"is nested more than {_MAX_DEPTH} directories deep "
                                  "(symlinks followed)")

    def _forget(self, host: str) -> None:
        """Drop cached directories at or under ``host`` (it is being removed)."""
        prefix = host + "/"
        stale = [k for k, v in self._dirs.items() if v == host or v.startswith(prefix)]
        for key in stale:
            del self._dirs[key]

    def _remove(self, host: str, st: os.stat_result) -> None:
        self._drain()
        self._removed_any = True
        if stat.S_ISDIR(st.st_mode):
            self._forget(host)
            shutil.rmtree(host)
        else:
            if stat.S_ISLNK(st.st_mode):
                self._forget(host)
                if self._through_link:  # a cached path may lead through this one
                    self._dirs = {"": self.root}
                    self._through_link = False
            os.unlink(host)

    def apply(self, member: TarEntry, reader: TarReader) -> None:
        name = member.name
        parts = self._split(name)
        if not parts:
            # The root itself ("./"): its metadata is the image's business, not
            # ours; for ADD, the destination is left as it is.
            return
        self.top.add(parts[0])
        base = parts[-1]
        if self.rules.whiteouts and base.startswith(WHITEOUT_PREFIX):
            self._whiteout(parts, name)
            return
        if "\0" in member.linkname:
            raise self._refuse(name, "has a NUL byte in its link target")
        if member.type != LNKTYPE:
            self._check_numbers(member)
        parent = self._parent_dir(parts[:-1], name, create=True)
        assert parent is not None
        path = parent + "/" + base
        if path.count("/") - self._root_slashes > _MAX_DEPTH:
            raise self._too_deep(name)
        if self._jobs is not None and path in self._jobs.pending:
            self._drain()  # the same path again: the earlier entry first
        kind = member.type
        if kind == REGTYPE:
            self._regular_file(path, member, reader)
            return
        is_dir = kind == DIRTYPE
        if kind == SYMTYPE and self.rules.confine_symlinks:
            self._check_symlink(parts, member)
        if kind == SYMTYPE and self._may_pool(path) and not (
                member.xattrs and self.rules.xattrs):
            self.entries += 1
            self._added.add(path)
            owner = self._owner(member) if self.rules.chown else None
            self._submit(path, name, 0, _make_symlink, member.linkname, owner,
                         member.mtime_ns)
            return
        if is_dir or kind == SYMTYPE:
            # Create first and look at what is there only when that fails, as for
            # regular files: a base layer's paths are new, and the lstat before each
            # create was a syscall per entry that found nothing.
            self._create_dir_or_symlink(path, member, is_dir)
        else:
            try:
                existing: os.stat_result | None = os.lstat(path)
            except FileNotFoundError:
                existing = None
            if existing is not None:
                if kind == LNKTYPE and self._link_target(member) == path:
                    return  # a hardlink to itself: nothing to do
                self._replace(path, existing, name)

        self.entries += 1
        if is_dir or kind == SYMTYPE:
            pass  # created above
        elif kind == LNKTYPE:
            target = self._link_target(member)
            try:
                os.link(target, path, follow_symlinks=False)
            except OSError as exc:
                raise BuildError(f"{self.what}: hardlink {name!r} -> {member.linkname!r}: "
                                 f"{exc.strerror}") from None
            self._added.add(path)
            return  # the link shares its target's inode and metadata
        elif kind == CHRTYPE or kind == BLKTYPE:
            node = stat.S_IFCHR if kind == CHRTYPE else stat.S_IFBLK
            try:
                os.mknod(path, node | 0o600, os.makedev(member.devmajor, member.devminor))
            except PermissionError:
                log.warning("%s: no permission to create device %s; skipped",
                            self.what, name)
                return
        elif kind == FIFOTYPE:
            os.mkfifo(path, 0o600)
        else:
            log.warning("%s: entry %r has unsupported type %r; skipped",
                        self.what, name, member.type)
            self.entries -= 1
            return
        self._added.add(path)
        if self.rules.chown:
            # Numeric owners only (OCI layers carry ids; names would be the host's).
            os.chown(path, *self._owner(member), follow_symlinks=False)
        if self.rules.xattrs:
            self._set_xattrs(path, member)
        mtime_ns = member.mtime_ns
        if is_dir:
            self._dirs["/".join(parts)] = path
            self._dir_hosts.add(path)
            self._dir_meta.append((path, member.mode & 0o7777, mtime_ns))
            return
        if kind != SYMTYPE:
            # After chown, which clears setuid/setgid bits.
            os.chmod(path, member.mode & 0o7777)
        os.utime(path, ns=(mtime_ns, mtime_ns), follow_symlinks=False)

    def _create_dir_or_symlink(self, path: str, member: TarEntry, is_dir: bool) -> None:
        """Make the directory or symlink ``member`` at ``path``, replacing what is there
        (an existing directory is kept for a directory entry: its contents merge).

        mkdir and symlink never follow a symlink in the final component, so whatever
        an earlier entry planted at ``path`` is found by the lstat after EEXIST."""
        try:
            if is_dir:
                os.mkdir(path, 0o700)
            else:
                os.symlink(member.linkname, path)
            return
        except FileExistsError:
            existing = os.lstat(path)
        if is_dir and stat.S_ISDIR(existing.st_mode):
            return
        self._replace(path, existing, member.name)
        if is_dir:
            os.mkdir(path, 0o700)
        else:
            os.symlink(member.linkname, path)

    def _link_target(self, member: TarEntry) -> str:
        try:
            parts = self._split(member.linkname)
        except ConfinementError:
            # Name the entry itself; its target is what is wrong.
            raise self._fail(member.name, f"is a hardlink leaving the root "
                                          f"({_shown(member.linkname)})") from None
        if not parts:
            raise self._fail(member.name, "is a hardlink to the root directory")
        parent = self._parent_dir(parts[:-1], member.name, create=False)
        target = None if parent is None else parent + "/" + parts[-1]
        if self._jobs is not None and target in self._jobs.pending:
            self._drain()
        try:
            st = None if target is None else os.lstat(target)
        except FileNotFoundError:
            st = None
        if st is None or target is None:
            raise BuildError(
                f"{self.what}: hardlink {_shown(member.name)} -> "
                f"{_shown(member.linkname)}: the target does not exist"
            )
        if stat.S_ISDIR(st.st_mode):
            # link(2) refuses it (EPERM); no filesystem has hardlinked directories.
            raise self._refuse(member.name, f"is a hardlink to a directory "
                                            f"({_shown(member.linkname)})")
        return target

    def _owner(self, member: TarEntry) -> tuple[int, int]:
        uid, gid = self.rules.uid, self.rules.gid
        return (member.uid if uid is None else uid, member.gid if gid is None else gid)

    def _replace(self, host: str, st: os.stat_result, name: str) -> None:
        """Remove what is at ``host`` for the entry ``name``, if the rules allow it."""
        if stat.S_ISDIR(st.st_mode) and not self.rules.replace_directories:
            raise BuildError(f"{self.what}: the archive entry {name!r} would replace the "
                             f"directory {self.rootfs.to_image_path(host)}")
        self._remove(host, st)

    def _check_symlink(self, parts: list[str], member: TarEntry) -> None:
        """Refuse a link whose target is absolute or climbs above the root."""
        target = member.linkname
        depth = self.dest_depth + len(parts) - 1
        for part in image_parts(target):
            depth = depth - 1 if part == ".." else depth + 1
            if depth < 0:
                break
        if target.startswith("/") or depth < 0:
            raise self._fail(member.name, f"is a symbolic link leading outside the root "
                                          f"({target!r})")

    def _set_xattrs(self, target: str | int, member: TarEntry) -> None:
        for xname, xvalue in member.xattrs.items():
            try:
                if isinstance(target, int):
                    os.setxattr(target, xname, xvalue)
                else:
                    os.setxattr(target, xname, xvalue, follow_symlinks=False)
            except (OSError, ValueError) as exc:  # ValueError: a NUL in the name
                if not self._warned_xattr:
                    log.warning("%s: cannot set xattr %r on %s (%s); "
                                "further xattr failures in it are not reported",
                                self.what, xname, _shown(member.name),
                                getattr(exc, "strerror", None) or exc)
                    self._warned_xattr = True

    def _regular_file(self, path: str, member: TarEntry, reader: TarReader) -> None:
        """Create, fill and finish a regular file through one descriptor.

        Most paths are new (a base layer), so creating first and looking at what
        is there only when that fails saves an lstat per file, and metadata set
        through the descriptor saves a path lookup per call. A small one is
        handed to the file threads (see the class's rules).
        """
        size = member.size
        if (size <= MAX_FILE and not member.sparse
                and not (member.xattrs and self.rules.xattrs) and self._may_pool(path)):
            self._submit_file(path, member, reader)
            return
        try:
            fd = self._choice.open_new(path, _OPEN_FLAGS, 0o600)
        except FileExistsError:
            self._replace(path, os.lstat(path), member.name)
            fd = os.open(path, _OPEN_FLAGS, 0o600)
        self.entries += 1
        self._added.add(path)
        try:
            self._write_file(fd, member, reader)
            # Owner, then xattrs (chown drops security.capability), then mode
            # (chown also clears setuid/setgid), then times, last.
            if self.rules.chown:
                os.fchown(fd, *self._owner(member))
            if member.xattrs and self.rules.xattrs:
                self._set_xattrs(fd, member)
            os.fchmod(fd, member.mode & 0o7777)
            os.utime(fd, ns=(member.mtime_ns, member.mtime_ns))
        finally:
            os.close(fd)

    def _may_pool(self, path: str) -> bool:
        """Whether the file or link at ``path`` may be made on a file thread: not over a
        directory this archive looked up, nor over a symlink a cached path may lead
        through (its removal must empty the cache before the next entry looks)."""
        if not self._choice.use_pool or path in self._dir_hosts:
            return False
        return not (self._through_link and os.path.islink(path))

    def _submit(self, path: str, name: str, nbytes: int,
                work: Callable[..., str | None], *args: object) -> None:
        """``work(path, *args)`` on a file thread; it returns a mark when something it
        must not remove is in the way, and ``_drain`` then replaces that and runs it again."""
        jobs = self._jobs
        if jobs is None:
            jobs = self._jobs = FileJobs(self._choice.threads, self._job_failed)
        jobs.submit(path, name, nbytes, (work, args), work, path, *args)

    def _submit_file(self, path: str, member: TarEntry, reader: TarReader) -> None:
        size = member.size
        view = reader.read(size) if size else b""
        if len(view) == size:
            data = bytes(view)
        else:
            pieces = [bytes(view)]
            while piece := reader.read(size):
                pieces.append(bytes(piece))
            data = b"".join(pieces)
        self.entries += 1
        self.file_bytes += len(data)
        self._added.add(path)
        owner = self._owner(member) if self.rules.chown else None
        self._submit(path, member.name, len(data), _write_small_file, data,
                     member.mode & 0o7777, member.mtime_ns, owner)

    def _write_file(self, fd: int, member: TarEntry, reader: TarReader) -> None:
        if member.sparse:
            self._write_sparse(fd, member, reader)
            return
        while True:
            view = reader.read(_READ_CHUNK)
            size = len(view)
            if not size:
                break
            self.file_bytes += size
            while view:
                written = os.write(fd, view)
                view = view[written:]

    def _write_sparse(self, fd: int, member: TarEntry, reader: TarReader) -> None:
        """Only the data the archive holds is written, each piece at its offset; the
        holes stay holes and the size comes from ftruncate. Reading the holes
        back as zeros cost CPU in proportion to the declared size: 2 s for a
        10 KB tar declaring 4 GiB, without bound for larger sizes (issue 11)."""
        while True:
            offset, view = reader.read_stored(_READ_CHUNK)
            if not view:
                break
            self.file_bytes += len(view)
            while view:
                written = os.pwrite(fd, view, offset)
                view = view[written:]
                offset += written
        os.ftruncate(fd, member.size)

    def _whiteout(self, parts: list[str], name: str) -> None:
        base = parts[-1]
        hidden = base[len(WHITEOUT_PREFIX) :]
        if hidden in ("", ".", ".."):
            # ".wh..." named the root's parent, ".wh.." and ".wh." the directory
            # itself: each emptied or deleted the directory holding the root (issue 11).
            raise self._fail(name, f"is a whiteout of {hidden!r}, which is not an entry "
                                   "of its directory")
        parent = self._parent_dir(parts[:-1], name, create=False)
        if parent is None:
            return  # nothing below to hide
        if base == WHITEOUT_OPAQUE:
            self._opaque(parent)
            return
        if base.startswith(WHITEOUT_META_PREFIX):
            return  # other AUFS metadata (.wh..wh..plnk etc.): not content
        target = parent + "/" + hidden
        if target in self._added:
            # OCI: a whiteout applies only to lower layers, never to its own layer.
            return
        try:
            st = os.lstat(target)
        except FileNotFoundError:
            return
        self._remove(target, st)

    def _opaque(self, directory: str) -> None:
        """Remove what lower layers put under ``directory``, keeping this layer's entries.

        Each directory is cleared once per layer: after that it holds only this
        layer's entries, so a repeated marker has nothing to do. Clearing it
        again cost a scan per marker: 5,000 markers over 5,000 files (a 42 KB
        layer) took 18 s of CPU (issue 11).
        """
        if directory in self._opaqued:
            return
        self._opaqued.add(directory)
        self._drain()
        with os.scandir(directory) as it:
            children = list(it)
        removed = False
        for child in children:
            if child.path not in self._added:
                self._removed_any = True
                if child.is_dir(follow_symlinks=False):
                    shutil.rmtree(child.path)
                else:
                    os.unlink(child.path)
                removed = True
            elif child.is_dir(follow_symlinks=False):
                self._opaque(child.path)
        if removed:
            # Removed directories or symlinks may be cached; start afresh (rare).
            self._dirs = {"": self.root}
            self._dir_hosts = {self.root}
            self._through_link = False

    def finish(self) -> None:
        """Directory modes and mtimes, last: writing into a directory changes its mtime."""
        self._drain()
        for path, mode, mtime_ns in self._dir_meta:
            try:
                # Replaced by a non-directory later in the same layer (chmod would
                # follow a symlink put there): only possible after a removal.
                if self._removed_any and not stat.S_ISDIR(os.lstat(path).st_mode):
                    continue
                os.chmod(path, mode)
                os.utime(path, ns=(mtime_ns, mtime_ns))
            except FileNotFoundError:
                pass  # removed later in the same layer


_DIRECTORY_IN_THE_WAY = "directory"

# On a file thread, a non-directory in the way (a lower layer's, or an earlier
# entry's already made) is unlinked, as _replace would: no directory the
# extracting thread has cached is one (they are real, symlink-free paths), and
# nothing in flight is at or below it. A directory is the extracting thread's to
# remove (it may hold files in flight, its cached entries must go): the job
# returns a mark and _drain replaces it and runs the job again.


def _write_small_file(path: str, data: bytes, mode: int, mtime_ns: int,
                      owner: tuple[int, int] | None) -> str | None:
    """Make the regular file ``path`` (on a file thread): created ``O_EXCL``, written,
    owner, mode and times set through its descriptor, as ``_regular_file`` does."""
    try:
        fd = os.open(path, _OPEN_FLAGS, 0o600)
    except FileExistsError:
        if stat.S_ISDIR(os.lstat(path).st_mode):
            return _DIRECTORY_IN_THE_WAY
        os.unlink(path)
        fd = os.open(path, _OPEN_FLAGS, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        if owner is not None:
            os.fchown(fd, *owner)
        os.fchmod(fd, mode)
        os.utime(fd, ns=(mtime_ns, mtime_ns))
    finally:
        os.close(fd)
    return None


def _make_symlink(path: str, target: str, owner: tuple[int, int] | None,
                  mtime_ns: int) -> str | None:
    """Make the symbolic link ``path`` -> ``target`` (on a file thread), its owner and
    times set without following it, as ``apply`` does."""
    try:
        os.symlink(target, path)
    except FileExistsError:
        if stat.S_ISDIR(os.lstat(path).st_mode):
            return _DIRECTORY_IN_THE_WAY
        os.unlink(path)
        os.symlink(target, path)
    if owner is not None:
        os.chown(path, *owner, follow_symlinks=False)
    os.utime(path, ns=(mtime_ns, mtime_ns), follow_symlinks=False)
    return None
