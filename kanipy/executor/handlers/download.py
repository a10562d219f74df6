"""ADD's remote sources: http(s) files and git repositories, fetched to a scratch place.

Nothing here writes into the root: a URL is downloaded to a temporary file and
verified (``--checksum``) first, a git repository is cloned into a temporary
directory; the caller then copies from there, so a failed fetch or a checksum
mismatch leaves the image untouched.

Docker's rules (Dockerfile reference, "ADD"): a downloaded file gets mode 0600
and, when the server sends ``Last-Modified``, that time as its mtime; its name
is the last component of the URL path. A git source is cloned with the ``git``
command; ``#ref`` picks a branch, tag or commit and ``:subdir`` a directory;
the ``.git`` directory is kept only with ``--keep-git-dir``.
"""

from __future__ import annotations

import email.utils
import logging
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from urllib.parse import unquote, urlsplit

import requests

from kanipy import __version__
from kanipy.errors import BuildError
from kanipy.oci.digest import Digest, HashingWriter

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Downloaded:
    """A verified download in a temporary file (the caller removes it)."""

    path: Path
    name: str
    mtime_ns: int | None


def is_url(source: str) -> bool:
    return source.startswith(("http://", "https://"))


def is_git_url(source: str) -> bool:
    """BuildKit's test (``gitutil.IsGitTransport`` + ``.git`` suffix): ``git://``,
    ``git@host:``, ``ssh://``, or an http(s) URL whose path ends in ``.git``."""
    if source.startswith(("git://", "git@", "ssh://")):
        return True
    if is_url(source):
        path = urlsplit(source.split("#", 1)[0]).path
        return path.endswith(".git") or path.endswith(".git/")
    return False


def url_file_name(url: str) -> str:
    """The name Docker gives a downloaded file: the URL path's last component."""
    path = unquote(urlsplit(url).path).rstrip("/")
    return PurePosixPath(path).name or "__unnamed__"


def download(url: str, scratch: Path, expected: Digest | None, where: str) -> Downloaded:
    """GET ``url`` into a file under ``scratch``; verified against ``expected``."""
    try:
        resp = requests.get(url, stream=True, timeout=(10, 60),
                            headers={"User-Agent": f"kanipy/{__version__}"})
    except requests.RequestException as exc:
        raise BuildError(f"{where}: ADD {url}: download failed: {exc}") from exc
    fd, tmp_name = tempfile.mkstemp(prefix="add-", dir=scratch)
    tmp = Path(tmp_name)
    try:
        with resp, os.fdopen(fd, "wb") as out:
            if resp.status_code != 200:
                raise BuildError(f"{where}: ADD {url}: the server answered "
                                 f"{resp.status_code} {resp.reason}")
            algorithm = expected.algorithm if expected else "sha256"
            hasher = HashingWriter(out, algorithm)  # type: ignore[arg-type]
            for chunk in resp.iter_content(1 << 20):
                hasher.write(chunk)
        if expected is not None and hasher.digest != expected:
            raise BuildError(
                f"{where}: ADD {url}: checksum mismatch: expected {expected}, got "
                f"{hasher.digest}; nothing was written to the image")
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return Downloaded(tmp, url_file_name(url), _last_modified_ns(resp.headers))


def _last_modified_ns(headers: requests.structures.CaseInsensitiveDict[str]) -> int | None:
    value = headers.get("Last-Modified")
    if not value:
        return None
    try:
        return int(email.utils.parsedate_to_datetime(value).timestamp()) * 1_000_000_000
    except (TypeError, ValueError):
        log.debug("ignoring an unparseable Last-Modified: %r", value)
        return None


def clone_git(source: str, scratch: Path, keep_git_dir: bool, where: str) -> Path:
    """Clone ``URL[#ref][:subdir]`` into a new directory under ``scratch``; returns
    the directory to copy (the subdir when one is named)."""
    git = shutil.which("git")
    if git is None:
        raise BuildError(f"{where}: ADD {source}: the git command is needed for git "
                         "sources and was not found")
    url, _, fragment = source.partition("#")
    ref, _, subdir = fragment.partition(":")
    target = Path(tempfile.mkdtemp(prefix="add-git-", dir=scratch))
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0", "GIT_CONFIG_NOSYSTEM": "1"}
    _git([git, "clone", "--quiet", "--no-checkout", "--", url, str(target)], env, source,
         where)
    commit = _resolve_ref(git, target, ref or "HEAD", env)
    if commit is None:
        raise BuildError(f"{where}: ADD {_redact(source)}: no branch, tag or commit "
                         f"{ref!r} in the repository")
    _git([git, "-C", str(target), "checkout", "--quiet", "--detach", commit, "--"],
         env, source, where)
    _git([git, "-C", str(target), "submodule", "update", "--quiet", "--init", "--recursive"],
         env, source, where)
    if not keep_git_dir:
        shutil.rmtree(target / ".git")
    if subdir:
        clean = os.path.normpath("/" + subdir).lstrip("/")
        chosen = (target / clean).resolve()
        if not chosen.is_relative_to(target.resolve()) or not chosen.is_dir():
            raise BuildError(f"{where}: ADD {source}: {subdir!r} is not a directory of "
                             "the repository")
        return chosen
    return target


def _resolve_ref(git: str, repo: Path, ref: str, env: dict[str, str]) -> str | None:
    """The commit ``ref`` names: a tag, a commit, or a branch (only the default branch
    exists locally after a clone; the others are ``origin/NAME``)."""
    for candidate in (ref, f"origin/{ref}"):
        proc = subprocess.run(
            [git, "-C", str(repo), "rev-parse", "--verify", "--quiet", f"{candidate}^{{commit}}"],
            env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL)
        if proc.returncode == 0:
            return proc.stdout.strip()
    return None


def _git(argv: list[str], env: dict[str, str], source: str, where: str) -> None:
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=600,
                          stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        # The URL may carry credentials (https://user:token@host): never echo it whole.
        message = re.sub(r"://[^/@\s]+@", "://<hidden>@", proc.stderr.strip())
        raise BuildError(f"{where}: ADD {_redact(source)}: git {argv[1 if argv[1] != '-C' else 3]}"
                         f" failed: {message}")


def _redact(url: str) -> str:
    return re.sub(r"://[^/@\s]+@", "://<hidden>@", url)
