"""COPY and ADD: files from the context, an earlier stage or an image into the root.

``COPY [--from=…] [--chown=…] [--chmod=…] [--parents] [--exclude=…] src... dest``.
Docker's rules (Dockerfile reference, "COPY"): sources are relative to the
context (or the ``--from`` root) and may hold wildcards; a directory source
copies its contents; several sources need a destination ending in ``/``; a
relative destination is against WORKDIR; owners are 0:0 from the context
and kept from a stage or image, unless ``--chown``; modes and mtimes are kept.
Paths in the destination are resolved inside the root, following the image's
own symlinks; paths in the source never leave their root.
"""

from __future__ import annotations

import errno
import glob
import logging
import os
import posixpath
import shutil
import stat
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from kanipy.build.handlers.users import exec_user
from kanipy.build.step import StageContext, StageState, StepResult
from kanipy.dockerfile import Add, Copy, StageRef, apply_chmod
from kanipy.dockerfile.ignore import DockerIgnore
from kanipy.errors import BuildError, DockerfileError
from kanipy.fs.rootfs import Rootfs

log = logging.getLogger(__name__)

_WILDCARDS = set("*?[")


@dataclass(frozen=True)
class _Owner:
    uid: int | None  # None: keep the source's owner
    gid: int | None


def handle_copy(ins: Copy, state: StageState, ctx: StageContext) -> StepResult:
    """``COPY src... dest``: the destinations written are snapshotted, nothing else."""
    touched = _copy(ins, state, ctx, add=False)
    return StepResult(config=state.config, changed=frozenset(touched),
                      created_by=f"{ins.render()} # buildkit")


def handle_add(ins: Add, state: StageState, ctx: StageContext) -> StepResult:
    """``ADD src... dest``: COPY plus local archives extracted and URLs downloaded."""
    touched = _copy(ins, state, ctx, add=True)
    return StepResult(config=state.config, changed=frozenset(touched),
                      created_by=f"{ins.render()} # buildkit")


def source_root_for(from_: str, ctx: StageContext) -> Path:
    """The root a ``--from`` names: an earlier stage (name or index) or an image."""
    try:
        stage = ctx.plan.stage(int(from_) if from_.isdigit() else from_)
    except (KeyError, IndexError):
        stage = None
    if stage is not None:
        if stage.index >= ctx.stage.index:
            raise DockerfileError(f"--from={from_} refers to this or a later stage",
                                  None, ctx.plan.filename)
        root = ctx.stage_roots.get(stage.index)
        if root is None:
            raise BuildError(f"--from={from_}: stage {stage.label} was not built")
        return root
    return ctx.image_root(from_)


