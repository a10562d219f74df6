"""COPY and ADD: what each source becomes in the root, decided the way BuildKit does.

``COPY [--from=…] [--chown=…] [--chmod=…] [--link] [--parents] [--exclude=…] src... dest``
``ADD [--chown=…] [--chmod=…] [--checksum=…] [--keep-git-dir] [--unpack=…] src... dest``

Rules (Dockerfile reference "COPY"/"ADD"; BuildKit's dockerfile2llb and
fsutil ``copy.Copy``/``prepareTargetDir``):

* sources are relative to the context (``.dockerignore`` applied) or to the
  ``--from`` root, may hold Go wildcards, and a top-level symlink is followed
  inside its root; several sources need a destination ending in ``/``;
* a relative destination is against WORKDIR; the destination path is resolved
  inside the root, following the image's own symlinks (the last one too);
* a directory source copies its contents: into the destination when it exists,
  else into a new 0755 directory owned like ``--chown`` (or 0:0);
* a file source goes to ``dest/NAME`` when the destination is a directory,
  else it becomes the destination;
* ADD extracts local tar archives (by content) into the destination, downloads
  URLs (0600, mtime from Last-Modified) and clones git repositories.

Everything remote is fetched and verified before the first write.
"""

from __future__ import annotations

import logging
import os
import posixpath
import stat
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import Any

from kanipy.dockerfile import Add, Copy, StageRef
from kanipy.dockerfile.ignore import DockerIgnore
from kanipy.errors import BuildError, DockerfileError
from kanipy.executor.handlers.archive import extract_archive, is_tar_archive
from kanipy.executor.handlers.copy_sources import Source, SourceFinder, has_wildcard
from kanipy.executor.handlers.copy_tree import Ownership, SkipRule, TreeWriter
from kanipy.executor.handlers.download import (
    Downloaded,
    clone_git,
    download,
    is_git_url,
    is_url,
)
from kanipy.executor.handlers.users import exec_user
from kanipy.executor.step import StageContext, StageState, StepError, StepResult
from kanipy.fs.rootfs import Rootfs
from kanipy.oci.digest import Digest

log = logging.getLogger(__name__)


def handle_copy(ins: Copy, state: StageState, ctx: StageContext) -> StepResult:
    """``COPY src... dest``: the destinations written are snapshotted, nothing else."""
    touched = _CopyStep(ins, state, ctx).run()
    return StepResult(state=state, changed=frozenset(touched),
                      created_by=f"{ins.render()} # buildkit",
                      cache_inputs=copy_inputs(ins, state))


def handle_add(ins: Add, state: StageState, ctx: StageContext) -> StepResult:
    """``ADD src... dest``: COPY plus local archives extracted, URLs and git fetched."""
    touched = _CopyStep(ins, state, ctx).run()
    return StepResult(state=state, changed=frozenset(touched),
                      created_by=f"{ins.render()} # buildkit",
                      cache_inputs=copy_inputs(ins, state))


def copy_inputs(ins: Copy, state: StageState) -> dict[str, Any]:
    """The expanded sources, destination and flags a cache key is made of (the
    contents of the sources are the layer cache's to add)."""
    inputs: dict[str, Any] = {
        "keyword": ins.keyword, "sources": list(ins.sources), "dest": ins.dest,
        "workdir": state.workdir, "from": ins.from_, "chown": ins.chown, "chmod": ins.chmod,
        "link": ins.link, "parents": ins.parents, "excludes": list(ins.excludes),
        "heredocs": [[doc.name, doc.stripped_content] for doc in ins.heredocs],
    }
    if isinstance(ins, Add):
        inputs.update(checksum=ins.checksum, keep_git_dir=ins.keep_git_dir, unpack=ins.unpack)
    return inputs


