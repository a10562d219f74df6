"""HTTPS connections of a session share one TLS context per CA bundle (issue 14).

Against a real TLS registry (``auth_registry``: its certificate signed by the test
CA; ``/v2/`` answers 401 once the handshake is done). Loading a CA bundle is the
expensive part of a context (certifi's: ~15 ms of CPU), so the count of
``load_verify_locations`` calls is what the sharing saves; the handshakes show that
verification still happens with the shared context.
"""

from __future__ import annotations

import shutil
import ssl
import threading
from pathlib import Path

import pytest
import requests

from kanipy.http import make_session
from tests.fixtures.registry import CertificateAuthority, Registry

CONNECTIONS = 6


def _count_loads(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    loads: list[object] = []
    real = ssl.SSLContext.load_verify_locations

    def counting(self: ssl.SSLContext, *args: object, **kwargs: object) -> None:
        loads.append(args or kwargs)
        real(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(ssl.SSLContext, "load_verify_locations", counting)
    return loads


def _get_at_once(url: str, verify: str | bool) -> list[int | str]:
    """``CONNECTIONS`` GETs at the same time, each on a connection of its own."""
    # trust_env=False: REQUESTS_CA_BUNDLE in the environment would win over ``verify``.
    session = make_session(verify=verify, pool_maxsize=CONNECTIONS, trust_env=False)
    start = threading.Barrier(CONNECTIONS)
    results: list[int | str] = []

    def get() -> None:
        start.wait()
        try:
            results.append(session.get(url, timeout=30).status_code)
        except requests.exceptions.RequestException as exc:
            results.append(str(exc))

    threads = [threading.Thread(target=get) for _ in range(CONNECTIONS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    session.close()
    return results


def test_connections_at_once_load_the_ca_bundle_once(
        tmp_path: Path, auth_registry: Registry, test_ca: CertificateAuthority,
        monkeypatch: pytest.MonkeyPatch) -> None:
    bundle = tmp_path / "ca.pem"  # a path no earlier test made a context for
    shutil.copy(test_ca.ca_cert, bundle)
    loads = _count_loads(monkeypatch)
    assert _get_at_once(f"{auth_registry.url}/v2/", str(bundle)) == [401] * CONNECTIONS
    assert len(loads) == 1, loads


def test_the_shared_context_still_verifies(
        tmp_path: Path, auth_registry: Registry) -> None:
    # requests' default bundle (certifi's) does not trust the test CA.
    results = _get_at_once(f"{auth_registry.url}/v2/", True)
    assert len(results) == CONNECTIONS
    assert all("CERTIFICATE_VERIFY_FAILED" in str(r) for r in results), results


def test_a_rewritten_ca_bundle_is_loaded_again(
        tmp_path: Path, auth_registry: Registry, test_ca: CertificateAuthority) -> None:
    bundle = tmp_path / "ca.pem"
    shutil.copy(test_ca.ca_cert, bundle)
    assert _get_at_once(f"{auth_registry.url}/v2/", str(bundle)) == [401] * CONNECTIONS
    other = CertificateAuthority(tmp_path / "other-ca")
    shutil.copy(other.ca_cert, bundle)  # the same path, another CA
    results = _get_at_once(f"{auth_registry.url}/v2/", str(bundle))
    assert all("CERTIFICATE_VERIFY_FAILED" in str(r) for r in results), results


def test_a_missing_bundle_fails_as_requests_says(auth_registry: Registry,
                                                 tmp_path: Path) -> None:
    session = make_session(verify=str(tmp_path / "absent.pem"), trust_env=False)
    with pytest.raises(OSError, match="invalid path"):
        session.get(f"{auth_registry.url}/v2/", timeout=30)


def test_a_pool_behind_an_https_proxy_keeps_its_ca_for_the_proxy(
        tmp_path: Path, test_ca: CertificateAuthority) -> None:
    """urllib3 verifies an HTTPS proxy with the pool's CA settings: they stay on that
    pool (a plain-HTTP proxy's pool, like a direct one, leaves them to the shared context)."""
    bundle = tmp_path / "ca.pem"
    shutil.copy(test_ca.ca_cert, bundle)
    session = make_session(verify=str(bundle), trust_env=False)
    adapter = session.get_adapter("https://registry.example")
    request = requests.Request("GET", "https://registry.example/v2/").prepare()
    kept = {}
    for proxy in (None, "http://127.0.0.1:9", "https://127.0.0.1:9"):
        proxies = {"https": proxy} if proxy else {}
        conn = adapter.get_connection_with_tls_context(request, str(bundle), proxies=proxies)
        adapter.cert_verify(conn, request.url or "", str(bundle), None)
        kept[proxy] = conn.ca_certs
    assert kept == {None: None, "http://127.0.0.1:9": None, "https://127.0.0.1:9": str(bundle)}