def _copy(ins: Copy, state: StageState, ctx: StageContext, add: bool) -> list[PurePosixPath]:
    where = (ins.line, ctx.plan.filename)
    from_context = ins.from_ is None
    src_root = ctx.context.root if from_context else source_root_for(ins.from_ or "", ctx)
    owner = _owner(ins.chown, ctx) if ins.chown else (
        _Owner(0, 0) if from_context else _Owner(None, None))
    dest_text = ins.dest
    if not posixpath.isabs(dest_text):
        dest_text = posixpath.join(state.workdir, dest_text)
    dest_is_dir = ins.dest.endswith("/") or ins.dest in (".", "..") or \
        ins.dest.endswith("/.") or ins.dest.endswith("/..")
    dest = PurePosixPath(posixpath.normpath(dest_text))

    sources: list[tuple[Path, str]] = []  # (host path, relative name shown/used for --parents)
    urls: list[str] = []
    for pattern in ins.sources:
        if add and pattern.startswith(("http://", "https://")):
            urls.append(pattern)
            continue
        if add and (pattern.startswith("git@") or pattern.endswith(".git")):
            raise DockerfileError(
                f"ADD {pattern}: git sources are not supported yet; clone in a RUN step or "
                "before the build", *where)
        sources.extend(_match(pattern, src_root, ctx, from_context, where))
    excludes = DockerIgnore.from_text("\n".join(ins.excludes)) if ins.excludes else None
    if excludes is not None:
        sources = [(h, rel) for h, rel in sources if not excludes.excludes(rel)]

    count = len(sources) + len(urls) + len(ins.heredocs)
    multiple = count > 1 or any(_has_wildcard(p) for p in ins.sources)
    if count > 1 and not dest_is_dir:
        raise DockerfileError(
            "When using COPY with more than one source file, the destination must be a "
            f"directory and end with a / (got {ins.dest!r})", *where)
    rootfs = ctx.rootfs
    existing_dir = rootfs.resolve(dest).is_dir()
    into_dir = dest_is_dir or existing_dir or multiple

    copier = _Copier(rootfs, owner, ins.chmod, where)
    touched: list[PurePosixPath] = []
    if into_dir:
        touched += copier.make_dirs(dest)
    else:
        touched += copier.make_dirs(dest.parent)

    for doc in ins.heredocs:
        target = dest / doc.name if into_dir else dest
        touched.append(copier.write_bytes(target, doc.stripped_content.encode(), 0o644))
    for url in urls:
        from kanipy.build.handlers.download import download
        name = PurePosixPath(url.split("?", 1)[0].rstrip("/")).name or "index.html"
        target = dest / name if into_dir else dest
        touched.append(download(url, copier, target, getattr(ins, "checksum", None), where))
    for host, rel in sources:
        st = os.stat(host)  # a top-level source symlink is followed, as BuildKit does
        if add and stat.S_ISREG(st.st_mode) and getattr(ins, "unpack", None) is not False \
                and _is_archive(host):
            touched += copier.extract(host, dest)
            continue
        if ins.parents:
            parent_rel = PurePosixPath(rel).parent
            base = dest / parent_rel if str(parent_rel) != "." else dest
            touched += copier.make_dirs(base)
        else:
            base = dest
        if stat.S_ISDIR(st.st_mode):
            target_dir = base / PurePosixPath(rel).name if ins.parents else base
            touched += copier.copy_dir_contents(host, target_dir,
                                                ctx if from_context else None, rel)
        else:
            target = base / host.name if (into_dir or ins.parents) else dest
            if ins.parents or into_dir:
                target = base / PurePosixPath(rel).name
            touched.append(copier.copy_entry(host, target, follow=True))
    return touched


def _has_wildcard(pattern: str) -> bool:
    return any(c in _WILDCARDS for c in pattern)


def _match(pattern: str, root: Path, ctx: StageContext, from_context: bool,
           where: tuple[int, str]) -> list[tuple[Path, str]]:
    """Host paths (inside ``root``) a source pattern names, with their relative names."""
    clean = posixpath.normpath("/" + pattern).lstrip("/")  # never above the root
    if not _has_wildcard(clean):
        host = _confined(root, clean)
        if not os.path.lexists(host) or (from_context and ctx.context.excluded(clean)):
            hint = ""
            if from_context and ctx.context.excluded(clean):
                hint = " (it is excluded by .dockerignore)"
            origin = "the build context" if from_context else "the --from source"
            raise BuildError(
                f"{where[1]}:{where[0]}: COPY failed: {pattern!r} not found in {origin}{hint}")
        return [(host, clean or ".")]
    matches = []
    for found in sorted(glob.glob(glob.escape(str(root)) + "/" + clean, include_hidden=True)):
        rel = os.path.relpath(found, root)
        if from_context and ctx.context.excluded(rel):
            continue
        matches.append((_confined(root, rel), rel))
    if not matches:
        raise BuildError(
            f"{where[1]}:{where[0]}: COPY failed: no source files were specified "
            f"({pattern!r} matched nothing)")
    return matches


def _confined(root: Path, rel: str) -> Path:
    """``rel`` inside ``root``, following symlinks but never out of it (chroot rules)."""
    return Rootfs(root).resolve(rel or "/")


def _owner(chown: str, ctx: StageContext) -> _Owner:
    """--chown=user[:group]: names from the image's database; a user alone means gid = uid."""
    user, _, group = chown.partition(":")
    resolved = exec_user(ctx, f"{user}:{group}" if group else user)
    if not group:
        # Dockerfile reference: "a username without groupname or a UID without GID will
        # use the same numeric UID as the GID".
        return _Owner(resolved.uid, resolved.uid)
    return _Owner(resolved.uid, resolved.gid)


