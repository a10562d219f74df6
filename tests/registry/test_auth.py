"""Authenticated registries: htpasswd over TLS, and Bearer tokens from a token server."""

from __future__ import annotations

import base64
import json
import logging
import os
import stat
from pathlib import Path

import pytest

from kanipy.errors import AuthError, RegistryError
from kanipy.oci.blobstore import BlobStore
from kanipy.reference import Reference
from kanipy.registry import RegistryClient, RegistryOptions
from kanipy.registry.pull import pull
from kanipy.registry.push import push
from tests.conftest import AUTH_PASSWORD, AUTH_USER
from tests.fixtures.registry import Registry
from tests.registry.conftest import TOKEN_PASSWORD, TOKEN_USER
from tests.registry.images import random_image
from tests.registry.servers import TokenRegistry


def write_auths(config_dir: Path, host: str, user: str, password: str) -> Path:
    path = config_dir / "config.json"
    auth = base64.b64encode(f"{user}:{password}".encode()).decode()
    path.write_text(json.dumps({"auths": {f"https://{host}": {"auth": auth}}}))
    return path


def install_helper(bin_dir: Path, monkeypatch: pytest.MonkeyPatch, username: str,
                   secret: str, name: str = "kanipytest") -> None:
    """A docker-credential-NAME script that answers ``get`` for any server."""
    bin_dir.mkdir(exist_ok=True)
    script = bin_dir / f"docker-credential-{name}"
    answer = json.dumps({"ServerURL": "", "Username": username, "Secret": secret})
    script.write_text(f"#!/bin/sh\n[ \"$1\" = get ] || exit 1\ncat >/dev/null\n"
                      f"echo '{answer}'\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")


def tls_client(auth_registry: Registry) -> RegistryClient:
    assert auth_registry.tls is not None
    return RegistryClient(RegistryOptions(
        registry_certificates={auth_registry.host: str(auth_registry.tls.ca_cert)},
        backoff=0.05))


def push_and_pull(client: RegistryClient, ref: Reference, store: BlobStore,
                  tmp_path: Path) -> None:
    image = random_image(store, [4096], label=str(ref))
    digest = push(image.stored(), ref, client=client)
    pulled = pull(ref, client=client, store=BlobStore(tmp_path / f"pulled-{digest.short}"))
    assert pulled.manifest().raw == image.manifest_raw


def test_basic_auth_with_auths_in_config_json(
    auth_registry: Registry, docker_config: Path, store: BlobStore, tmp_path: Path
) -> None:
    write_auths(docker_config, auth_registry.host, AUTH_USER, AUTH_PASSWORD)
    client = tls_client(auth_registry)
    ref = Reference.parse(auth_registry.ref("auths/app:v1"))
    client.check_push_permission(ref)
    push_and_pull(client, ref, store, tmp_path)


