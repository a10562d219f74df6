"""Git build contexts: check a repository out with the ``git`` command.

Two spellings are accepted, Kaniko's and BuildKit's:

* ``git://HOST/ORG/REPO[.git][#REF[#COMMIT]]`` (Kaniko). Kaniko fetches these
  over HTTPS, not the git protocol (GitHub stopped serving ``git://`` in
  2022), and so does kanipy; ``GIT_PULL_METHOD`` (Kaniko's variable) picks
  ``https``, ``http`` or, a kanipy addition, ``git`` for the git protocol.
* ``https://HOST/PATH.git[#REF][:SUBDIR]``, ``http://…`` and
  ``git@HOST:PATH.git`` (BuildKit), fetched as written.

REF is a branch, a tag or a full ref (``refs/heads/main``, ``refs/pull/1/head``);
``:SUBDIR`` narrows the context to a directory of the checkout. Credentials
come from ``GIT_USERNAME``/``GIT_PASSWORD`` (Kaniko's variables) through a
credential helper, so they never appear in a command line or a message; git
never prompts.
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from kanipy.errors import ContextError

log = logging.getLogger(__name__)

_PULL_METHODS = ("https", "http", "git")
_SHA_RE = re.compile(r"[0-9a-f]{7,40}")
# Reads the credentials from the environment of the git process only.
_CREDENTIAL_HELPER = (
    "!f() { test \"$1\" = get || exit 0; echo username=\"$GIT_USERNAME\"; "
    "echo password=\"$GIT_PASSWORD\"; }; f"
)


@dataclass(frozen=True)
class GitSource:
    """A repository URL and what to check out of it."""

    url: str
    ref: str | None = None
    commit: str | None = None
    subdir: str | None = None

    @property
    def shown(self) -> str:
        """The URL without any ``user:password@`` part, for messages and logs."""
        return re.sub(r"//[^/@]*@", "//", self.url)


def is_git_source(source: str) -> bool:
    """True when ``source`` names a git repository rather than a directory or tarball."""
    if source.startswith(("git://", "git@")):
        return True
    if source.startswith(("https://", "http://")):
        path = source.split("#", 1)[0].rstrip("/")
        return path.endswith(".git") or "#" in source
    return False


def parse_git_source(source: str, env: Mapping[str, str]) -> GitSource:
    """Split ``source`` into URL, ref, commit and subdirectory (see the module doc)."""
    location, _, fragment = source.partition("#")
    ref: str | None = None
    commit: str | None = None
    subdir: str | None = None
    if fragment:
        if "#" in fragment:  # Kaniko: REPO#REF#COMMIT
            fragment, _, commit = fragment.partition("#")
        ref_part, _, subdir_part = fragment.partition(":")
        ref = ref_part or None
        subdir = subdir_part.strip("/") or None
    if location.startswith("git://"):
        method = env.get("GIT_PULL_METHOD", "https").lower() or "https"
        if method not in _PULL_METHODS:
            raise ContextError(f"GIT_PULL_METHOD={method!r}: expected https, http or git")
        location = f"{method}://{location[len('git://'):]}"
    if commit is not None and not _SHA_RE.fullmatch(commit):
        raise ContextError(f"--context {source!r}: {commit!r} is not a commit id")
    return GitSource(location, ref, commit, subdir)


def checkout(source: GitSource, target: Path, env: Mapping[str, str]) -> Path:
    """Fetch ``source`` into ``target`` (a new directory); returns the context root."""
    target.mkdir(parents=True)
    git_env = {k: v for k, v in env.items() if not k.startswith("GIT_") or k in (
        "GIT_USERNAME", "GIT_PASSWORD", "GIT_SSH_COMMAND", "GIT_SSL_CAINFO",
        "GIT_SSL_NO_VERIFY")}
    git_env.update({"GIT_TERMINAL_PROMPT": "0", "GIT_ASKPASS": "true",
                    "GIT_CONFIG_NOSYSTEM": "1"})
    config: list[str] = ["-c", "advice.detachedHead=false", "-c", "init.defaultBranch=main"]
    if env.get("GIT_USERNAME") or env.get("GIT_PASSWORD"):
        config += ["-c", f"credential.helper={_CREDENTIAL_HELPER}"]

    def git(*args: str) -> subprocess.CompletedProcess[str]:
        try:
            return subprocess.run(["git", *config, *args], cwd=target, env=git_env,
                                  capture_output=True, text=True, timeout=600)
        except FileNotFoundError:
            raise ContextError(
                f"--context {source.shown}: a git context needs the git command, which "
                "is not installed") from None

    log.info("fetching git context %s%s", source.shown,
             f" ({source.ref})" if source.ref else "")
    git("init", "-q")
    git("remote", "add", "origin", source.url)
    wanted = source.ref or "HEAD"
    # A shallow fetch is quickest; dumb HTTP servers and some refs refuse it, and
    # a pinned commit may be older than the tip, so those fetch the full history.
    attempts = [["fetch", "-q", "--depth=1", "origin", wanted], ["fetch", "-q", "origin", wanted]]
    if source.commit:
        attempts = attempts[1:]
    done = None
    for argv in attempts:
        done = git(*argv)
        if done.returncode == 0:
            break
    assert done is not None
    if done.returncode != 0:
        raise ContextError(f"--context {source.shown}: cannot fetch {wanted}: "
                           f"{_redact(done.stderr, source)}")
    checked = git("checkout", "-q", "--detach", source.commit or "FETCH_HEAD")
    if checked.returncode != 0:
        raise ContextError(f"--context {source.shown}: cannot check out "
                           f"{source.commit or wanted}: {_redact(checked.stderr, source)}")
    modules = target / ".gitmodules"
    if modules.exists():
        sub = git("submodule", "update", "--init", "--recursive", "--depth=1")
        if sub.returncode != 0:
            log.warning("git context %s: submodules not fetched: %s", source.shown,
                        _redact(sub.stderr, source))
    head = git("rev-parse", "HEAD").stdout.strip()
    log.info("git context %s at %s", source.shown, head)
    root = target
    if source.subdir:
        root = (target / source.subdir).resolve()
        if not root.is_relative_to(target.resolve()) or not root.is_dir():
            raise ContextError(f"--context {source.shown}: {source.subdir!r} is not a "
                               f"directory of the repository at {head[:12]}")
    return root


def _redact(text: str, source: GitSource) -> str:
    text = text.strip().replace(source.url, source.shown)
    return os.linesep.join(line for line in text.splitlines() if line)[:2000] or "git failed"
