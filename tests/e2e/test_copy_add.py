"""ADD as Docker does it: local archives by content, URLs from a real HTTP server, git.

Files are served by a threading HTTP server on 127.0.0.1 (it sends
Last-Modified from the file's mtime); a git repository is served over git's
"dumb" HTTP protocol by the same server, and cloned by kanipy with ``git``.
"""

from __future__ import annotations

import bz2
import functools
import hashlib
import io
import lzma
import os
import subprocess
import tarfile
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import zstandard

from tests.e2e.helpers import build, lstat_info, unpack_image, write_tree
from tests.fixtures.images import BaseImages
from tests.fixtures.registry import Registry
from tests.tools import require_tool

SERVED_MTIME = 1_500_000_000
FILE_SHA256 = hashlib.sha256(b"downloaded\n").hexdigest()


def _tar_bytes() -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        def add(name: str, kind: bytes, mode: int, data: bytes = b"", link: str = "") -> None:
            info = tarfile.TarInfo(name)
            info.type, info.mode, info.mtime = kind, mode, 1_400_000_000
            info.uid, info.gid, info.linkname, info.size = 123, 456, link, len(data)
            tar.addfile(info, io.BytesIO(data) if data else None)
        add("pkg", tarfile.DIRTYPE, 0o750)
        add("pkg/bin.sh", tarfile.REGTYPE, 0o755, b"#!/bin/sh\n")
        add("pkg/link", tarfile.SYMTYPE, 0o777, link="bin.sh")
        add("pkg/hard", tarfile.LNKTYPE, 0o755, link="pkg/bin.sh")
    return raw.getvalue()


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


