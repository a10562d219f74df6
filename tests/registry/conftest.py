"""Fixtures for registry client tests: a client per test, a fault proxy, a token registry."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from kanipy.oci.blobstore import BlobStore
from kanipy.registry import RegistryClient, RegistryOptions
from tests.registry.servers import TokenRegistry, TokenServer
from tests.tools import require_tool

TOKEN_USER = "tokenuser"
TOKEN_PASSWORD = "t0ken-Pa55word"


@pytest.fixture
def docker_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty DOCKER_CONFIG directory, so no test reads the real ~/.docker."""
    directory = tmp_path / "docker-config"
    directory.mkdir()
    monkeypatch.setenv("DOCKER_CONFIG", str(directory))
    return directory


@pytest.fixture
def store(tmp_path: Path) -> BlobStore:
    return BlobStore(tmp_path / "store")


@pytest.fixture
def client(docker_config: Path) -> RegistryClient:
    return RegistryClient(RegistryOptions(backoff=0.05))


@pytest.fixture(scope="session")
def token_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TokenRegistry]:
    """A registry using Bearer token auth, with its token server (``.token_server``)."""
    require_tool("docker-registry")
    require_tool("openssl")
    server = TokenServer(tmp_path_factory.mktemp("token-server"), TOKEN_USER,
                         TOKEN_PASSWORD).start()
    reg = TokenRegistry(tmp_path_factory.mktemp("token-registry"), token_server=server)
    try:
        reg.start()
        yield reg
    finally:
        reg.stop()
        server.stop()