def test_basic_auth_with_a_credential_helper_on_path(
    auth_registry: Registry, docker_config: Path, store: BlobStore, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    install_helper(tmp_path / "bin", monkeypatch, AUTH_USER, AUTH_PASSWORD)
    (docker_config / "config.json").write_text(
        json.dumps({"credHelpers": {auth_registry.host: "kanipytest"}}))
    push_and_pull(tls_client(auth_registry), Reference.parse(auth_registry.ref("helper/app:v1")),
                  store, tmp_path)


def test_wrong_password_names_registry_repository_and_source(
    auth_registry: Registry, docker_config: Path, store: BlobStore
) -> None:
    config = write_auths(docker_config, auth_registry.host, AUTH_USER, "Bad-Pa55")
    ref = Reference.parse(auth_registry.ref("denied/app:v1"))
    image = random_image(store, [10])
    with pytest.raises(AuthError) as info:
        push(image.stored(), ref, client=tls_client(auth_registry))
    message = info.value.message
    assert info.value.exit_code == 4
    assert f"push to {auth_registry.host}/denied/app denied" in message
    assert f"credentials from {config} auths were rejected" in message
    assert "Bad-Pa55" not in message


def test_no_credentials_says_how_to_log_in(
    auth_registry: Registry, docker_config: Path, store: BlobStore
) -> None:
    ref = Reference.parse(auth_registry.ref("anon/app:v1"))
    with pytest.raises(AuthError) as info:
        tls_client(auth_registry).check_push_permission(ref)
    assert info.value.message.startswith(
        f"push to {auth_registry.host}/anon/app denied: authentication required; "
        f"no credentials for {auth_registry.host} in {docker_config / 'config.json'}")
    assert f"docker login {auth_registry.host}" in info.value.message
    assert info.value.code == "UNAUTHORIZED"


def test_untrusted_certificate_hints_at_the_flags(
    auth_registry: Registry, docker_config: Path, store: BlobStore
) -> None:
    client = RegistryClient(RegistryOptions(backoff=0.01))
    with pytest.raises(RegistryError) as info:
        pull(Reference.parse(auth_registry.ref("x/y:z")), client=client, store=store)
    assert auth_registry.host in info.value.message
    assert "not trusted" in info.value.message
    assert f"--registry-certificate {auth_registry.host}=" in info.value.message


def test_skip_tls_verify_for_that_registry(
    auth_registry: Registry, docker_config: Path, store: BlobStore, tmp_path: Path
) -> None:
    write_auths(docker_config, auth_registry.host, AUTH_USER, AUTH_PASSWORD)
    client = RegistryClient(RegistryOptions(
        skip_tls_verify_registries=frozenset({auth_registry.host})))
    push_and_pull(client, Reference.parse(auth_registry.ref("skipverify/app:v1")), store,
                  tmp_path)


def test_unreachable_host_is_named(docker_config: Path, store: BlobStore) -> None:
    from tests.fixtures.registry import free_port

    host = f"127.0.0.1:{free_port()}"
    client = RegistryClient(RegistryOptions(retries=1, backoff=0.01))
    with pytest.raises(RegistryError) as info:
        pull(Reference.parse(f"{host}/app:v1"), client=client, store=store)
    assert info.value.message == f"cannot reach {host}: connection refused"
    assert info.value.temporary


# -- Bearer tokens --------------------------------------------------------------

def test_bearer_token_push_mount_and_pull(
    token_registry: TokenRegistry, docker_config: Path, store: BlobStore, tmp_path: Path
) -> None:
    server = token_registry.token_server
    assert server is not None
    write_auths(docker_config, token_registry.host, TOKEN_USER, TOKEN_PASSWORD)
    client = RegistryClient(RegistryOptions())
    source = Reference.parse(token_registry.ref("tok/source:v1"))
    push_and_pull(client, source, store, tmp_path)

    image = random_image(store, [777], label="mount")
    push(image.stored(), source, client=client)
    before = len(server.requests)
    dest = Reference.parse(token_registry.ref("tok/dest:v1"))
    push(image.stored(), dest, client=client,
         mount_sources={b.digest: "tok/source" for b in image.blobs})
    # One token request, carrying both repositories' scopes, served the whole push.
    new = server.requests[before:]
    assert len(new) == 1
    assert sorted(new[0]["scopes"]) == [  # type: ignore[call-overload]
        "repository:tok/dest:pull,push", "repository:tok/source:pull"]
    # A second push with the same scopes reuses the cached token.
    push(image.stored(), dest, client=client,
         mount_sources={b.digest: "tok/source" for b in image.blobs})
    assert len(server.requests) == before + 1


def test_bearer_identity_token_from_helper_uses_oauth_refresh(
    token_registry: TokenRegistry, docker_config: Path, store: BlobStore, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    server = token_registry.token_server
    assert server is not None
    install_helper(tmp_path / "bin", monkeypatch, "<token>", server.identity_token,
                   name="kanipytok")
    (docker_config / "config.json").write_text(json.dumps({"credsStore": "kanipytok"}))
    before = len(server.requests)
    push_and_pull(RegistryClient(RegistryOptions()),
                  Reference.parse(token_registry.ref("tok/identity:v1")), store, tmp_path)
    grants = [r for r in server.requests[before:] if r["method"] == "POST"]
    assert grants and all(r["grant"] == "refresh_token" for r in grants)


def test_bearer_wrong_password_names_the_helper(
    token_registry: TokenRegistry, docker_config: Path, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    install_helper(tmp_path / "bin", monkeypatch, TOKEN_USER, "nope", name="kanipybad")
    (docker_config / "config.json").write_text(
        json.dumps({"credHelpers": {token_registry.host: "kanipybad"}}))
    ref = Reference.parse(token_registry.ref("tok/denied:v1"))
    with pytest.raises(AuthError) as info:
        RegistryClient(RegistryOptions()).check_push_permission(ref)
    assert f"push to {token_registry.host}/tok/denied denied" in info.value.message
    assert "docker-credential-kanipybad" in info.value.message


def test_bearer_anonymous_push_is_denied_early(
    token_registry: TokenRegistry, docker_config: Path
) -> None:
    ref = Reference.parse(token_registry.ref("tok/anon:v1"))
    with pytest.raises(AuthError) as info:
        RegistryClient(RegistryOptions()).check_push_permission(ref)
    assert f"no credentials for {token_registry.host}" in info.value.message


# -- secrets never reach a log ----------------------------------------------------

def test_no_secret_reaches_any_log(
    auth_registry: Registry, token_registry: TokenRegistry, docker_config: Path,
    store: BlobStore, tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    server = token_registry.token_server
    assert server is not None and auth_registry.tls is not None
    auths = {
        auth_registry.host: {"auth": base64.b64encode(
            f"{AUTH_USER}:{AUTH_PASSWORD}".encode()).decode()},
        token_registry.host: {"username": TOKEN_USER, "password": TOKEN_PASSWORD},
    }
    (docker_config / "config.json").write_text(json.dumps({"auths": auths}))
    caplog.set_level(logging.DEBUG)
    logging.getLogger("urllib3").setLevel(logging.DEBUG)
    before = len(server.issued)
    client = tls_client(auth_registry)
    push_and_pull(client, Reference.parse(auth_registry.ref("secret/app:v1")), store, tmp_path)
    push_and_pull(client, Reference.parse(token_registry.ref("secret/app:v1")), store,
                  tmp_path)
    tokens = server.issued[before:]
    assert tokens, "the token server issued no token"
    text = caplog.text + "".join(repr(r.args) for r in caplog.records)
    assert "urllib3" in text  # urllib3's own debug lines were captured too
    basic = base64.b64encode(f"{AUTH_USER}:{AUTH_PASSWORD}".encode()).decode()
    for secret in [AUTH_PASSWORD, TOKEN_PASSWORD, basic, *tokens]:
        assert secret not in text
    assert "Authorization" not in text
