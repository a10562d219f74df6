"""A full disk, said plainly: ENOSPC as a BuildError naming the filesystem and the work.

Any stage of a build can fill a disk: downloading and unpacking a base,
writing a layer into the blob store (``--cache-dir`` included), the
``--tar-path`` archive, the OCI layout. Wherever it happens the user needs the
same three facts (issue 11): which filesystem is full, what kanipy was
writing, and about how much room that needs. ``no_space_left`` wraps a piece
of work and turns an ENOSPC or EDQUOT met inside it, however deeply wrapped
(``__cause__``/``__context__``), into that message, exit 1.
"""

from __future__ import annotations

import errno
import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from kanipy.errors import BuildError

_NO_SPACE = frozenset({errno.ENOSPC, errno.EDQUOT})
MB = 1_000_000


class NoSpaceError(BuildError):
    """A filesystem kanipy writes to is full (or over quota)."""


def disk_full_cause(exc: BaseException) -> OSError | None:
    """The ENOSPC/EDQUOT OSError behind ``exc`` (itself, a cause or a context), or None."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in _NO_SPACE:
            return current
        current = current.__cause__ or current.__context__
    return None


def mount_point(path: str | os.PathLike[str]) -> Path:
    """The mount point of the filesystem holding ``path`` (its nearest existing ancestor)."""
    current = Path(os.path.abspath(path))
    while not current.exists() and current.parent != current:
        current = current.parent
    dev = os.stat(current).st_dev
    while current.parent != current and os.stat(current.parent).st_dev == dev:
        current = current.parent
    return current


def _fs_type(mount: Path) -> str | None:
    try:
        with open("/proc/self/mounts", encoding="utf-8", errors="replace") as mounts:
            found = None
            for line in mounts:
                fields = line.split()
                if len(fields) >= 3 and fields[1].replace("\\040", " ") == str(mount):
                    found = fields[2]  # the last mount over a point is the visible one
            return found
    except OSError:
        return None


def describe_no_space(path: str | os.PathLike[str], doing: str, needs: int | None) -> str:
    mount = mount_point(path)
    kind = _fs_type(mount)
    text = f"no space left on {mount}{f' ({kind})' if kind else ''} while {doing}"
    if needs:
        text += f" (needs about {max(1, round(needs / MB))} MB)"
    return text + "; free some space there or point kanipy at a larger filesystem"


def _fullest(paths: list[str | os.PathLike[str]]) -> str | os.PathLike[str]:
    """Of the filesystems holding ``paths``, the one with the least room left.

    A write() that fails with ENOSPC names no file; when the work writes to
    more than one filesystem (the root and a --cache-dir), the full one is
    the one with least room, even after the partial file was removed.
    """
    def free(path: str | os.PathLike[str]) -> int:
        try:
            return shutil.disk_usage(mount_point(path)).free
        except OSError:
            return 1 << 62
    return min(paths, key=free)


def room_taken_since(paths: list[str | os.PathLike[str]]) -> Callable[[], int | None]:
    """A ``needs`` for ``no_space_left`` where the work's size is not known beforehand.

    Takes the free room of each filesystem holding ``paths`` now; the function
    it returns gives how much of it the work has taken since (summed over those
    filesystems), or None when nothing was. Called once the disk is full, that
    is the room the work had written when it failed: a stage's root and layers
    so far, the steps' own files. The work needs at least that much, so it is
    the figure shown (another process writing there meanwhile counts too).
    """
    before: dict[int, tuple[Path, int]] = {}
    for path in paths:
        try:
            mount = mount_point(path)
            before.setdefault(os.stat(mount).st_dev, (mount, shutil.disk_usage(mount).free))
        except OSError:
            continue

    def taken() -> int | None:
        total = 0
        for mount, free in before.values():
            try:
                total += max(0, free - shutil.disk_usage(mount).free)
            except OSError:
                continue
        return total or None
    return taken


@contextmanager
def no_space_left(paths: str | os.PathLike[str] | list[str | os.PathLike[str]], doing: str,
                  needs: int | Callable[[], int | None] | None = None) -> Iterator[None]:
    """Run the body; a full disk inside it raises NoSpaceError naming the filesystem.

    ``paths`` is where the work writes (the OSError's own file name wins when
    it has one); ``needs`` is the room the work takes, in bytes, or a function
    giving it once the failure is known; None leaves the figure out.
    """
    try:
        yield
    except NoSpaceError:
        raise
    except Exception as exc:
        cause = disk_full_cause(exc)
        if cause is None:
            raise
        candidates = paths if isinstance(paths, list) else [paths]
        where = cause.filename if isinstance(cause.filename, str) else _fullest(candidates)
        size = needs() if callable(needs) else needs
        raise NoSpaceError(describe_no_space(where, doing, size)) from exc