@pytest.fixture(scope="module")
def http_files(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """(base URL, served directory) of a file server on 127.0.0.1."""
    served = tmp_path_factory.mktemp("served")
    write_tree(served, {"file.txt": "downloaded\n", "a.tar.gz": _gzip(_tar_bytes())})
    for path in served.iterdir():
        os.utime(path, (SERVED_MTIME, SERVED_MTIME))
    server = ThreadingHTTPServer(("127.0.0.1", 0),
                                 functools.partial(_Quiet, directory=str(served)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", served
    finally:
        server.shutdown()
        server.server_close()


def _gzip(data: bytes) -> bytes:
    import gzip
    return gzip.compress(data, mtime=0)


def _git_repo(served: Path) -> None:
    """A bare repository with tag v1 (sub/inside.txt) and a later main commit."""
    require_tool("git")
    work = served.parent / "git-work"
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.com"}

    def git(*args: str, cwd: Path = work) -> None:
        subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True)

    work.mkdir()
    git("init", "-q", "-b", "main")
    write_tree(work, {"top.txt": "v1\n", "sub/inside.txt": "in sub\n"})
    git("add", ".")
    git("commit", "-q", "-m", "one")
    git("tag", "v1")
    (work / "top.txt").write_text("v2\n")
    git("commit", "-q", "-am", "two")
    git("checkout", "-q", "-b", "feature")
    (work / "top.txt").write_text("feature\n")
    git("commit", "-q", "-am", "three")
    git("checkout", "-q", "main")
    git("clone", "-q", "--bare", str(work), str(served / "repo.git"), cwd=served)
    git("update-server-info", cwd=served / "repo.git")


def test_add_archives_urls_and_git(tmp_path: Path, registry: Registry,
                                   base_images: BaseImages,
                                   http_files: tuple[str, Path]) -> None:
    url, served = http_files
    _git_repo(served)
    tar = _tar_bytes()
    context = write_tree(tmp_path / "ctx", {
        "plain.tar": tar,
        "pkg.tgz": _gzip(tar),
        "pkg.bz2": bz2.compress(tar),
        "pkg.xz": lzma.compress(tar),
        "pkg.zst": zstandard.ZstdCompressor().compress(tar),
        "fake.tar.gz": "not an archive at all\n",
        "Dockerfile": (
            f"FROM {base_images.oci}\n"
            "ADD plain.tar /x/plain\n"               # extracted into the destination
            "ADD pkg.tgz /x/gz/\n"
            "ADD pkg.bz2 /x/bz2/\n"
            "ADD pkg.xz /x/xz/\n"
            "ADD --chown=7:8 pkg.zst /x/zst/\n"
            "ADD fake.tar.gz /x/fake/\n"             # by content, not name: a file
            "ADD --unpack=false pkg.tgz /x/kept/\n"
            f"ADD {url}/file.txt /dl/\n"
            f"ADD --checksum=sha256:{FILE_SHA256} "
            f"{url}/file.txt /dl-sum\n"
            f"ADD {url}/a.tar.gz /dl-packed/\n"      # URLs are not unpacked by default
            f"ADD --unpack=true {url}/a.tar.gz /dl-unpacked/\n"
            f"ADD {url}/repo.git#v1:sub /git-sub/\n"
            f"ADD --keep-git-dir {url}/repo.git /git-keep/\n"
            f"ADD {url}/repo.git#feature /git-branch/\n"
        ),
    })
    dest = registry.ref("e2e/copy-add:latest")
    build(context, "--destination", dest).check()
    root = unpack_image(dest, tmp_path / "out")

    for name in ("plain", "gz", "bz2", "xz"):
        pkg = root / "x" / name / "pkg"
        assert lstat_info(pkg) == ("0o750", 123, 456), name
        assert lstat_info(pkg / "bin.sh") == ("0o755", 123, 456)
        assert int(os.lstat(pkg / "bin.sh").st_mtime) == 1_400_000_000
        assert os.readlink(pkg / "link") == "bin.sh"
        assert os.lstat(pkg / "hard").st_ino == os.lstat(pkg / "bin.sh").st_ino
    assert lstat_info(root / "x/zst/pkg/bin.sh") == ("0o755", 7, 8)
    assert (root / "x/fake/fake.tar.gz").read_text() == "not an archive at all\n"
    assert (root / "x/kept/pkg.tgz").is_file()

    assert (root / "dl/file.txt").read_text() == "downloaded\n"
    assert lstat_info(root / "dl/file.txt") == ("0o600", 0, 0)
    assert int(os.lstat(root / "dl/file.txt").st_mtime) == SERVED_MTIME
    assert (root / "dl-sum").read_text() == "downloaded\n"
    assert (root / "dl-packed/a.tar.gz").is_file()
    assert (root / "dl-unpacked/pkg/bin.sh").is_file()

    assert (root / "git-sub/inside.txt").read_text() == "in sub\n"
    assert not (root / "git-sub/.git").exists()
    assert (root / "git-keep/top.txt").read_text() == "v2\n"
    assert (root / "git-keep/.git").is_dir()
    assert (root / "git-branch/top.txt").read_text() == "feature\n"


def test_add_checksum_mismatch_fails_first(tmp_path: Path, base_images: BaseImages,
                                           http_files: tuple[str, Path]) -> None:
    url, _ = http_files
    context = write_tree(tmp_path / "ctx", {"Dockerfile": (
        f"FROM {base_images.oci}\n"
        f"ADD --checksum=sha256:{'0' * 64} {url}/file.txt /dl\n"
    )})
    result = build(context, "--no-push")
    assert result.returncode == 1, result.stderr
    assert "Dockerfile:2: ADD" in result.stderr
    assert "checksum mismatch" in result.stderr
    assert "nothing was written" in result.stderr


def test_add_missing_url_fails(tmp_path: Path, base_images: BaseImages,
                               http_files: tuple[str, Path]) -> None:
    url, _ = http_files
    context = write_tree(tmp_path / "ctx", {"Dockerfile": (
        f"FROM {base_images.oci}\nADD {url}/nope.txt /dl\n")})
    result = build(context, "--no-push")
    assert result.returncode == 1, result.stderr
    assert "the server answered 404" in result.stderr


def test_add_refuses_an_archive_leaving_the_destination(tmp_path: Path,
                                                        base_images: BaseImages) -> None:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        info = tarfile.TarInfo("../../escape.txt")
        info.size = 3
        tar.addfile(info, io.BytesIO(b"bad"))
    context = write_tree(tmp_path / "ctx", {"evil.tar": raw.getvalue(), "Dockerfile": (
        f"FROM {base_images.oci}\nADD evil.tar /x/\n")})
    result = build(context, "--no-push")
    assert result.returncode == 1, result.stderr
    assert "'../../escape.txt' is outside of the destination" in result.stderr


@pytest.mark.parametrize("source", [
    "{url}/nope.txt?token=s3cr3t-token",
    "{url}/nope.git#main",
], ids=["download", "git"])
def test_add_never_shows_credentials(tmp_path: Path, base_images: BaseImages,
                                     http_files: tuple[str, Path], source: str) -> None:
    url, _ = http_files
    with_password = url.replace("http://", "http://bob:hunter2@")
    context = write_tree(tmp_path / "ctx", {"Dockerfile": (
        f"FROM {base_images.oci}\nADD {source.format(url=with_password)} /dl/\n")})
    result = build(context, "--no-push", "--verbosity", "debug")
    assert result.returncode == 1, result.stderr
    output = result.stdout + result.stderr
    assert "hunter2" not in output and "s3cr3t-token" not in output
    assert "Dockerfile:2: ADD http://<hidden>@127.0.0.1:" in result.stderr