class _Copier:
    """Writes entries into the root with one ownership/chmod policy."""

    def __init__(self, rootfs: Rootfs, owner: _Owner, chmod: str | None,
                 where: tuple[int, str]) -> None:
        self.rootfs = rootfs
        self.owner = owner
        self.chmod = chmod
        self.where = where

    def _ids(self, st: os.stat_result) -> tuple[int, int]:
        uid = st.st_uid if self.owner.uid is None else self.owner.uid
        gid = st.st_gid if self.owner.gid is None else self.owner.gid
        return uid, gid

    def _mode(self, mode: int, is_dir: bool) -> int:
        perm = stat.S_IMODE(mode)
        return apply_chmod(self.chmod, perm, is_dir) if self.chmod else perm

    def make_dirs(self, path: PurePosixPath) -> list[PurePosixPath]:
        uid = self.owner.uid or 0
        gid = self.owner.gid or 0
        try:
            return self.rootfs.mkdirs(path, uid, gid, 0o755)
        except NotADirectoryError as exc:
            raise BuildError(f"{self.where[1]}:{self.where[0]}: {exc.strerror}") from None

    def _host_target(self, target: PurePosixPath) -> Path:
        """The host path for ``target``: parents resolved in the root, the last name not."""
        parent = self.rootfs.resolve(target.parent)
        return parent / target.name

    def _clear(self, host: Path, is_dir: bool) -> None:
        """Make room for a new entry: a file or link goes; a dir stays for a dir."""
        try:
            st = os.lstat(host)
        except FileNotFoundError:
            return
        if stat.S_ISDIR(st.st_mode):
            if is_dir:
                return
            raise BuildError(
                f"{self.where[1]}:{self.where[0]}: cannot copy a file over the directory "
                f"{self.rootfs.to_image_path(host)}")
        os.unlink(host)

    def write_bytes(self, target: PurePosixPath, data: bytes, mode: int) -> PurePosixPath:
        host = self._host_target(target)
        self._clear(host, False)
        with open(host, "wb") as fh:
            fh.write(data)
        os.chown(host, self.owner.uid or 0, self.owner.gid or 0)
        os.chmod(host, self._mode(mode, False))
        return self.rootfs.to_image_path(host)

    def place_file(self, path: Path, target: PurePosixPath, mode: int,
                   mtime: float | None) -> PurePosixPath:
        """Move the finished file ``path`` (on the root's file system) to ``target``."""
        host = self._host_target(target)
        self._clear(host, False)
        os.replace(path, host)
        os.chown(host, self.owner.uid or 0, self.owner.gid or 0)
        os.chmod(host, self._mode(mode, False))
        if mtime is not None:
            os.utime(host, (mtime, mtime))
        return self.rootfs.to_image_path(host)

    def copy_entry(self, src: Path, target: PurePosixPath, follow: bool = False) -> PurePosixPath:
        host = self._host_target(target)
        st = os.stat(src) if follow else os.lstat(src)
        if stat.S_ISDIR(st.st_mode):
            self._copy_dir(src, host, st, None, "")
        else:
            self._copy_nondir(src, host, st)
        return self.rootfs.to_image_path(host)

    def copy_dir_contents(self, src: Path, target: PurePosixPath, ctx: StageContext | None,
                          rel: str) -> list[PurePosixPath]:
        """A directory source: its contents go into ``target`` (created as the source dir)."""
        touched = []
        host = self.rootfs.resolve(target)
        st = os.stat(src)
        if not os.path.lexists(host):
            os.mkdir(host)
            self._set_meta(host, st, is_dir=True)
            touched.append(self.rootfs.to_image_path(host))
        elif not os.path.isdir(host):
            raise BuildError(f"{self.where[1]}:{self.where[0]}: cannot copy directory "
                             f"{rel} onto the file {target}")
        for name in sorted(os.listdir(src)):
            child_rel = posixpath.normpath(posixpath.join(rel, name))
            if ctx is not None and ctx.context.excluded(child_rel):
                if not (os.path.isdir(src / name) and ctx.context.ignore.must_walk(child_rel)):
                    continue
            child_host = host / name
            child_st = os.lstat(src / name)
            if stat.S_ISDIR(child_st.st_mode):
                self._copy_dir(src / name, child_host, child_st, ctx, child_rel)
            elif ctx is not None and ctx.context.excluded(child_rel):
                continue
            else:
                self._copy_nondir(src / name, child_host, child_st)
            touched.append(self.rootfs.to_image_path(child_host))
        return touched

    def _copy_dir(self, src: Path, host: Path, st: os.stat_result, ctx: StageContext | None,
                  rel: str) -> None:
        if os.path.islink(host) or (os.path.lexists(host) and not os.path.isdir(host)):
            os.unlink(host)
        created = not os.path.lexists(host)
        if created:
            os.mkdir(host)
        for entry in _scandir_sorted(src):
            child_rel = posixpath.join(rel, entry.name) if rel else entry.name
            excluded = ctx is not None and ctx.context.excluded(child_rel)
            est = entry.stat(follow_symlinks=False)
            if stat.S_ISDIR(est.st_mode):
                if excluded and not ctx.context.ignore.must_walk(child_rel):  # type: ignore
                    continue
                self._copy_dir(Path(entry.path), host / entry.name, est, ctx, child_rel)
            elif not excluded:
                self._copy_nondir(Path(entry.path), host / entry.name, est)
        # Set the directory's metadata last: writing its entries moved its mtime.
        self._set_meta(host, st, is_dir=True)

    def _copy_nondir(self, src: Path, host: Path, st: os.stat_result) -> None:
        self._clear(host, False)
        mode = st.st_mode
        if stat.S_ISLNK(mode):
            os.symlink(os.readlink(src), host)
        elif stat.S_ISREG(mode):
            _copy_file_data(src, host)
        elif stat.S_ISFIFO(mode):
            os.mkfifo(host)
        elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
            os.mknod(host, mode, st.st_rdev)
        elif stat.S_ISSOCK(mode):
            return  # sockets are not content; Docker skips them too
        self._set_meta(host, st, is_dir=False)

    def _set_meta(self, host: Path, st: os.stat_result, is_dir: bool) -> None:
        uid, gid = self._ids(st)
        os.lchown(host, uid, gid)
        if not stat.S_ISLNK(st.st_mode):
            os.chmod(host, self._mode(st.st_mode, is_dir))
        os.utime(host, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)

    def extract(self, archive: Path, dest: PurePosixPath) -> list[PurePosixPath]:
        """ADD of a local tar archive (plain, gzip, bzip2, xz, zstd): extracted into dest."""
        touched = self.make_dirs(dest)
        host = self.rootfs.resolve(dest)
        try:
            with _open_archive(archive) as tar:
                for member in tar:
                    # The 'tar' filter refuses absolute names, '..' and links out of dest
                    # but keeps owners and modes, as ADD does.
                    tar.extract(member, host, filter=self._extract_filter)
                    name = posixpath.normpath(member.name).split("/")[0]
                    touched.append(self.rootfs.to_image_path(host / name))
        except (tarfile.TarError, OSError) as exc:
            raise BuildError(f"{self.where[1]}:{self.where[0]}: ADD {archive.name}: cannot "
                             f"extract the archive: {exc}") from exc
        return sorted(set(touched))

    def _extract_filter(self, member: tarfile.TarInfo, path: str) -> tarfile.TarInfo | None:
        member = tarfile.tar_filter(member, path)
        if self.owner.uid is not None:
            member = member.replace(uid=self.owner.uid, gid=self.owner.gid or 0, uname="",
                                    gname="", deep=False)
        return member


