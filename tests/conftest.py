"""Session fixtures with real parts: registries and base images."""

from __future__ import annotations

import os
import platform
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.ci_container import CIContainer
from tests.fixtures.images import (
    BaseImages,
    build_and_push_busybox,
    debian_layer_tar,
    push_layer_tar,
)
from tests.fixtures.registry import CertificateAuthority, Registry
from tests.fixtures.runc import make_kanipy_rootfs
from tests.registry.servers import FaultProxy
from tests.tools import require_tool

AUTH_USER = "kanipy"
AUTH_PASSWORD = "s3cret-Pa55"


# Fixtures that start or need real parts: a registry process, tools, root.
REAL_PARTS = frozenset({"registry", "auth_registry", "mtls_registry", "test_ca",
                        "base_images", "debian_python_base", "ci_container"})
INTEGRATION_DIRS = ("e2e", "registry")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that uses real parts ``integration``.

    ``pytest -m "not integration"`` then runs the unit tests alone: no network,
    no registry, no root, a few seconds.
    """
    here = Path(__file__).parent
    for item in items:
        relative = Path(item.path).relative_to(here)
        uses_real_parts = bool(REAL_PARTS & set(getattr(item, "fixturenames", ())))
        if uses_real_parts or relative.parts[0] in INTEGRATION_DIRS:
            item.add_marker(pytest.mark.integration)


def _host_arch() -> str:
    machine = platform.machine().lower()
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(machine, machine)


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    """A plain-HTTP registry on 127.0.0.1, no auth."""
    require_tool("docker-registry")
    reg = Registry(tmp_path_factory.mktemp("registry")).start()
    try:
        yield reg
    finally:
        reg.stop()


@pytest.fixture
def fault_proxy(registry: Registry) -> Iterator[FaultProxy]:
    """A fault-injecting proxy in front of the plain registry, one per test."""
    proxy = FaultProxy(registry.url).start()
    try:
        yield proxy
    finally:
        proxy.stop()


@pytest.fixture(scope="session")
def test_ca(tmp_path_factory: pytest.TempPathFactory) -> CertificateAuthority:
    require_tool("openssl")
    return CertificateAuthority(tmp_path_factory.mktemp("ca"))


@pytest.fixture(scope="session")
def auth_registry(
    tmp_path_factory: pytest.TempPathFactory, test_ca: CertificateAuthority
) -> Iterator[Registry]:
    """A registry with TLS (certificate from ``test_ca``) and htpasswd basic auth."""
    require_tool("docker-registry")
    require_tool("htpasswd")
    reg = Registry(
        tmp_path_factory.mktemp("auth-registry"), tls=test_ca,
        username=AUTH_USER, password=AUTH_PASSWORD,
    ).start()
    try:
        yield reg
    finally:
        reg.stop()


@pytest.fixture(scope="session")
def mtls_registry(
    tmp_path_factory: pytest.TempPathFactory, test_ca: CertificateAuthority
) -> Iterator[Registry]:
    """A TLS registry that accepts only clients with a certificate ``test_ca`` signed."""
    require_tool("docker-registry")
    reg = Registry(tmp_path_factory.mktemp("mtls-registry"), tls=test_ca,
                   client_ca=test_ca).start()
    try:
        yield reg
    finally:
        reg.stop()


@pytest.fixture(scope="session")
def base_images(registry: Registry, tmp_path_factory: pytest.TempPathFactory) -> BaseImages:
    """busybox pushed to ``registry`` as an OCI manifest, a Docker manifest and an index."""
    require_tool("skopeo")
    require_tool("busybox")
    return build_and_push_busybox(tmp_path_factory.mktemp("busybox"), registry.host, _host_arch())


@pytest.fixture(scope="session")
def debian_python_base(registry: Registry, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A Debian bookworm minbase with python3 (debootstrap, cached), pushed to ``registry``.

    The first run on a machine runs debootstrap against the mirror apt uses (~35 s);
    the tarball is kept under ~/.cache/kanipy-test for later runs.
    """
    require_tool("debootstrap")
    require_tool("skopeo")
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "kanipy-test"
    tarball = debian_layer_tar(cache, include="python3")
    return push_layer_tar(
        tmp_path_factory.mktemp("debian"), tarball, registry.ref("kanipy-test/debian:python"),
        created_by="debootstrap --variant=minbase --include=python3 bookworm",
        cmd=["bash"], arch=_host_arch(),
    )


@pytest.fixture(scope="session")
def ci_container(tmp_path_factory: pytest.TempPathFactory) -> CIContainer:
    """A runc root (Debian, python3, this checkout's kanipy) to run builds as a CI step would."""
    require_tool("runc")
    require_tool("debootstrap")
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "kanipy-test"
    tarball = debian_layer_tar(cache, include="python3")
    base = tmp_path_factory.mktemp("ci-container")
    rootfs = make_kanipy_rootfs(tarball, base / "rootfs")
    return CIContainer(rootfs, base / "scratch")
