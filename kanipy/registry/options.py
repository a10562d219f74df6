"""RegistryOptions: every knob of the registry client, as one frozen value.

The names follow Kaniko's flags: ``--insecure-registry``, ``--skip-tls-verify``,
``--skip-tls-verify-registry``, ``--registry-certificate``,
``--registry-client-cert``, ``--registry-mirror``, ``--registry-map``,
``--skip-default-registry-fallback``, ``--push-retry`` and
``--image-download-retry``; the CLI fills them in.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from kanipy import __version__
from kanipy.fieldwise import Fieldwise
from kanipy.reference import registry_of

log = logging.getLogger(__name__)

MiB = 1 << 20


@dataclass(frozen=True, repr=False, eq=False)
class RegistryOptions(Fieldwise):
    """How to reach registries. Hosts are written ``host[:port]``, as in references."""

    # Hosts that may be spoken to over plain HTTP (after HTTPS was tried), for
    # pulls and pushes alike (--insecure-registry).
    insecure_registries: frozenset[str] = frozenset()
    # Every host may be spoken to over plain HTTP: for pulls (--insecure-pull),
    # for pushes (--insecure).
    insecure_pull: bool = False
    insecure_push: bool = False
    # No TLS certificate is verified: in pulls, in pushes (see the engine for
    # which flags set which), or for these hosts in both.
    skip_tls_verify_pull: bool = False
    skip_tls_verify_push: bool = False
    skip_tls_verify_registries: frozenset[str] = frozenset()
    # host -> path of a PEM CA bundle that signs that registry's certificate.
    registry_certificates: Mapping[str, str] = field(default_factory=dict)
    # host -> (certificate, key) PEM files kanipy presents to that registry (mutual TLS).
    client_certificates: Mapping[str, tuple[str, str]] = field(default_factory=dict)
    # Docker Hub mirrors, tried in order before docker.io itself: ``host[/prefix]``.
    mirrors: tuple[str, ...] = ()
    # (ORIG, NEW): images of registry ORIG are pulled from NEW (``host[/prefix]``)
    # first, in order, then from ORIG.
    registry_maps: tuple[tuple[str, str], ...] = ()
    # With mirrors or maps for a registry, pull only from them, never from it.
    skip_default_registry_fallback: bool = False
    retries: int = 3
    # Retries of pull requests; None: ``retries``.
    pull_retries: int | None = None
    backoff: float = 0.5
    max_backoff: float = 30.0
    connect_timeout: float = 15.0
    read_timeout: float = 120.0
    # A body that brings fewer than low_speed_limit bytes in low_speed_time
    # seconds has stalled (curl's --speed-limit/--speed-time): a registry
    # trickling one byte a second never trips read_timeout (issue 11).
    low_speed_limit: int = 1024
    low_speed_time: float = 60.0
    # None: $DOCKER_CONFIG, else ~/.docker.
    docker_config_dir: Path | None = None
    user_agent: str = f"kanipy/{__version__}"
    # Blobs at least this large go up in PATCH chunks of chunk_size bytes.
    chunk_threshold: int = 256 * MiB
    chunk_size: int = 64 * MiB
    concurrency: int = 4

    def normalized(self) -> RegistryOptions:
        """The same options with every host spelled as references spell it."""
        return RegistryOptions(
            insecure_registries=frozenset(registry_of(h) for h in self.insecure_registries),
            insecure_pull=self.insecure_pull,
            insecure_push=self.insecure_push,
            skip_tls_verify_pull=self.skip_tls_verify_pull,
            skip_tls_verify_push=self.skip_tls_verify_push,
            skip_tls_verify_registries=frozenset(
                registry_of(h) for h in self.skip_tls_verify_registries
            ),
            registry_certificates={
                registry_of(h): p for h, p in self.registry_certificates.items()
            },
            client_certificates={
                registry_of(h): pair for h, pair in self.client_certificates.items()
            },
            mirrors=self.mirrors,
            registry_maps=tuple((registry_of(o), n) for o, n in self.registry_maps),
            skip_default_registry_fallback=self.skip_default_registry_fallback,
            retries=max(0, self.retries),
            pull_retries=None if self.pull_retries is None else max(0, self.pull_retries),
            backoff=self.backoff,
            max_backoff=self.max_backoff,
            connect_timeout=self.connect_timeout,
            read_timeout=self.read_timeout,
            low_speed_limit=self.low_speed_limit,
            low_speed_time=self.low_speed_time,
            docker_config_dir=self.docker_config_dir,
            user_agent=self.user_agent,
            chunk_threshold=self.chunk_threshold,
            chunk_size=max(MiB, self.chunk_size),
            concurrency=max(1, self.concurrency),
        )

    def retries_for(self, action: str) -> int:
        """How many times a failed request of ``action`` ("pull" or "push") is retried."""
        if action == "pull" and self.pull_retries is not None:
            return self.pull_retries
        return self.retries

    def insecure_for(self, action: str) -> bool:
        """Whether every host may use plain HTTP for requests of ``action`` ("pull"/"push")."""
        return self.insecure_pull if action == "pull" else self.insecure_push

    def skip_tls_verify_for(self, action: str) -> bool:
        """Whether no certificate is verified in requests of ``action`` ("pull"/"push")."""
        return self.skip_tls_verify_pull if action == "pull" else self.skip_tls_verify_push