def _scandir_sorted(path: Path) -> Iterator[os.DirEntry[str]]:
    with os.scandir(path) as it:
        entries = list(it)
    return iter(sorted(entries, key=lambda e: e.name))


def _copy_file_data(src: Path, dst: Path) -> None:
    with open(src, "rb") as fin, open(dst, "wb") as fout:
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


_MAGIC = (b"\x1f\x8b", b"BZh", b"\xfd7zXZ\x00", b"\x28\xb5\x2f\xfd")


def _is_archive(path: Path) -> bool:
    """A tar archive, plain or compressed, recognised by content as Docker does."""
    with open(path, "rb") as fh:
        head = fh.read(512)
    if any(head.startswith(m) for m in _MAGIC):
        try:
            with _open_archive(path) as tar:
                return tar.next() is not None
        except (tarfile.TarError, OSError, EOFError):
            return False
    return len(head) == 512 and head[257:262] == b"ustar"


def _open_archive(path: Path) -> tarfile.TarFile:
    with open(path, "rb") as fh:
        head = fh.read(4)
    if head.startswith(b"\x28\xb5\x2f\xfd"):
        import zstandard

        stream = zstandard.ZstdDecompressor().stream_reader(open(path, "rb"))  # noqa: SIM115
        return tarfile.open(fileobj=stream, mode="r|")
    return tarfile.open(path, mode="r:*")


__all__ = ["StageRef", "handle_add", "handle_copy", "source_root_for"]
