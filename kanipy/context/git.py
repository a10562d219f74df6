"""Git repositories, fetched with the ``git`` command: git contexts and ``ADD <git url>``.

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

``fetch_repository`` is the one fetch, for a context and for ADD alike: the
same credentials (the process environment), the same ref resolution (a
branch, a tag, a full ref or a commit, abbreviated or not) and the same
redaction of what git prints.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from kanipy.errors import ContextError, KanipyError
from kanipy.fieldwise import Fieldwise
from kanipy.http import redact_url, redact_urls_in

log = logging.getLogger(__name__)

_PULL_METHODS = ("https", "http", "git")
_SHA_RE = re.compile(r"[0-9a-f]{7,40}")
_GIT_TIMEOUT = 600
# Variables of the caller's environment that git may see; other GIT_* ones
# (GIT_DIR, GIT_WORK_TREE, ...) would point git somewhere else.
_GIT_PASSED = ("GIT_USERNAME", "GIT_PASSWORD", "GIT_SSH_COMMAND", "GIT_SSL_CAINFO",
               "GIT_SSL_NO_VERIFY")
# Reads the credentials from the environment of the git process only.
_CREDENTIAL_HELPER = (
    "!f() { test \"$1\" = get || exit 0; echo username=\"$GIT_USERNAME\"; "
    "echo password=\"$GIT_PASSWORD\"; }; f"
)


@dataclass(frozen=True, repr=False, eq=False)
class GitSource(Fieldwise):
    """A repository URL and what to check out of it."""

    url: str
    ref: str | None = None
    commit: str | None = None
    subdir: str | None = None

    @property
    def shown(self) -> str:
        """The URL with any ``user:password@`` part hidden, for messages and logs."""
        return redact_url(self.url)


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
    return fetch_repository(source, target, env, what=f"--context {source.shown}",
                            error=ContextError)


def fetch_repository(
    source: GitSource,
    target: Path,
    env: Mapping[str, str],
    *,
    what: str,
    error: type[KanipyError],
    keep_git_dir: bool = True,
    submodules_required: bool = False,
) -> Path:
    """Check ``source`` out into ``target`` (created here; it must not exist).

    Returns the directory to use: ``target``, or its ``subdir``. Failures raise
    ``error`` with a message starting with ``what`` (which must not hold
    credentials). A submodule that cannot be fetched fails only with
    ``submodules_required`` (ADD); otherwise it is a warning (Kaniko's contexts).
    """
    target.mkdir(parents=True)
    git = _Git(target, env, what, error)
    log.info("fetching git repository %s%s", source.shown,
             f" ({source.ref})" if source.ref else "")
    git.run("init", "-q")
    git.run("remote", "add", "origin", source.url)
    commit = _fetch_commit(git, source)
    git.run("checkout", "-q", "--detach", commit, "--")
    if (target / ".gitmodules").exists():
        sub = git.call("submodule", "update", "--init", "--recursive", "--depth=1")
        if sub.returncode != 0:
            sub = git.call("submodule", "update", "--init", "--recursive")
        if sub.returncode != 0:
            if submodules_required:
                raise error(f"{what}: cannot fetch its submodules: {git.message(sub)}")
            log.warning("%s: submodules not fetched: %s", what, git.message(sub))
    log.info("git repository %s at %s", source.shown, commit)
    if not keep_git_dir:
        shutil.rmtree(target / ".git")
    if not source.subdir:
        return target
    clean = os.path.normpath("/" + source.subdir).lstrip("/")
    root = (target / clean).resolve()
    if not root.is_relative_to(target.resolve()) or not root.is_dir():
        raise error(f"{what}: {source.subdir!r} is not a directory of the repository at "
                    f"{commit[:12]}")
    return root


def _fetch_commit(git: _Git, source: GitSource) -> str:
    """Fetch what ``source`` names and return its commit id.

    A shallow fetch of the ref is quickest; dumb HTTP servers and some refs
    refuse it, and a pinned commit may be older than the tip, so those fetch the
    ref's history. A ref the server does not advertise by that name (a commit
    id, abbreviated or not) is looked for among every branch and tag.
    """
    wanted = source.ref or "HEAD"
    attempts = [["--depth=1", "origin", wanted], ["origin", wanted]]
    if source.commit:
        attempts = attempts[1:]
    done = None
    for argv in attempts:
        done = git.call("fetch", "-q", *argv)
        if done.returncode == 0:
            break
    assert done is not None
    if done.returncode == 0:
        return git.resolve(source.commit or "FETCH_HEAD", wanted)
    if source.commit is None:
        everything = git.call("fetch", "-q", "origin", "+refs/heads/*:refs/remotes/origin/*",
                              "+refs/tags/*:refs/tags/*")
        if everything.returncode == 0:
            for candidate in (wanted, f"refs/remotes/origin/{wanted}", f"refs/tags/{wanted}"):
                found = git.call("rev-parse", "--verify", "--quiet", f"{candidate}^{{commit}}")
                if found.returncode == 0:
                    return found.stdout.strip()
            raise git.error(f"{git.what}: cannot fetch {wanted}: no branch, tag or commit "
                            f"{wanted!r} in the repository")
    raise git.error(f"{git.what}: cannot fetch {wanted}: {git.message(done)}")


class _Git:
    """Runs git in one repository: no prompts, no system config, credentials by helper."""

    def __init__(self, repo: Path, env: Mapping[str, str], what: str,
                 error: type[KanipyError]) -> None:
        self.repo = repo
        self.what = what
        self.error = error
        self.env = {k: v for k, v in env.items()
                    if not k.startswith("GIT_") or k in _GIT_PASSED}
        self.env.update({"GIT_TERMINAL_PROMPT": "0", "GIT_ASKPASS": "true",
                         "GIT_CONFIG_NOSYSTEM": "1"})
        self.config = ["-c", "advice.detachedHead=false", "-c", "init.defaultBranch=main"]
        if env.get("GIT_USERNAME") or env.get("GIT_PASSWORD"):
            self.config += ["-c", f"credential.helper={_CREDENTIAL_HELPER}"]

    def call(self, *args: str) -> subprocess.CompletedProcess[str]:
        try:
            return subprocess.run(["git", *self.config, *args], cwd=self.repo, env=self.env,
                                  capture_output=True, text=True, timeout=_GIT_TIMEOUT,
                                  stdin=subprocess.DEVNULL)
        except FileNotFoundError:
            raise self.error(f"{self.what}: the git command is needed for git sources and "
                             "is not installed") from None
        except subprocess.TimeoutExpired:
            raise self.error(f"{self.what}: git {args[0]} took more than "
                             f"{_GIT_TIMEOUT} s") from None

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        done = self.call(*args)
        if done.returncode != 0:
            raise self.error(f"{self.what}: git {args[0]} failed: {self.message(done)}")
        return done

    def resolve(self, name: str, wanted: str) -> str:
        found = self.call("rev-parse", "--verify", "--quiet", f"{name}^{{commit}}")
        if found.returncode != 0:
            shown = wanted if name == "FETCH_HEAD" else name
            raise self.error(f"{self.what}: cannot check out {shown}: no such commit in "
                             "what was fetched")
        return found.stdout.strip()

    @staticmethod
    def message(done: subprocess.CompletedProcess[str]) -> str:
        """git's error output, URLs redacted (a remote URL may carry a token)."""
        text = redact_urls_in(done.stderr.strip())
        return os.linesep.join(line for line in text.splitlines() if line)[:2000] \
            or "git failed"
