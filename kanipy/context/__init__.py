"""The build context: where COPY and ADD read from, with .dockerignore applied.

Every source is made into a local directory first (a directory is used in
place; a tarball on disk, on stdin or at a URL is extracted into the work dir;
a git repository is checked out there), so the instruction handlers only ever
read a directory.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from kanipy.dockerfile.ignore import DockerIgnore, load_ignore
from kanipy.errors import BuildError, ContextError, IntegrityError
from kanipy.fieldwise import Fieldwise
from kanipy.fs.compression import open_decompressed
from kanipy.fs.rootfs import Rootfs
from kanipy.fs.unpack import CONTEXT_RULES, extract_tar

log = logging.getLogger(__name__)

# A git repository or a URL; nothing else is fetched, and a local context loads
# neither the git module nor the HTTP stack for it (issue 14).
_REMOTE_PREFIXES = ("git://", "git@", "https://", "http://")


@dataclass(frozen=True, repr=False, eq=False)
class BuildContext(Fieldwise):
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
    stdin: BinaryIO | None = None, env: Mapping[str, str] | None = None,
) -> tuple[BuildContext, Path]:
    """The context for ``source`` and the host path of the Dockerfile.

    ``source`` is one of (Kaniko's and BuildKit's spellings):

    * a directory, or ``dir://DIR``;
    * a tarball (plain, gzip, bzip2, xz; recognised by content, not name), or
      ``tar://FILE``; ``tar://-`` reads it from stdin;
    * a git repository: ``git://…``, ``git@HOST:…``, ``https://….git[#REF[:SUBDIR]]``
      (see ``kanipy.context.git``);
    * ``https://`` or ``http://`` URL of a tarball.

    ``sub_path`` (``--context-sub-path``) narrows any of them to a directory
    inside. ``dockerfile`` is absolute, or relative to the context (as Kaniko
    resolves it), falling back to the working directory. Remote and tarball
    sources are unpacked under ``workdir``; a directory is used in place.
    """
    env = os.environ if env is None else env
    root = _materialize(source, workdir, stdin, env)
    if not root.is_dir():
        raise ContextError(f"--context {_shown(source)!r}: no such directory")
    root = root.resolve()
    if sub_path:
        sub = (root / sub_path).resolve()
        if not sub.is_relative_to(root) or not sub.is_dir():
            raise ContextError(
                f"--context-sub-path {sub_path!r}: not a directory inside the context")
        root = sub
    dockerfile_path = _find_dockerfile(dockerfile, root)
    log.debug("context %s, Dockerfile %s", root, dockerfile_path)
    return BuildContext(root, load_ignore(root, dockerfile_path)), dockerfile_path


def _materialize(source: str, workdir: Path, stdin: BinaryIO | None,
                 env: Mapping[str, str]) -> Path:
    """A local directory holding the context ``source`` names."""
    unpacked = workdir / "context"
    if source.startswith("tar://"):
        path = source[len("tar://"):]
        if path == "-":
            _extract_tar(stdin or sys.stdin.buffer, unpacked, "stdin (tar://-)")
        else:
            try:
                with open(path, "rb") as fh:
                    _extract_tar(fh, unpacked, path)
            except OSError as exc:
                raise ContextError(f"--context {source!r}: {exc.strerror}") from None
        return unpacked
    if source.startswith("dir://"):
        return Path(source[len("dir://"):])
    if source.startswith(_REMOTE_PREFIXES):
        return _fetch(source, workdir, unpacked, env)
    scheme = source.partition("://")[0]
    if "://" in source:
        raise ContextError(
            f"--context {_shown(source)!r}: {scheme}:// contexts are not supported; use a "
            "directory, a tarball (file, tar://-, https://) or a git repository"
        )
    if os.path.isfile(source):
        with open(source, "rb") as fh:
            _extract_tar(fh, unpacked, source)
        return unpacked
    return Path(source)


def _shown(source: str) -> str:
    """``source`` for a message, any password in a URL hidden."""
    if "://" not in source:
        return source
    from kanipy.http import redact_url

    return redact_url(source)


def _fetch(source: str, workdir: Path, unpacked: Path, env: Mapping[str, str]) -> Path:
    """A git repository checked out, or a tarball URL downloaded and extracted, in ``unpacked``."""
    from kanipy.context.git import checkout, is_git_source, parse_git_source
    from kanipy.http import download_to_file, redact_url

    if is_git_source(source):
        spec = parse_git_source(source, env)
        return checkout(spec, unpacked, env)
    # Kaniko's "Https Context", BuildKit's remote tarball: saved to the work dir
    # while it streams, then extracted like a local context tarball.
    shown = redact_url(source)
    log.info("downloading context %s", shown)
    fetched = download_to_file(source, workdir, what=f"--context {shown}",
                               error=ContextError)
    try:
        with open(fetched.path, "rb") as fh:
            _extract_tar(fh, unpacked, shown)
    finally:
        fetched.path.unlink()
    return unpacked


def _find_dockerfile(dockerfile: str, root: Path) -> Path:
    candidate = Path(dockerfile)
    if candidate.is_absolute():
        tried = [candidate]
    else:
        # Relative to the context, then to the working directory; once when they
        # are the same directory (issue 12: the error listed one path twice).
        tried = list(dict.fromkeys(
            (base / candidate).absolute() for base in (root, Path.cwd())))
    for path in tried:
        if path.is_file():
            return path
    raise ContextError(
        f"Dockerfile {dockerfile!r} not found (looked at {', '.join(str(p) for p in tried)}); "
        "pass --dockerfile with a path absolute or relative to the context"
    )


def _extract_tar(stream: BinaryIO, root: Path, what: str) -> None:
    """Extract a context tarball (plain or compressed, by content) into ``root``;
    entries or links leaving it are refused (``kanipy.fs.unpack.CONTEXT_RULES``)."""
    root.mkdir(parents=True, exist_ok=True)
    label = f"--context {what}"
    try:
        extract_tar(Rootfs(root), open_decompressed(stream, "auto", label), what=label,
                    rules=CONTEXT_RULES)
    except IntegrityError as exc:
        raise ContextError(f"{label}: not a readable tarball: {exc.message}") from None
    except BuildError as exc:  # ConfinementError among them
        raise ContextError(exc.message) from None
    except OSError as exc:
        raise ContextError(f"{label}: cannot extract the tarball: {exc}") from None


__all__ = ["BuildContext", "ContextError", "open_context"]
