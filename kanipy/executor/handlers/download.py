"""ADD's remote sources: http(s) files and git repositories, fetched to a scratch place.

Nothing here writes into the root: a URL is downloaded to a temporary file and
verified (``--checksum``) first, a git repository is cloned into a temporary
directory; the caller then copies from there, so a failed fetch or a checksum
mismatch leaves the image untouched.

Docker's rules (Dockerfile reference, "ADD"): a downloaded file gets mode 0600
and, when the server sends ``Last-Modified``, that time as its mtime; its name
is the last component of the URL path. A git source is fetched by
``kanipy.context.git.fetch_repository``, as a git context is (credentials from
``GIT_USERNAME``/``GIT_PASSWORD``); ``#ref`` picks a branch, tag or commit and
``:subdir`` a directory; the ``.git`` directory is kept only with
``--keep-git-dir``. Downloads go through ``kanipy.http``; URLs in messages are
redacted there.
"""

from __future__ import annotations

import email.utils
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from urllib.parse import unquote, urlsplit

from kanipy.executor.step import StepError
from kanipy.fieldwise import Fieldwise
from kanipy.http import download_to_file, redact_url
from kanipy.oci.digest import Digest

log = logging.getLogger(__name__)


@dataclass(frozen=True, repr=False, eq=False)
class Downloaded(Fieldwise):
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


def download(url: str, scratch: Path, expected: Digest | None) -> Downloaded:
    """GET ``url`` into a file under ``scratch``; verified against ``expected``."""
    fetched = download_to_file(url, scratch, what=f"ADD {redact_url(url)}",
                               error=StepError, expected=expected)
    return Downloaded(fetched.path, url_file_name(url), _last_modified_ns(fetched.last_modified))


def _last_modified_ns(value: str | None) -> int | None:
    if not value:
        return None
    try:
        return int(email.utils.parsedate_to_datetime(value).timestamp()) * 1_000_000_000
    except (TypeError, ValueError):
        log.debug("ignoring an unparseable Last-Modified: %r", value)
        return None


def clone_git(source: str, scratch: Path, keep_git_dir: bool) -> Path:
    """Clone ``URL[#ref][:subdir]`` into a new directory under ``scratch``; returns
    the directory to copy (the subdir when one is named)."""
    from kanipy.context.git import GitSource, fetch_repository  # only for ADD of a git URL

    url, _, fragment = source.partition("#")
    ref, _, subdir = fragment.partition(":")
    target = Path(tempfile.mkdtemp(prefix="add-git-", dir=scratch)) / "repo"
    spec = GitSource(url, ref or None, None, subdir or None)
    return fetch_repository(spec, target, os.environ, what=f"ADD {redact_url(source)}",
                            error=StepError, keep_git_dir=keep_git_dir,
                            submodules_required=True)
