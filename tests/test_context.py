"""Build context sources without network or root: directories, tarballs, git URL parsing."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from kanipy.context import ContextError, open_context
from kanipy.context.git import GitSource, is_git_source, parse_git_source


def _tarball(files: dict[str, str], mode: str = "w:gz") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode) as tar:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


@pytest.mark.parametrize(("source", "env", "expected"), [
    ("git://github.com/org/repo#refs/heads/dev", {},
     GitSource("https://github.com/org/repo", "refs/heads/dev")),
    ("git://github.com/org/repo.git#refs/heads/dev#0123456789abcdef", {},
     GitSource("https://github.com/org/repo.git", "refs/heads/dev", "0123456789abcdef")),
    ("git://127.0.0.1:9418/repo.git", {"GIT_PULL_METHOD": "git"},
     GitSource("git://127.0.0.1:9418/repo.git")),
    ("git://example.com/repo", {"GIT_PULL_METHOD": "http"},
     GitSource("http://example.com/repo")),
    ("https://example.com/org/repo.git#v1.2:services/api", {},
     GitSource("https://example.com/org/repo.git", "v1.2", None, "services/api")),
    ("https://example.com/org/repo.git#:docs/", {},
     GitSource("https://example.com/org/repo.git", None, None, "docs")),
    ("git@github.com:org/repo.git#main", {}, GitSource("git@github.com:org/repo.git", "main")),
], ids=["kaniko-ref", "kaniko-commit", "git-protocol", "http-method", "buildkit-subdir",
        "subdir-only", "ssh"])
def test_git_urls(source: str, env: dict[str, str], expected: GitSource) -> None:
    assert is_git_source(source)
    assert parse_git_source(source, env) == expected


@pytest.mark.parametrize("source", ["https://example.com/ctx.tar.gz", "/src", "ctx.tar",
                                    "http://example.com/download?id=3"])
def test_not_git(source: str) -> None:
    assert not is_git_source(source)


def test_bad_pull_method_and_commit() -> None:
    with pytest.raises(ContextError, match="GIT_PULL_METHOD"):
        parse_git_source("git://h/r", {"GIT_PULL_METHOD": "ftp"})
    with pytest.raises(ContextError, match="not a commit id"):
        parse_git_source("git://h/r#main#not-a-sha", {})


def test_credentials_never_shown() -> None:
    spec = parse_git_source("https://user:hunter2@example.com/r.git", {})
    assert "hunter2" not in spec.shown and spec.shown == "https://<hidden>@example.com/r.git"


def test_directory_with_sub_path_and_outside_dockerfile(tmp_path: Path) -> None:
    ctx = tmp_path / "ctx"
    (ctx / "app").mkdir(parents=True)
    (ctx / "app" / "Dockerfile").write_text("FROM scratch\n")
    (ctx / "app" / ".dockerignore").write_text("*.log\n")
    context, dockerfile = open_context(str(ctx), tmp_path / "work", "Dockerfile", "app")
    assert context.root == (ctx / "app").resolve()
    assert dockerfile == (ctx / "app" / "Dockerfile").resolve()
    assert context.excluded("x.log") and not context.excluded("x.txt")

    elsewhere = tmp_path / "build.Dockerfile"
    elsewhere.write_text("FROM scratch\n")
    _, dockerfile = open_context(f"dir://{ctx}", tmp_path / "work2", str(elsewhere))
    assert dockerfile == elsewhere


def test_sub_path_must_stay_inside(tmp_path: Path) -> None:
    (tmp_path / "ctx").mkdir()
    with pytest.raises(ContextError, match="context-sub-path"):
        open_context(str(tmp_path / "ctx"), tmp_path / "w", "Dockerfile", "../")


@pytest.mark.parametrize("mode", ["w", "w:gz", "w:xz"], ids=["plain", "gzip", "xz"])
def test_tarball_file_any_name(tmp_path: Path, mode: str) -> None:
    archive = tmp_path / "context.bin"  # recognised by content, not by name
    archive.write_bytes(_tarball({"Dockerfile": "FROM scratch\n", "src/a.txt": "a"}, mode))
    work = tmp_path / "work"
    work.mkdir()
    context, dockerfile = open_context(str(archive), work, "Dockerfile")
    assert (context.root / "src/a.txt").read_text() == "a"
    assert dockerfile.read_text() == "FROM scratch\n"


def test_tar_stdin(tmp_path: Path) -> None:
    data = _tarball({"sub/Dockerfile": "FROM scratch\n"})
    work = tmp_path / "work"
    work.mkdir()
    context, dockerfile = open_context("tar://-", work, "Dockerfile", "sub",
                                       stdin=io.BytesIO(data))
    assert dockerfile == context.root / "Dockerfile"


def test_tarball_cannot_escape(tmp_path: Path) -> None:
    archive = tmp_path / "evil.tar"
    archive.write_bytes(_tarball({"../escaped": "x"}, "w"))
    work = tmp_path / "work"
    work.mkdir()
    with pytest.raises(ContextError, match="'../escaped' is outside of the destination"):
        open_context(f"tar://{archive}", work, "Dockerfile")
    assert not (tmp_path / "escaped").exists()


@pytest.mark.parametrize("source", ["s3://bucket/ctx.tar.gz", "gs://b/c.tgz"])
def test_unsupported_schemes_fail_clearly(tmp_path: Path, source: str) -> None:
    with pytest.raises(ContextError, match="not supported"):
        open_context(source, tmp_path, "Dockerfile")


def test_missing_dockerfile_names_where_it_looked(tmp_path: Path) -> None:
    (tmp_path / "ctx").mkdir()
    with pytest.raises(ContextError, match="not found") as info:
        open_context(str(tmp_path / "ctx"), tmp_path, "Dockerfile.prod")
    assert "--dockerfile" in info.value.message


def test_missing_dockerfile_names_each_place_once(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Run in the context directory, the context and the working directory are one
    place; the error names it once (issue 12)."""
    context = tmp_path / "ctx"
    context.mkdir()
    monkeypatch.chdir(context)
    with pytest.raises(ContextError, match="not found") as info:
        open_context(".", tmp_path, "Dockerfile.prod")
    looked = info.value.message.split("(looked at ", 1)[1].split(")", 1)[0]
    assert looked == str(context / "Dockerfile.prod")
