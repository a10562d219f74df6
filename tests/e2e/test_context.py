"""Remote and streamed contexts, built for real: git (git daemon, dumb HTTP), HTTP tarballs, stdin.

Servers are started here on 127.0.0.1 with free ports and stopped by the tests.
"""

from __future__ import annotations

import functools
import io
import socket
import subprocess
import tarfile
import threading
import time
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.e2e.helpers import build, kanipy, unpack_image, write_tree
from tests.fixtures.images import BaseImages
from tests.fixtures.registry import Registry, free_port
from tests.tools import require_root, require_tool


def _git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@e", *args],
                          cwd=cwd, check=True, capture_output=True, text=True).stdout


@pytest.fixture(scope="module")
def git_repos(tmp_path_factory: pytest.TempPathFactory,
              base_images: BaseImages) -> Path:
    """``DIR/app.git``: main says "main"; branch ``feature`` says "feature", with ``svc/``."""
    require_tool("git")
    base = tmp_path_factory.mktemp("git")
    work = base / "work"
    work.mkdir()
    _git(work, "init", "-q", "-b", "main")
    write_tree(work, {"Dockerfile": f"FROM {base_images.oci}\nCOPY which.txt /which.txt\n",
                      "which.txt": "main\n"})
    _git(work, "add", "-A")
    _git(work, "commit", "-qm", "main")
    _git(work, "checkout", "-qb", "feature")
    write_tree(work, {"which.txt": "feature\n",
                      "svc/Dockerfile": f"FROM {base_images.oci}\nCOPY . /svc/\n",
                      "svc/hello.txt": "from svc\n"})
    _git(work, "add", "-A")
    _git(work, "commit", "-qm", "feature")
    _git(work, "checkout", "-q", "main")
    served = base / "served"
    served.mkdir()
    _git(served, "clone", "-q", "--bare", str(work), "app.git")
    _git(served / "app.git", "update-server-info")  # for the dumb HTTP transport
    return served


@pytest.fixture(scope="module")
def git_daemon(git_repos: Path) -> Iterator[str]:
    port = free_port()
    proc = subprocess.Popen(
        ["git", "daemon", f"--base-path={git_repos}", "--export-all", "--reuseaddr",
         "--listen=127.0.0.1", f"--port={port}", str(git_repos)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                time.sleep(0.05)
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture(scope="module")
def http_server(git_repos: Path) -> Iterator[tuple[str, Path]]:
    """A threading static file server over ``git_repos`` (the dumb HTTP git transport)."""
    handler = functools.partial(_QuietHandler, directory=str(git_repos))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", git_repos
    finally:
        server.shutdown()
        server.server_close()


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


def _which(dest: str, tmp_path: Path) -> str:
    return (unpack_image(dest, tmp_path) / "which.txt").read_text()


def test_git_daemon_context_kaniko_style(tmp_path: Path, registry: Registry,
                                         git_daemon: str) -> None:
    dest = registry.ref("ctx/git:daemon")
    build(f"git://{git_daemon}/app.git#refs/heads/feature", "-d", dest,
          env={"GIT_PULL_METHOD": "git"}).check()
    assert _which(dest, tmp_path / "out") == "feature\n"


def test_git_default_branch_and_buildkit_subdir_over_http(
        tmp_path: Path, registry: Registry, http_server: tuple[str, Path]) -> None:
    url, _ = http_server
    dest = registry.ref("ctx/git:http-main")
    build(f"{url}/app.git", "-d", dest).check()
    assert _which(dest, tmp_path / "main") == "main\n"

    dest = registry.ref("ctx/git:http-subdir")
    build(f"{url}/app.git#feature:svc", "-d", dest).check()
    rootfs = unpack_image(dest, tmp_path / "svc")
    assert (rootfs / "svc/hello.txt").read_text() == "from svc\n"


def test_git_unknown_ref_fails_clearly(tmp_path: Path, git_daemon: str) -> None:
    require_root()
    result = build(f"git://{git_daemon}/app.git#refs/heads/nope", "--no-push",
                   env={"GIT_PULL_METHOD": "git"})
    assert result.returncode == 2
    assert "cannot fetch refs/heads/nope" in result.stderr


def test_https_style_tarball_context(tmp_path: Path, registry: Registry,
                                     http_server: tuple[str, Path],
                                     base_images: BaseImages) -> None:
    url, served = http_server
    src = write_tree(tmp_path / "src", {
        "project/Dockerfile": f"FROM {base_images.oci}\nCOPY which.txt /which.txt\n",
        "project/which.txt": "tarball\n"})
    with tarfile.open(served / "ctx.tar.gz", "w:gz") as tar:
        tar.add(src / "project", arcname=".")
    dest = registry.ref("ctx/tarball:http")
    build(f"{url}/ctx.tar.gz", "-d", dest).check()
    assert _which(dest, tmp_path / "out") == "tarball\n"

    missing = build(f"{url}/missing.tar.gz", "--no-push")
    assert missing.returncode == 2 and "404" in missing.stderr


def test_tar_on_stdin_with_sub_path_and_outside_dockerfile(
        tmp_path: Path, registry: Registry, base_images: BaseImages) -> None:
    require_root()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        data = b"stdin\n"
        info = tarfile.TarInfo("sub/which.txt")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    dockerfile = tmp_path / "elsewhere" / "Build.dockerfile"
    dockerfile.parent.mkdir()
    dockerfile.write_text(f"FROM {base_images.oci}\nCOPY which.txt /which.txt\n")
    dest = registry.ref("ctx/stdin:1")
    kanipy("build", "-c", "tar://-", "--context-sub-path", "sub", "-f", str(dockerfile),
           "-d", dest, stdin=buf.getvalue()).check()
    assert _which(dest, tmp_path / "out") == "stdin\n"


def test_context_url_never_shows_credentials(http_server: tuple[str, Path]) -> None:
    url, _ = http_server
    result = build(url.replace("http://", "http://bob:hunter2@") + "/missing.tar.gz?sig=s3cr3t",
                   "--no-push", "--verbosity", "debug")
    assert result.returncode == 2, result.stderr
    assert "hunter2" not in result.stdout + result.stderr
    assert "s3cr3t" not in result.stdout + result.stderr
    assert "--context http://<hidden>@127.0.0.1:" in result.stderr
