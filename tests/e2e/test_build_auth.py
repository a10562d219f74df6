"""Pushing to a registry with TLS and auth, credentials from $DOCKER_CONFIG, as CI steps do."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import requests

from tests.conftest import AUTH_PASSWORD, AUTH_USER
from tests.e2e.helpers import build, write_tree
from tests.fixtures.images import BaseImages
from tests.fixtures.registry import Registry


def _docker_config(directory: Path, host: str, user: str, password: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    auth = base64.b64encode(f"{user}:{password}".encode()).decode()
    (directory / "config.json").write_text(json.dumps({"auths": {host: {"auth": auth}}}))
    return directory


def _manifest_status(reg: Registry, repo: str, tag: str) -> int:
    assert reg.tls is not None
    return requests.get(
        f"{reg.url}/v2/{repo}/manifests/{tag}", auth=(AUTH_USER, AUTH_PASSWORD),
        verify=str(reg.tls.ca_cert), timeout=10,
        headers={"Accept": "application/vnd.oci.image.manifest.v1+json"},
    ).status_code


def test_push_with_config_json_credentials_and_a_private_ca(
        tmp_path: Path, auth_registry: Registry, base_images: BaseImages) -> None:
    assert auth_registry.tls is not None
    context = write_tree(tmp_path / "ctx", {"Dockerfile": (
        f"FROM {base_images.oci}\nRUN echo private > /private.txt\n")})
    config = _docker_config(tmp_path / "docker", auth_registry.host, AUTH_USER, AUTH_PASSWORD)
    dest = auth_registry.ref("e2e/private:1")
    result = build(context, "-d", dest, "--registry-certificate",
                   f"{auth_registry.host}={auth_registry.tls.ca_cert}",
                   env={"DOCKER_CONFIG": str(config)}).check()
    assert result.stdout.startswith(f"{auth_registry.host}/e2e/private@sha256:")
    assert AUTH_PASSWORD not in result.stderr
    assert _manifest_status(auth_registry, "e2e/private", "1") == 200


def test_wrong_password_fails_before_building_and_says_where_it_looked(
        tmp_path: Path, auth_registry: Registry, base_images: BaseImages) -> None:
    assert auth_registry.tls is not None
    context = write_tree(tmp_path / "ctx", {"Dockerfile": (
        f"FROM {base_images.oci}\nRUN echo must-not-run\n")})
    config = _docker_config(tmp_path / "docker", auth_registry.host, AUTH_USER, "Wr0ng-Pa55-x9")
    result = build(context, "-d", auth_registry.ref("e2e/denied:1"), "--registry-certificate",
                   f"{auth_registry.host}={auth_registry.tls.ca_cert}",
                   env={"DOCKER_CONFIG": str(config)})
    assert result.returncode == 4, result.stderr
    message = result.stderr.strip().splitlines()[-1]
    assert auth_registry.host in message and "e2e/denied" in message, message
    assert str(config / "config.json") in message, message
    assert "must-not-run" not in result.stderr, "the build must stop before any step"
    assert "Wr0ng-Pa55-x9" not in result.stderr
    assert _manifest_status(auth_registry, "e2e/denied", "1") == 404


def test_untrusted_certificate_says_how_to_trust_it(
        tmp_path: Path, auth_registry: Registry, base_images: BaseImages) -> None:
    context = write_tree(tmp_path / "ctx", {"Dockerfile": f"FROM {base_images.oci}\n"})
    config = _docker_config(tmp_path / "docker", auth_registry.host, AUTH_USER, AUTH_PASSWORD)
    result = build(context, "-d", auth_registry.ref("e2e/untrusted:1"),
                   env={"DOCKER_CONFIG": str(config)})
    assert result.returncode == 4, result.stderr
    message = result.stderr.strip().splitlines()[-1]
    assert "--registry-certificate" in message, message
