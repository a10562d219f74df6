"""The directories of one RUN step's ``--mount=type=cache`` mounts, locked as ``sharing`` says.

BuildKit's modes (Dockerfile reference, "RUN --mount=type=cache"): ``shared``
(the default) lets every step and build use the directory at once; ``locked``
makes a second user wait until the first is done; ``private`` gives a second
user a directory of its own. Caches live under one root that builds may share
(``--cache-dir`` on a volume of a CI fleet, issue 13): the locks are ``flock``
locks on a file beside each directory, so they hold between processes and end
with a process that dies.

A step takes all its caches at once (``open_cache_dirs``), so that

- two builds whose steps mount the same ``locked`` caches in different orders
  cannot deadlock: blocking locks are taken in one order, by directory name,
  and ``private`` instances (which never wait) last;
- a step that mounts one cache twice locks it once: a second ``flock`` of the
  same file through a new descriptor would wait for the step itself forever;
- a new directory is made under a lock of its own: ``rename`` replaces an
  empty directory, so two builds making one cache at once would otherwise
  each mount a directory, one of them no longer reachable by its name.

Names stay as they were: ``NAME`` (``NAME.1``, ``NAME.2`` for more private
instances) and ``NAME.lock``, so builds of either version share a cache root.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import re
import tempfile
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from kanipy.fieldwise import Fieldwise

log = logging.getLogger(__name__)

SHARING_MODES = ("shared", "private", "locked")


@dataclass(frozen=True, repr=False, eq=False)
class CacheMountRequest(Fieldwise):
    """One ``--mount=type=cache``: its key (``id``, else the absolute target) and options."""

    key: str
    sharing: str = "shared"
    uid: int = 0
    gid: int = 0
    mode: int = 0o755


def cache_dir_name(key: str) -> str:
    """A readable prefix for people looking at the disk, and a hash, so that ids
    differing only in characters that are unsafe in a file name stay apart."""
    readable = re.sub(r"[^A-Za-z0-9._-]+", "_", key).strip("_")[:48] or "cache"
    return f"{readable}-{hashlib.sha256(key.encode()).hexdigest()[:16]}"


def open_cache_dirs(requests: Sequence[CacheMountRequest], root: Path, held: ExitStack
                    ) -> list[Path]:
    """The directory for each request, in order, locked until ``held`` is closed.

    ``shared`` holds a shared lock, ``locked`` an exclusive one (waiting for
    it), ``private`` the first instance no one holds, made when all are busy.
    One cache asked for twice by ``shared``/``locked`` mounts is one directory
    under the stronger lock; each ``private`` mount gets its own instance.
    A new directory gets the request's ``uid``, ``gid`` and ``mode``.
    """
    for request in requests:
        if request.sharing not in SHARING_MODES:
            raise ValueError(f"cache sharing {request.sharing!r}: expected "
                             f"{', '.join(SHARING_MODES)}")
    if not requests:
        return []  # a step without cache mounts leaves no cache root behind
    root.mkdir(parents=True, exist_ok=True)
    found: dict[int, Path] = {}
    # Blocking locks first, one per cache, strongest mode, in name order.
    blocking: dict[str, list[int]] = {}
    for index, request in enumerate(requests):
        if request.sharing != "private":
            blocking.setdefault(cache_dir_name(request.key), []).append(index)
    for name in sorted(blocking):
        indexes = blocking[name]
        exclusive = any(requests[i].sharing == "locked" for i in indexes)
        directory = root / name
        _lock(held, directory, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        _ensure_directory(root, directory, requests[indexes[0]])
        for i in indexes:
            found[i] = directory
    # Private instances never wait, so taking them last cannot deadlock.
    for index, request in enumerate(requests):
        if request.sharing == "private":
            found[index] = _private_instance(root, cache_dir_name(request.key), request, held)
    for index, request in enumerate(requests):
        log.debug("cache %r (%s) at %s", request.key, request.sharing, found[index])
    return [found[i] for i in range(len(requests))]


def _private_instance(root: Path, name: str, request: CacheMountRequest, held: ExitStack
                      ) -> Path:
    instance = 0
    while True:
        directory = root / (name if instance == 0 else f"{name}.{instance}")
        if _lock(held, directory, fcntl.LOCK_EX | fcntl.LOCK_NB):
            _ensure_directory(root, directory, request)
            return directory
        instance += 1


def _lock(held: ExitStack, directory: Path, operation: int) -> bool:
    """flock ``DIRECTORY.lock``; False when a non-blocking lock is held by another."""
    fd = os.open(f"{directory}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, operation)
    except BlockingIOError:
        os.close(fd)
        return False
    except BaseException:
        os.close(fd)
        raise
    held.callback(os.close, fd)
    return True


def _ensure_directory(root: Path, directory: Path, request: CacheMountRequest) -> None:
    """Make ``directory`` with the request's owner and mode unless it exists.

    Under an exclusive lock of the cache root, held only for this: two builds
    making one cache must end up with one directory.
    """
    if directory.is_dir():
        return
    with ExitStack() as creating:
        _lock(creating, root / ".create", fcntl.LOCK_EX)
        if directory.is_dir():
            return
        fresh = Path(tempfile.mkdtemp(prefix=".new-", dir=root))
        try:
            os.chown(fresh, request.uid, request.gid)
            fresh.chmod(request.mode)
            fresh.rename(directory)
        except BaseException:
            fresh.rmdir()
            raise
