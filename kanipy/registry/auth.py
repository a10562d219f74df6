"""Registry authentication: WWW-Authenticate challenges, Basic, and Bearer tokens.

The Bearer flow is Docker's token spec (distribution ``docs/spec/auth/token.md``
and ``oauth.md``): on a 401 the registry names a ``realm``, a ``service`` and a
``scope``; we ask the realm for one token covering every scope the operation
needs (``repository:dst:pull,push`` plus ``repository:src:pull`` for a
cross-repository mount). Credentials go to the token server as Basic auth on a
GET; an identity token goes as an OAuth2 ``refresh_token`` grant in a POST form,
as Docker does. Tokens are reused until ``expires_in`` runs out.

No token or credential is ever logged.
"""

from __future__ import annotations

import base64
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode, urlsplit

from kanipy.errors import AuthError, RegistryError
from kanipy.registry.challenge import Challenge
from kanipy.registry.credentials import Credential, CredentialStore

if TYPE_CHECKING:
    from kanipy.registry.transport import Transport

log = logging.getLogger(__name__)

# The token spec's minimum lifetime when a server omits expires_in.
_DEFAULT_TOKEN_LIFETIME = 60
# Refresh a little early so a token does not expire mid-request.
_EXPIRY_MARGIN = 10


def repository_scope(repository: str, actions: str) -> str:
    """``repository:NAME:ACTIONS`` (token spec, "Requesting a Token")."""
    return f"repository:{repository}:{actions}"


@dataclass
class _Token:
    value: str
    expires_at: float


class Authenticator:
    """Produces the Authorization header for a request; caches tokens per host and scopes."""

    def __init__(self, transport: Transport, credentials: CredentialStore) -> None:
        self.transport = transport
        self.credentials = credentials
        self._creds: dict[str, Credential | None] = {}
        self._tokens: dict[tuple[str, tuple[str, ...]], _Token] = {}
        self._lock = threading.Lock()
        # One lock per (host, scopes): concurrent blob uploads wait for the
        # first thread's token instead of each asking the token server.
        self._fetching: dict[tuple[str, tuple[str, ...]], threading.Lock] = {}
        self.clock: Callable[[], float] = time.monotonic

    def credential(self, registry: str) -> Credential | None:
        with self._lock:
            if registry in self._creds:
                return self._creds[registry]
        found = self.credentials.lookup(registry)
        log.debug("credentials for %s: %s", registry,
                  f"from {found.source}" if found else "none (anonymous)")
        with self._lock:
            self._creds[registry] = found
        return found

    def authorization(
        self, registry: str, host: str, challenge: Challenge | None, scopes: Sequence[str]
    ) -> str | None:
        """The Authorization header value for ``scopes`` at ``host``, or None (anonymous)."""
        if challenge is None:
            return None
        if challenge.scheme == "basic":
            cred = self.credential(registry)
            if cred is None or cred.basic_auth is None:
                return None
            user, password = cred.basic_auth
            return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
        if challenge.scheme == "bearer":
            token = self.token(registry, host, challenge, scopes)
            return f"Bearer {token}" if token else None
        log.warning("registry %s asks for unsupported auth scheme %r", host, challenge.scheme)
        return None

    def invalidate(self, host: str, scopes: Sequence[str]) -> None:
        with self._lock:
            self._tokens.pop((host, tuple(sorted(set(scopes)))), None)

    def token(
        self, registry: str, host: str, challenge: Challenge, scopes: Sequence[str]
    ) -> str:
        key = (host, tuple(sorted(set(scopes))))
        with self._lock:
            fetch_lock = self._fetching.setdefault(key, threading.Lock())
        with fetch_lock:
            now = self.clock()
            with self._lock:
                cached = self._tokens.get(key)
                if cached is not None and cached.expires_at > now:
                    return cached.value
            value, lifetime = self._fetch_token(registry, challenge, key[1])
            with self._lock:
                self._tokens[key] = _Token(value, now + max(0, lifetime - _EXPIRY_MARGIN))
            return value

    def _fetch_token(
        self, registry: str, challenge: Challenge, scopes: tuple[str, ...]
    ) -> tuple[str, int]:
        realm = challenge.realm
        if not realm:
            raise AuthError(f"{registry} asked for a bearer token but named no realm",
                            registry=registry)
        realm_host = urlsplit(realm).netloc
        cred = self.credential(registry)
        service = challenge.params.get("service", "")
        headers: dict[str, str] = {}
        if cred is not None and cred.identity_token:
            # oauth.md: refresh_token grant, scopes space-separated in one field.
            form = {"grant_type": "refresh_token", "refresh_token": cred.identity_token,
                    "service": service, "client_id": "kanipy", "scope": " ".join(scopes)}
            method, url, body = "POST", realm, _form_body(form)
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        else:
            query = [("service", service)] if service else []
            query += [("scope", s) for s in scopes]
            sep = "&" if "?" in realm else "?"
            method, url, body = "GET", realm + (sep + urlencode(query) if query else ""), None
            if cred is not None and cred.basic_auth is not None:
                user, password = cred.basic_auth
                headers["Authorization"] = "Basic " + base64.b64encode(
                    f"{user}:{password}".encode()).decode()
        log.debug("requesting a token from %s for %s (%s)", realm_host, " ".join(scopes),
                  f"credentials from {cred.source}" if cred else "anonymous")
        # The token server is reached with the TLS settings of what the token is for.
        action = "push" if any("push" in s.rpartition(":")[2] for s in scopes) else "pull"
        resp = self.transport.send(method, url, host=realm_host, headers=headers, body=body,
                                   action=action)
        with resp:
            if resp.status_code in (401, 403):
                if cred is None:
                    raise AuthError(
                        f"the token server of {registry} refused anonymous access "
                        f"(HTTP {resp.status_code})", registry=registry,
                        status=resp.status_code)
                raise AuthError(
                    f"the token server of {registry} rejected the credentials from "
                    f"{cred.source} (HTTP {resp.status_code})", registry=registry,
                    status=resp.status_code)
            if resp.status_code != 200:
                raise RegistryError(
                    f"the token server of {registry} answered HTTP {resp.status_code}",
                    registry=registry, status=resp.status_code)
            try:
                data: dict[str, Any] = resp.json()
            except ValueError:
                raise RegistryError(f"the token server of {registry} sent no JSON",
                                    registry=registry) from None
        value = str(data.get("token") or data.get("access_token") or "")
        if not value:
            raise RegistryError(f"the token server of {registry} sent no token",
                                registry=registry)
        try:
            lifetime = int(data.get("expires_in") or _DEFAULT_TOKEN_LIFETIME)
        except (TypeError, ValueError):
            lifetime = _DEFAULT_TOKEN_LIFETIME
        return value, lifetime


def _form_body(form: dict[str, str]) -> bytes:
    return urlencode(form).encode()
