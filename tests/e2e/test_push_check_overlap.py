"""The push-permission check runs while the first base is pulled (issue 14), and still
stops the build before any step and ahead of any other error, as when it came first.

``kanipy build`` as a child process, through the fault-injecting proxy in front of
the registry fixture; the checks are what a user sees: exit code, message, what
ran, what was pushed.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.helpers import build, write_tree
from tests.fixtures.images import BaseImages
from tests.fixtures.registry import Registry
from tests.registry.servers import FaultProxy

DENIED = "requested access to the resource is denied"


@pytest.fixture
def proxy(fault_proxy: FaultProxy) -> FaultProxy:
    """The shared per-test fault proxy (tests/conftest.py) under this module's name."""
    return fault_proxy


def test_a_refused_push_stops_the_build_before_its_first_step(
        tmp_path: Path, registry: Registry, base_images: BaseImages, proxy: FaultProxy) -> None:
    base = base_images.oci.replace(registry.host, proxy.host)
    context = write_tree(tmp_path / "ctx", {
        "Dockerfile": f"FROM {base}\nRUN echo ran > /ran\nCOPY a /a\n", "a": "a\n"})
    proxy.inject_error("POST", "/blobs/uploads/", 403, "DENIED", DENIED, times=1)
    result = build(context, "-d", f"{proxy.host}/overlap/denied:1")
    assert result.returncode == 4, result.stderr
    assert f"push to {proxy.host}/overlap/denied denied" in result.stderr
    assert "STEP 2/3" not in result.stderr, "no step may run after a refused check"
    assert proxy.count("PUT", "/manifests/") == 0
    assert proxy.count("PUT", "/blobs/uploads/") == 0


def test_a_refused_push_is_reported_ahead_of_a_base_that_cannot_be_pulled(
        tmp_path: Path, proxy: FaultProxy) -> None:
    context = write_tree(tmp_path / "ctx", {
        "Dockerfile": f"FROM {proxy.host}/overlap/no-such-base:1\nCOPY a /a\n", "a": "a\n"})
    proxy.inject_error("POST", "/blobs/uploads/", 403, "DENIED", DENIED, times=1)
    result = build(context, "-d", f"{proxy.host}/overlap/denied:1")
    assert result.returncode == 4, result.stderr
    assert f"push to {proxy.host}/overlap/denied denied" in result.stderr
    assert "no-such-base" not in result.stderr.split("denied", 1)[1]


def test_an_allowed_push_checks_once_and_pushes(
        tmp_path: Path, registry: Registry, base_images: BaseImages, proxy: FaultProxy) -> None:
    base = base_images.oci.replace(registry.host, proxy.host)
    context = write_tree(tmp_path / "ctx", {
        "Dockerfile": f"FROM {base}\nCOPY a /a\n", "a": "a\n"})
    result = build(context, "-d", f"{proxy.host}/overlap/allowed:1")
    assert result.returncode == 0, result.stderr
    assert proxy.count("DELETE", "/blobs/uploads/") == 1  # the check's cancelled upload
    assert proxy.count("PUT", "/manifests/1") == 1
