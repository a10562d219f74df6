"""Confined image paths: the one place that turns an image path into a host path.

A ``Rootfs`` is a host directory holding an image's filesystem (docs/architecture.md,
decision 1: the root is a directory, never ``/``). Image paths are absolute
POSIX paths inside the image; they are resolved component by component,
following the image's own symlinks the way the kernel would after
``chroot(root)``: an absolute link target starts again at the root and ``..``
never climbs above it (the semantics of Go's ``securejoin``). No image path can
therefore name anything outside the root.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
from pathlib import Path, PurePosixPath

from kanipy.errors import ConfinementError

log = logging.getLogger(__name__)

# Linux gives up after 40 links in one lookup (MAXSYMLINKS, counted over the whole
# walk, nested or not), and so do we: each link may add up to 4095 bytes of
# components to walk, so the cap is what bounds the work of one resolution. At
# 255, a 5 KB layer of links through ``d/../d/..`` cost most of a second of CPU
# per entry (issue 11).
MAX_SYMLINKS = 40


def image_parts(image_path: str | PurePosixPath) -> list[str]:
    """The components of an image path, without empty and ``.`` parts (``..`` kept)."""
    return [p for p in str(image_path).split("/") if p and p != "."]


class Rootfs:
    """A host directory treated as the root of an image's filesystem."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(os.path.realpath(path))

    def __repr__(self) -> str:
        return f"Rootfs({str(self.path)!r})"

    def resolve(
        self,
        image_path: str | PurePosixPath,
        *,
        follow_final: bool = True,
        escape_is_error: bool = False,
    ) -> Path:
        """The host path of ``image_path``, following the image's symlinks inside the root.

        Missing components are allowed (the result may not exist yet). With
        ``follow_final=False`` a symlink in the last component is not followed
        (like ``lstat``). ``..`` at the root stays at the root, as under chroot;
        with ``escape_is_error`` a symlink whose target would climb above the
        root raises ConfinementError instead (the unpacker's stricter rule).
        Too many links raise ConfinementError (ELOOP).
        """
        return self.path.joinpath(
            *self._resolve_parts(image_path, follow_final, escape_is_error)
        )

    def resolve_image_path(
        self, image_path: str | PurePosixPath, *, follow_final: bool = True
    ) -> PurePosixPath:
        """Like ``resolve`` but answers with the symlink-free image path."""
        parts = self._resolve_parts(image_path, follow_final, False)
        return PurePosixPath("/", *parts)

    def _resolve_parts(
        self, image_path: str | PurePosixPath, follow_final: bool, escape_is_error: bool
    ) -> list[str]:
        pending = image_parts(image_path)
        pending.reverse()  # a stack: the next component is at the end
        done: list[str] = []
        links = 0
        while pending:
            name = pending.pop()
            if name == "..":
                if done:
                    done.pop()
                continue
            candidate = self.path.joinpath(*done, name)
            if not pending and not follow_final:
                done.append(name)
                break
            try:
                st = os.lstat(candidate)
            except FileNotFoundError:
                done.append(name)
                continue
            except NotADirectoryError:
                done.append(name)
                continue
            if not stat.S_ISLNK(st.st_mode):
                done.append(name)
                continue
            links += 1
            if links > MAX_SYMLINKS:
                raise ConfinementError(
                    f"too many levels of symbolic links resolving {image_path} "
                    f"({errno.errorcode[errno.ELOOP]})"
                )
            target = os.readlink(candidate)
            target_parts = image_parts(target)
            if target.startswith("/"):
                done = []
            elif escape_is_error:
                depth = len(done)
                for part in target_parts:
                    depth = depth - 1 if part == ".." else depth + 1
                    if depth < 0:
                        link_at = PurePosixPath("/", *done, name)
                        raise ConfinementError(
                            f"symlink {link_at} -> {target} leads outside the root"
                        )
            pending.extend(reversed(target_parts))
        return done

    def exists(self, image_path: str | PurePosixPath, *, follow_final: bool = True) -> bool:
        """True when ``image_path`` names something (a dangling final link counts only
        with ``follow_final=False``)."""
        try:
            self.lstat(self.resolve_image_path(image_path, follow_final=follow_final))
        except OSError:
            return False
        return True

    def lstat(self, image_path: str | PurePosixPath) -> os.stat_result:
        """``lstat`` of ``image_path``; symlinks in parent components are followed
        inside the root, the final component is not."""
        return os.lstat(self.resolve(image_path, follow_final=False))

    def to_image_path(self, host_path: str | os.PathLike[str]) -> PurePosixPath:
        """The image path of a host path under the root (no symlink resolution)."""
        rel = Path(host_path).relative_to(self.path)
        return PurePosixPath("/", *rel.parts)

    def mkdirs(
        self, image_path: str | PurePosixPath, uid: int = 0, gid: int = 0, mode: int = 0o755
    ) -> list[PurePosixPath]:
        """Create ``image_path`` and its missing parents inside the root, as WORKDIR does.

        New directories get ``uid``/``gid`` and ``mode`` (the umask is not applied);
        existing ones are left alone. Returns the symlink-free image paths of the
        directories created, parents first. An existing non-directory in the way
        raises NotADirectoryError.
        """
        created: list[PurePosixPath] = []
        real = self.resolve_image_path(image_path)
        current = PurePosixPath("/")
        for name in real.parts[1:]:
            current = current / name
            # Re-resolve each prefix: an existing component may be a symlink to a
            # directory elsewhere in the image.
            host = self.resolve(current)
            try:
                st = os.lstat(host)
            except FileNotFoundError:
                os.mkdir(host, mode)
                os.chown(host, uid, gid)
                os.chmod(host, mode)
                created.append(self.to_image_path(host))
                continue
            if not stat.S_ISDIR(st.st_mode):
                raise NotADirectoryError(
                    errno.ENOTDIR, f"{current} exists in the image and is not a directory"
                )
        return created
