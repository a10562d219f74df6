"""Before any work: every path the build will write must be one it can write.

A build that fails only when it writes its outputs has already pushed, or
taken minutes, for nothing (issue 11). So, as the push permission is checked
before the build, each output path is checked too: ``--tar-path`` and the
digest files must be files in a directory kanipy can write (missing parents
are created), ``--oci-layout-path``, ``--kanipy-dir`` and ``--cache-dir`` must
be directories it can create or write in. A bad path is a usage error (exit 2)
naming the flag. Directories made here for outputs are listed, so a build
that fails can remove them again and leave nothing behind.
"""

from __future__ import annotations

import errno
import logging
import os
import tempfile
from pathlib import Path

from kanipy.errors import UsageError

log = logging.getLogger(__name__)


def prepare_directory(path: Path, flag: str) -> list[Path]:
    """Make sure ``path`` is a directory kanipy can write in; the directories created."""
    if path.exists() and not path.is_dir():
        raise UsageError(f"{flag} {path}: exists and is not a directory; name a directory "
                         "(it is created when missing)")
    created = _make_parents(path, flag)
    _probe(path, flag)
    return created


def check_output_file(path: Path, flag: str) -> list[Path]:
    """Make sure kanipy can write the file ``path``; the parent directories created."""
    if path.is_dir():
        raise UsageError(f"{flag} {path}: is a directory; name a file to write")
    if path.exists() and not path.is_file():
        raise UsageError(f"{flag} {path}: exists and is not a regular file; name a file "
                         "to write")
    created = _make_parents(path.parent, flag, shown=path)
    _probe(path.parent, flag)
    return created


def remove_created(directories: list[Path]) -> None:
    """Remove the directories ``prepare_*`` made, deepest first, when still empty."""
    for directory in sorted(directories, key=lambda p: len(p.parts), reverse=True):
        try:
            directory.rmdir()
        except OSError:
            pass


def _make_parents(path: Path, flag: str, shown: Path | None = None) -> list[Path]:
    flag = f"{flag} {shown or path}"
    missing: list[Path] = []
    current = path
    while not current.exists():
        if current.is_symlink():
            raise UsageError(f"{flag}: {current} is a dangling symlink; name a "
                             "directory kanipy can write")
        missing.append(current)
        if current.parent == current:
            break
        current = current.parent
    if current.exists() and not current.is_dir():
        raise UsageError(f"{flag}: {current} is not a directory")
    created: list[Path] = []
    for directory in reversed(missing):
        try:
            directory.mkdir()
        except FileExistsError:
            continue
        except OSError as exc:
            remove_created(created)
            raise UsageError(f"{flag}: cannot create {directory}: "
                             f"{_reason(exc)}; name a directory kanipy can write") from None
        created.append(directory)
    return created


def _probe(directory: Path, flag: str) -> None:
    """Create and remove a file in ``directory``: the only sure test of writing there
    (``access()`` says yes to root even on a read-only mount or in /proc)."""
    try:
        fd, name = tempfile.mkstemp(prefix=".kanipy-probe-", dir=directory)
    except OSError as exc:
        raise UsageError(f"{flag}: cannot write in {directory}: {_reason(exc)}; name a "
                         "directory kanipy can write") from None
    os.close(fd)
    os.unlink(name)


def _reason(exc: OSError) -> str:
    return exc.strerror or errno.errorcode.get(exc.errno or 0, str(exc))