def source_root_for(from_: str, ctx: StageContext) -> Path:
    """The root a ``--from`` names: an earlier stage (name or index) or an image."""
    index = ctx.stages.find(from_)
    if index is None:
        return ctx.roots.image_root(from_)
    if index >= ctx.stages.current:
        raise StepError(f"--from={from_} refers to this or a later stage",
                        kind=DockerfileError)
    try:
        return ctx.roots.stage_root(index)
    except KeyError:
        raise BuildError(f"--from={from_}: stage {ctx.stages.labels[index]} was not built"
                         ) from None


def ownership_for(chown: str | None, rootfs: Rootfs, keep_source: bool) -> Ownership:
    """``--chown=user[:group]``: names from the image's own passwd/group files.

    BuildKit (solver/llbsolver/file ``readUser``): a user name gives its uid and
    its primary gid; a numeric uid without a group gives gid = uid. Without
    --chown, entries from the context are 0:0 and from --from keep their owner.
    """
    if not chown:
        return Ownership(None, None) if keep_source else Ownership(0, 0)
    user, _, group = chown.partition(":")
    try:
        if user.isascii() and user.isdigit():
            uid = gid = int(user)
        else:
            resolved = exec_user(rootfs, user)
            uid, gid = resolved.uid, resolved.gid
        if group:
            numeric = group.isascii() and group.isdigit()
            gid = int(group) if numeric else exec_user(rootfs, f"0:{group}").gid
    except BuildError as exc:
        raise StepError(f"--chown={chown}: {exc}") from None
    return Ownership(uid, gid)


