"""What kanipy reports is what happened (issue 11): output paths and flags are checked
before the build, every tag that moved is printed even when a later push fails, and
the pre-build push check retries as --push-retry says."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.build_support import tag_exists
from tests.e2e.helpers import build, write_tree
from tests.fixtures.images import BaseImages
from tests.fixtures.registry import Registry
from tests.registry.servers import FaultProxy


@pytest.fixture
def proxy(fault_proxy: FaultProxy) -> FaultProxy:
    """The shared per-test fault proxy (tests/conftest.py) under this module's name."""
    return fault_proxy


def _context(tmp_path: Path, base: str) -> Path:
    return write_tree(tmp_path / "ctx", {"Dockerfile": f"FROM {base}\nCOPY a /a\n", "a": "a\n"})


def test_second_destination_failing_still_reports_the_first(
        tmp_path: Path, proxy: FaultProxy, registry: Registry,
        base_images: BaseImages) -> None:
    first, second = f"{proxy.host}/report/one:v1", f"{proxy.host}/report/two:v1"
    proxy.inject_error("PUT", "/report/two/manifests/", 500, "UNKNOWN", "disk on fire",
                       times=10)
    digest_file = tmp_path / "out" / "digest"
    result = build(_context(tmp_path, base_images.oci), "-d", first, "-d", second,
                   "--digest-file", str(digest_file))
    assert result.returncode == 4, result.stderr
    # The first tag moved: stdout says so, in the usual name@digest form.
    lines = result.stdout.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{proxy.host}/report/one@sha256:"), lines
    assert tag_exists(registry.ref("report/one:v1"))
    assert not tag_exists(registry.ref("report/two:v1"))
    assert "report/two" in result.stderr
    # Digest files claim the image is at every destination: not written.
    assert not digest_file.exists()
    assert not digest_file.parent.exists(), "the directory made for it is removed again"


def test_push_check_retries_as_push_retry_says(
        tmp_path: Path, proxy: FaultProxy, registry: Registry,
        base_images: BaseImages) -> None:
    dest = f"{proxy.host}/report/retry:v1"
    proxy.inject("POST", "/report/retry/blobs/uploads/", "503")
    result = build(_context(tmp_path, base_images.oci), "-d", dest, "--push-retry", "2")
    assert result.returncode == 0, result.stderr
    assert tag_exists(registry.ref("report/retry:v1"))
    assert ("POST", "503") in [(m, k) for m, _, k in proxy.injected]


def test_digest_file_naming_a_directory_fails_before_the_build(
        tmp_path: Path, registry: Registry, base_images: BaseImages) -> None:
    dest = registry.ref("report/dir-digest:v1")
    (tmp_path / "adir").mkdir()
    result = build(_context(tmp_path, base_images.oci), "-d", dest,
                   "--digest-file", str(tmp_path / "adir"))
    assert result.returncode == 2, result.stderr
    assert f"--digest-file {tmp_path / 'adir'}: is a directory" in result.stderr
    assert "Traceback" not in result.stderr
    assert "STAGE" not in result.stderr, "refused before any work"
    assert result.stdout == "" and not tag_exists(dest)


@pytest.mark.parametrize(("flag", "make", "want"), [
    ("--kanipy-dir", "file", "exists and is not a directory"),
    ("--kanipy-dir", "proc", "cannot create /proc/kanipy-nope"),
    ("--kanipy-dir", "under-file", "is not a directory"),
    ("--cache-dir", "file", "exists and is not a directory"),
    ("--cache-dir", "proc", "cannot create /proc/kanipy-nope"),
    ("--tar-path", "proc", "cannot create /proc/kanipy-nope"),
    ("--tar-path", "dir", "is a directory; name a file"),
    ("--tar-path", "under-file", "is not a directory"),
    ("--oci-layout-path", "file", "exists and is not a directory"),
], ids=lambda v: v if isinstance(v, str) and v.startswith("--") else None)
def test_unusable_paths_are_usage_errors(tmp_path: Path, flag: str, make: str,
                                          want: str) -> None:
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    (tmp_path / "a-dir").mkdir()
    path = {"file": a_file, "proc": Path("/proc/kanipy-nope/x"), "dir": tmp_path / "a-dir",
            "under-file": a_file / "sub"}[make]
    if flag == "--tar-path" and make == "proc":
        path = Path("/proc/kanipy-nope/out.tar")
    if make == "proc" and flag != "--tar-path":
        path = Path("/proc/kanipy-nope")
    context = write_tree(tmp_path / "ctx", {"Dockerfile": "FROM scratch\nCOPY a /a\n", "a": "a"})
    result = build(context, "--no-push", flag, str(path))
    assert result.returncode == 2, result.stderr
    assert f"{flag} {path}" in result.stderr and want in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


def test_destination_with_a_digest_is_refused_up_front(tmp_path: Path) -> None:
    context = write_tree(tmp_path / "ctx", {"Dockerfile": "FROM scratch\nCOPY a /a\n", "a": "a"})
    dest = "127.0.0.1:1/repo@sha256:" + "a" * 64
    result = build(context, "-d", dest)
    assert result.returncode == 2, result.stderr
    assert f"--destination {dest}: a destination names a tag, not a digest" in result.stderr
    assert "127.0.0.1:1/repo:TAG" in result.stderr


def test_missing_registry_certificate_is_named(tmp_path: Path) -> None:
    context = write_tree(tmp_path / "ctx", {"Dockerfile": "FROM scratch\nCOPY a /a\n", "a": "a"})
    result = build(context, "-d", "127.0.0.1:1/repo:v1",
                   "--registry-certificate", "127.0.0.1:1=/nonexistent.pem")
    assert result.returncode == 2, result.stderr
    assert "/nonexistent.pem is not a file" in result.stderr
