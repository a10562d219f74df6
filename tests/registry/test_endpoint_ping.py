"""A registry is pinged once per setting, even when a build asks twice at the same time.

The pull of a build's first base and its push-permission check start together
and ask the same transport how the same registry answers. With
``--insecure-registry`` on a plain-HTTP registry that is a TLS handshake that
fails, then plain HTTP: made twice, it was about a seventh of a busybox build's
instructions (issue 14). The second caller now waits for the first's answer.
"""

from __future__ import annotations

import threading

from kanipy.executor.engine import registry_options
from kanipy.executor.options import BuildOptions
from kanipy.registry.transport import Endpoint, Transport
from tests.fixtures.registry import Registry


def test_pull_and_push_check_at_once_ping_the_registry_once(registry: Registry) -> None:
    options = BuildOptions(insecure_registries=(registry.host,))
    transport = Transport(registry_options(options).normalized())
    real_ping = transport._ping
    pings: list[str] = []

    def counted_ping(host: str, action: str) -> Endpoint:
        pings.append(action)
        return real_ping(host, action)

    transport._ping = counted_ping  # type: ignore[method-assign]
    start = threading.Barrier(2)
    found: dict[str, Endpoint] = {}

    def ask(action: str) -> None:
        start.wait()
        found[action] = transport.endpoint(registry.host, action)

    threads = [threading.Thread(target=ask, args=(action,)) for action in ("pull", "push")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(pings) == 1
    assert found["pull"] == found["push"]
    assert found["pull"].base_url == f"http://{registry.host}"
    # Asked again later: still the one answer, no ping.
    assert transport.endpoint(registry.host, "pull") == found["pull"]
    assert len(pings) == 1