class _CopyStep:
    """One COPY/ADD instruction being carried out."""

    def __init__(self, ins: Copy, state: StageState, ctx: StageContext) -> None:
        self.ins = ins
        self.ctx = ctx
        self.add = isinstance(ins, Add)
        self.rootfs = ctx.rootfs
        self.from_context = ins.from_ is None
        dest_text = ins.dest if posixpath.isabs(ins.dest) else \
            posixpath.join(state.workdir, ins.dest)
        # dockerfile2llb: a destination ending in "/" (or ".") names a directory.
        self.dest_is_dir = ins.dest.endswith(("/", "/.")) or ins.dest in (".", "")
        self.dest = PurePosixPath("/" + posixpath.normpath(dest_text).lstrip("/"))
        self.owner = ownership_for(ins.chown, self.rootfs, not self.from_context)
        self.writer = TreeWriter(self.rootfs, self.owner, ins.chmod)
        try:
            self.excludes = DockerIgnore(list(ins.excludes)) if ins.excludes else None
        except ValueError as exc:  # an unterminated [ in an --exclude pattern
            raise StepError(f"--exclude: {exc}", kind=DockerfileError) from None
        self.touched: list[PurePosixPath] = []
        self.matched = 0  # sources the patterns matched, before --exclude

    def _fail(self, message: str) -> StepError:
        return StepError(message, DockerfileError)

    # --- the plan ------------------------------------------------------------------------

    def run(self) -> list[PurePosixPath]:
        ins = self.ins
        if ins.link:
            log.debug("line %s: --link gives the same files; kanipy writes them in place", ins.line)
        count = len(ins.sources) + len(ins.heredocs)
        if count > 1 and not self.dest_is_dir:
            raise self._fail(
                f"When using {ins.keyword} with more than one source file, the destination "
                f"must be a directory and end with a / (got {ins.dest!r})")
        expected = self._checksum()
        with self._scratch() as scratch:
            # Fetch and match everything first: a missing source, a failed download or a
            # checksum mismatch stops the step before anything is written.
            plan: list[Source | Downloaded | Path] = []
            for pattern in ins.sources:
                if self.add and is_git_url(pattern):
                    assert isinstance(ins, Add)
                    plan.append(clone_git(pattern, scratch, ins.keep_git_dir))
                elif self.add and is_url(pattern):
                    plan.append(download(pattern, scratch, expected))
                else:
                    plan += self._find(pattern)
            total = len(plan) + len(ins.heredocs)
            if total > 1 and not self.dest_is_dir and not self._dest_is_existing_dir():
                # Dockerfile reference: "If multiple <src> resources are specified, either
                # directly or due to the use of a wildcard, then <dest> must be a directory,
                # and it must end with a slash /."
                raise StepError(
                    f"{ins.keyword} failed: the sources name {total} files, so the "
                    f"destination must be a directory ending in / (got {ins.dest!r})")
            if plan or ins.heredocs or self.matched:
                # BuildKit's fileop returns before copy.Copy (which makes the destination)
                # when a wildcard matched nothing: with nothing to copy, nothing is made.
                self._make_dirs(self.dest if self.dest_is_dir else self.dest.parent)
            for doc in ins.heredocs:
                target = self._file_target(doc.name)
                self.writer.write_file(target, doc.stripped_content.encode(), 0o644)
                self.touched.append(self.writer.image_path(target))
            for item in plan:
                if isinstance(item, Downloaded):
                    self._place_download(item)
                elif isinstance(item, Path):
                    self._copy_dir_source(item, None, "")
                else:
                    self._copy_source(item)
        return self.touched

    def _checksum(self) -> Digest | None:
        checksum = getattr(self.ins, "checksum", None)
        if not checksum:
            return None
        if len(self.ins.sources) != 1 or not is_url(self.ins.sources[0]) or \
                is_git_url(self.ins.sources[0]):
            raise self._fail("ADD --checksum needs exactly one http(s) URL source")
        try:
            return Digest.parse(checksum)
        except ValueError as exc:
            raise self._fail(f"ADD --checksum={checksum}: {exc}") from None

    @contextmanager
    def _scratch(self) -> Iterator[Path]:
        with tempfile.TemporaryDirectory(prefix="copy-", dir=self.ctx.scratch_dir) as tmp:
            yield Path(tmp)

    def _find(self, pattern: str) -> list[Source]:
        ins = self.ins
        if self.from_context:
            finder = SourceFinder(self.ctx.context.root, self.ctx.context,
                                  "the build context", ins.keyword)
        else:
            root = source_root_for(ins.from_ or "", self.ctx)
            finder = SourceFinder(root, None, f"--from={ins.from_}", ins.keyword)
        found = finder.find(pattern)
        self.matched += len(found)  # before --exclude: BuildKit's copy still runs
        if self.excludes is not None and has_wildcard(pattern):
            found = [s for s in found if not self.excludes.excludes(s.rel)]
        if ins.parents:
            pivot = _parents_pivot(pattern)
            found = [Source(s.host, posixpath.relpath(s.rel, pivot) if pivot else s.rel)
                     for s in found]
        return found

    def _dest_is_existing_dir(self) -> bool:
        return os.path.isdir(self.rootfs.resolve(self.dest))

    def _make_dirs(self, image_path: PurePosixPath) -> None:
        self.touched += self.writer.make_dirs(self.rootfs.resolve_image_path(image_path))

    def _file_target(self, name: str) -> Path:
        """Where a file source named ``name`` goes: into the destination when that is a
        directory (after following links inside the root), else the destination itself."""
        host = self.rootfs.resolve(self.dest)
        if os.path.isdir(host):
            return host / name
        self._make_dirs(self.rootfs.to_image_path(host).parent)
        return host

    # --- one source ----------------------------------------------------------------------

    def _copy_source(self, src: Source) -> None:
        st = os.stat(src.host)
        if self.ins.parents:
            self._copy_with_parents(src, st)
        elif stat.S_ISDIR(st.st_mode):
            self._copy_dir_source(src.host, self._skip_rule(src.rel), src.rel)
        elif self.add and getattr(self.ins, "unpack", None) is not False and \
                stat.S_ISREG(st.st_mode) and is_tar_archive(src.host):
            self._extract(src.host)
        else:
            target = self._file_target(posixpath.basename(src.rel))
            self._note(self.writer.copy_entry(src.host, target, st=st))

    def _copy_dir_source(self, host: Path, skip: SkipRule | None, rel: str) -> None:
        dest_host = self.rootfs.resolve(self.dest)
        if os.path.lexists(dest_host) and not os.path.isdir(dest_host):
            raise StepError(
                f"{self.ins.keyword} failed: cannot copy the directory {rel or '.'!r} to "
                f"{self.dest}: it exists in the image and is not a directory")
        if not os.path.lexists(dest_host):
            self._make_dirs(self.dest)  # fsutil MkdirAll: 0755, the --chown owner
            dest_host = self.rootfs.resolve(self.dest)
        self._note(self.writer.copy_contents(host, dest_host, skip))

    def _copy_with_parents(self, src: Source, st: os.stat_result) -> None:
        """--parents: the source's path below its root (or below a ``/./`` pivot) is
        kept under the destination; parent directories made take the source's own
        metadata (BuildKit copies them with include patterns)."""
        parts = [p for p in src.rel.split("/") if p not in ("", ".")]
        host = self.rootfs.resolve(self.dest)
        for index, name in enumerate(parts[:-1]):
            host = host / name
            if not os.path.lexists(host):
                os.mkdir(host, 0o700)
                # the source directory at the same depth (parents[0] is the direct one)
                source_dir = src.host.parents[len(parts) - 2 - index]
                self.writer.set_metadata(host, os.stat(source_dir))
            elif not os.path.isdir(host) or os.path.islink(host):
                raise StepError(f"--parents: {self.writer.image_path(host)} exists in the "
                                "image and is not a directory")
        if not parts:
            self._copy_dir_source(src.host, self._skip_rule(src.rel), src.rel)
            return
        self._note(self.writer.copy_entry(src.host, host / parts[-1],
                                          self._skip_rule(src.rel), st=st))

    def _note(self, written: list[Path]) -> None:
        self.touched += [self.writer.image_path(host) for host in written]

    def _skip_rule(self, source_rel: str) -> SkipRule | None:
        """Entries below a directory source to leave out: ``.dockerignore`` (paths from
        the context root) and ``--exclude`` (paths from the source directory)."""
        ignore = self.ctx.context.ignore if self.from_context else None
        base = "" if source_rel in ("", ".") else source_rel
        rules = [(r, p) for r, p in ((ignore, base + "/" if base else ""), (self.excludes, ""))
                 if r is not None and r.patterns]
        return _IgnoreRules(rules) if rules else None

    def _extract(self, archive: Path) -> None:
        self._make_dirs(self.dest)
        owner = self.owner if self.ins.chown else Ownership(None, None)
        real_dest = self.rootfs.resolve_image_path(self.dest)
        self.touched += extract_archive(archive, self.rootfs, real_dest, owner)

    def _place_download(self, item: Downloaded) -> None:
        if getattr(self.ins, "unpack", None) is True and is_tar_archive(item.path):
            # For URLs Docker unpacks only when asked (ADD --unpack=true).
            self._extract(item.path)
            return
        target = self._file_target(item.name)
        self.writer.write_file(target, item.path, 0o600, item.mtime_ns)
        self.touched.append(self.writer.image_path(target))


class _IgnoreRules:
    """A SkipRule from ignore matchers, each with the prefix that makes a path below
    the copied source into the path its patterns are written against."""

    def __init__(self, rules: list[tuple[DockerIgnore, str]]) -> None:
        self.rules = rules

    def __call__(self, rel: str, is_dir: bool) -> bool:
        for rules, prefix in self.rules:
            path = prefix + rel
            if rules.excludes(path) and not (is_dir and rules.must_walk(path)):
                return True
        return False

    def applies_below(self, rel: str) -> bool:
        return any(rules.may_match_below((prefix + rel).rstrip("/"))
                   for rules, prefix in self.rules)


def _parents_pivot(pattern: str) -> str:
    """The part of a --parents source before a ``/./`` pivot, dropped from the copy
    (``COPY --parents ./a/./b/c /d/`` gives ``/d/b/c``); "" when there is none."""
    text = pattern.lstrip("/")
    while text.startswith("./"):
        text = text[2:]
    index = text.find("/./")
    return posixpath.normpath(text[:index]) if index >= 0 else ""


__all__ = ["StageRef", "handle_add", "handle_copy", "ownership_for", "source_root_for"]
