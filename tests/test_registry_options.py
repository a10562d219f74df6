"""Kaniko's registry flags as registry client options: scopes, sources, retries (no network)."""

from __future__ import annotations

from pathlib import Path

import pytest

from kanipy.errors import UsageError
from kanipy.executor.engine import registry_options
from kanipy.executor.options import BuildOptions
from kanipy.reference import Reference
from kanipy.registry.options import RegistryOptions
from kanipy.registry.pull import mirror_sources
from kanipy.registry.transport import Transport

HOST = "registry.example.com"


def _transport(**flags: object) -> Transport:
    return Transport(registry_options(BuildOptions(**flags)).normalized())


@pytest.mark.parametrize(("flags", "pull", "push"), [
    ({}, False, False),
    ({"insecure": True}, False, True),
    ({"insecure_pull": True}, True, False),
    ({"insecure_registries": (HOST,)}, True, True),
    ({"insecure_registries": ("other.example.com",)}, False, False),
], ids=["none", "--insecure: pushes", "--insecure-pull: pulls", "--insecure-registry: both",
        "--insecure-registry: that host only"])
def test_plain_http_is_scoped_as_kaniko_scopes_it(flags: dict[str, object], pull: bool,
                                                  push: bool) -> None:
    transport = _transport(**flags)
    assert transport.may_use_http(HOST, "pull") is pull
    assert transport.may_use_http(HOST, "push") is push
    assert transport.may_use_http("127.0.0.1:5000", "pull"), "loopback, as Docker allows"


@pytest.mark.parametrize(("flags", "pull", "push"), [
    ({}, True, True),
    ({"skip_tls_verify_pull": True}, False, True),
    # As Kaniko documents it (issue 12): a push switch never weakens pulls.
    ({"skip_tls_verify": True}, True, False),
    ({"skip_tls_verify_registries": (HOST,)}, False, False),
    ({"skip_tls_verify_registries": ("other.example.com",)}, True, True),
], ids=["none", "--skip-tls-verify-pull: pulls", "--skip-tls-verify: pushes",
        "--skip-tls-verify-registry: both", "--skip-tls-verify-registry: that host only"])
def test_certificate_verification_is_scoped(flags: dict[str, object], pull: bool,
                                            push: bool) -> None:
    transport = _transport(**flags)
    assert (transport.verify_for(HOST, "pull") is not False) is pull
    assert (transport.verify_for(HOST, "push") is not False) is push


def test_a_registry_certificate_is_used_for_pulls_and_pushes(tmp_path: Path) -> None:
    cert, key, ca = tmp_path / "c.pem", tmp_path / "k.pem", tmp_path / "ca.pem"
    for path in (cert, key, ca):
        path.write_text("")
    transport = _transport(registry_certificates=((HOST, str(ca)),),
                           registry_client_certs=((HOST, str(cert), str(key)),))
    assert transport.verify_for(HOST, "pull") == transport.verify_for(HOST, "push") == str(ca)
    assert transport.client_cert_for(HOST) == (str(cert), str(key))
    assert transport.client_cert_for("other.example.com") is None


def test_a_missing_registry_certificate_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=f"--registry-certificate {HOST}=/nonexistent.pem: "
                                         "/nonexistent.pem is not a file"):
        registry_options(BuildOptions(registry_certificates=((HOST, "/nonexistent.pem"),)))


def test_a_missing_client_certificate_file_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=f"--registry-client-cert {HOST}: .*/c.pem is not a file"):
        registry_options(BuildOptions(registry_client_certs=(
            (HOST, str(tmp_path / "c.pem"), str(tmp_path / "k.pem")),)))


def test_image_download_retry_counts_pulls_only() -> None:
    options = registry_options(BuildOptions(push_retry=5, image_download_retry=1)).normalized()
    assert (options.retries_for("pull"), options.retries_for("push")) == (1, 5)
    unset = registry_options(BuildOptions(push_retry=5)).normalized()
    assert (unset.retries_for("pull"), unset.retries_for("push")) == (5, 5)


@pytest.mark.parametrize(("image", "maps", "mirrors", "expected"), [
    ("quay.io/org/app:1", [("quay.io", "mirror.example")], [],
     ["mirror.example/org/app:1"]),
    ("quay.io/org/app:1", [("quay.io", "mirror.example/cache/quay/"), ("quay.io", "m2:5000")],
     [], ["mirror.example/cache/quay/org/app:1", "m2:5000/org/app:1"]),
    ("ghcr.io/org/app:1", [("quay.io", "mirror.example")], [], []),
    # Docker Hub: its map entries, then the mirrors (Kaniko folds them into the map),
    # each once; the repository keeps library/.
    ("busybox:1", [("index.docker.io", "mirror.example")],
     ["mirror.example", "https://mirror.gcr.io/hub"],
     ["mirror.example/library/busybox:1", "mirror.gcr.io/hub/library/busybox:1"]),
], ids=["map", "maps in order, with prefixes", "other registry", "docker hub"])
def test_mirror_sources(image: str, maps: list[tuple[str, str]], mirrors: list[str],
                        expected: list[str]) -> None:
    options = RegistryOptions(registry_maps=tuple(maps), mirrors=tuple(mirrors)).normalized()
    assert [str(s) for s in mirror_sources(Reference.parse(image), options)] == expected
