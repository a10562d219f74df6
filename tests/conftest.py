"""Session fixtures with real parts: registries and base images."""

from __future__ import annotations

import platform
from collections.abc import Iterator

import pytest

from tests.fixtures.images import BaseImages, build_and_push_busybox
from tests.fixtures.registry import CertificateAuthority, Registry
from tests.tools import require_tool

AUTH_USER = "kanipy"
AUTH_PASSWORD = "s3cret-Pa55"


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
def base_images(registry: Registry, tmp_path_factory: pytest.TempPathFactory) -> BaseImages:
    """busybox pushed to ``registry`` as an OCI manifest, a Docker manifest and an index."""
    require_tool("skopeo")
    require_tool("busybox")
    return build_and_push_busybox(tmp_path_factory.mktemp("busybox"), registry.host, _host_arch())
