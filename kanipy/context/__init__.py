"""The build context: where COPY and ADD read from, with .dockerignore applied.

Every source is made into a local directory first (a directory is used in
place; a tarball, on disk or on stdin, is extracted into the work dir), so the
instruction handlers only ever read a directory.
"""

from __future__ import annotations

import logging
import os
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from kanipy.dockerfile.ignore import DockerIgnore, load_ignore
from kanipy.errors import UsageError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BuildContext:
    """A context directory and its ignore rules.

    ``root`` is a real directory; paths inside are context-relative POSIX paths.
    """

    root: Path
    ignore: DockerIgnore

    def excluded(self, relpath: str) -> bool:
        """True when ``.dockerignore`` keeps ``relpath`` out of the context."""
        rel = relpath.strip("/")
        return bool(rel) and self.ignore.excludes(rel)


def open_context(
    source: str, workdir: Path, dockerfile: str, sub_path: str | None = None,
    stdin: BinaryIO | None = None,
) -> tuple[BuildContext, Path]:
    """The context for ``source`` and the host path of the Dockerfile.

    ``source`` is a directory, a ``.tar``/``.tar.gz`` file, or ``tar://-`` for a
    tarball on stdin (the other forms arrive with their issue). ``dockerfile``
    is absolute, or relative to the context (as Kaniko resolves it), falling
    back to the working directory.
    """
    if source == "tar://-" or source.startswith("tar://"):
        path = source[len("tar://"):]
        root = workdir / "context"
        if path == "-":
            _extract_tar(stdin or sys.stdin.buffer, root, "stdin")
        else:
            with open(path, "rb") as fh:
                _extract_tar(fh, root, path)
    elif source.startswith("dir://"):
        root = Path(source[len("dir://"):])
    elif os.path.isfile(source) and _looks_like_tar(source):
        root = workdir / "context"
        with open(source, "rb") as fh:
            _extract_tar(fh, root, source)
    elif "://" in source or source.startswith("git@"):
        raise UsageError(
            f"--context {source!r}: remote contexts (git, https) are not supported yet; "
            "check the repository out first and pass its directory"
        )
    else:
        root = Path(source)
    if not root.is_dir():
        raise UsageError(f"--context {source!r}: no such directory")
    root = root.resolve()
    if sub_path:
        sub = (root / sub_path).resolve()
        if not sub.is_relative_to(root) or not sub.is_dir():
            raise UsageError(f"--context-sub-path {sub_path!r}: not a directory inside the context")
        root = sub
    dockerfile_path = _find_dockerfile(dockerfile, root)
    return BuildContext(root, load_ignore(root, dockerfile_path)), dockerfile_path


def _find_dockerfile(dockerfile: str, root: Path) -> Path:
    candidate = Path(dockerfile)
    if candidate.is_absolute():
        tried = [candidate]
    else:
        tried = [root / candidate, Path.cwd() / candidate]
    for path in tried:
        if path.is_file():
            return path
    raise UsageError(
        f"Dockerfile {dockerfile!r} not found (looked at {', '.join(str(p) for p in tried)}); "
        "pass --dockerfile with a path absolute or relative to the context"
    )


def _looks_like_tar(path: str) -> bool:
    return path.endswith((".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz", ".tar.zst"))


def _extract_tar(stream: BinaryIO, root: Path, what: str) -> None:
    """Extract a context tarball; the 'data' filter refuses entries leaving ``root``."""
    root.mkdir(parents=True, exist_ok=True)
    try:
        with tarfile.open(fileobj=stream, mode="r|*") as tar:
            tar.extractall(root, filter="data")
    except (tarfile.TarError, OSError) as exc:
        raise UsageError(f"--context {what}: cannot extract the tarball: {exc}") from exc
