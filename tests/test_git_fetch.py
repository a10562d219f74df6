"""fetch_repository, the one git fetch behind git contexts and ADD <git url>.

Repositories are made here with ``git`` and served from disk (``file://``) or by
a dumb-HTTP server on 127.0.0.1 that wants basic auth.
"""

from __future__ import annotations

import base64
import functools
import os
import subprocess
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from kanipy.context.git import GitSource, fetch_repository
from kanipy.errors import BuildError, ContextError
from kanipy.executor.handlers.download import clone_git
from kanipy.executor.step import StepError
from tests.tools import require_tool


def _git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@e", *args],
                          cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """A bare repository and its commits: v1 (tagged) and v2 on main, "feature" on a branch."""
    require_tool("git")
    base = tmp_path_factory.mktemp("git")
    work = base / "work"
    work.mkdir()
    _git(work, "init", "-q", "-b", "main")
    (work / "sub").mkdir()
    (work / "sub/inside.txt").write_text("in sub\n")
    (work / "which.txt").write_text("v1\n")
    _git(work, "add", "-A")
    _git(work, "commit", "-qm", "one")
    _git(work, "tag", "v1")
    commits = {"v1": _git(work, "rev-parse", "HEAD")}
    (work / "which.txt").write_text("v2\n")
    _git(work, "commit", "-qam", "two")
    commits["v2"] = _git(work, "rev-parse", "HEAD")
    _git(work, "checkout", "-qb", "feature")
    (work / "which.txt").write_text("feature\n")
    _git(work, "commit", "-qam", "three")
    _git(work, "checkout", "-q", "main")
    _git(base, "clone", "-q", "--bare", str(work), "repo.git")
    _git(base / "repo.git", "update-server-info")  # for the dumb HTTP transport
    return base / "repo.git", commits


def _ref(commits: dict[str, str], name: str) -> str | None:
    if name == "default":
        return None
    if name == "full-commit":
        return commits["v1"]
    if name == "short-commit":
        return commits["v1"][:9]
    return name


@pytest.mark.parametrize(("ref", "expected"), [
    ("default", "v2\n"), ("v1", "v1\n"), ("feature", "feature\n"),
    ("refs/heads/feature", "feature\n"), ("full-commit", "v1\n"), ("short-commit", "v1\n"),
], ids=["default-branch", "tag", "other-branch", "full-ref", "full-commit", "short-commit"])
def test_refs_resolve_alike(repo: tuple[Path, dict[str, str]], tmp_path: Path, ref: str,
                            expected: str) -> None:
    bare, commits = repo
    source = GitSource(f"file://{bare}", _ref(commits, ref))
    root = fetch_repository(source, tmp_path / "co", os.environ, what="test",
                            error=ContextError)
    assert (root / "which.txt").read_text() == expected


def test_subdir_and_git_dir(repo: tuple[Path, dict[str, str]], tmp_path: Path) -> None:
    bare, _ = repo
    root = fetch_repository(GitSource(f"file://{bare}", "v1", None, "sub"), tmp_path / "co",
                            os.environ, what="test", error=BuildError, keep_git_dir=False)
    assert root == (tmp_path / "co/sub").resolve()
    assert (root / "inside.txt").read_text() == "in sub\n"
    assert not (tmp_path / "co/.git").exists()


def test_unknown_ref_fails_clearly(repo: tuple[Path, dict[str, str]], tmp_path: Path) -> None:
    bare, _ = repo
    with pytest.raises(BuildError, match="Dockerfile:3: ADD x: cannot fetch nope: no branch, "
                                         "tag or commit 'nope'"):
        fetch_repository(GitSource(f"file://{bare}", "nope"), tmp_path / "co", os.environ,
                         what="Dockerfile:3: ADD x", error=BuildError)


class _AuthHandler(SimpleHTTPRequestHandler):
    """Static files (git's dumb HTTP protocol) for bob:hunter2 only."""

    def do_GET(self) -> None:  # noqa: N802 - the http.server API
        wanted = "Basic " + base64.b64encode(b"bob:hunter2").decode()
        if self.headers.get("Authorization") != wanted:
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="git"')
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        super().do_GET()

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


@pytest.fixture()
def auth_server(repo: tuple[Path, dict[str, str]]) -> Iterator[str]:
    bare, _ = repo
    handler = functools.partial(_AuthHandler, directory=str(bare.parent))
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/repo.git"
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_context_and_add_take_credentials_from_the_environment(
        auth_server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env = {**os.environ, "GIT_USERNAME": "bob", "GIT_PASSWORD": "hunter2"}
    root = fetch_repository(GitSource(auth_server, "feature"), tmp_path / "ctx", env,
                            what="--context x", error=ContextError)
    assert (root / "which.txt").read_text() == "feature\n"

    monkeypatch.setenv("GIT_USERNAME", "bob")
    monkeypatch.setenv("GIT_PASSWORD", "hunter2")
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    added = clone_git(f"{auth_server}#v1:sub", scratch, False)
    assert (added / "inside.txt").read_text() == "in sub\n"


def test_credentials_in_the_url_never_show(auth_server: str, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GIT_USERNAME", raising=False)
    monkeypatch.delenv("GIT_PASSWORD", raising=False)
    wrong = auth_server.replace("http://", "http://bob:wrong-s3cret@")
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    with pytest.raises(StepError) as caught:
        clone_git(f"{wrong}#v1", scratch, False)
    # The stage loop puts the Dockerfile's name and line in front (StepError.located).
    message = caught.value.located("Dockerfile", 2).message
    assert caught.value.exit_code == BuildError.exit_code
    assert message.startswith("Dockerfile:2: ADD http://<hidden>@127.0.0.1:")
    assert "wrong-s3cret" not in message and "bob" not in message
