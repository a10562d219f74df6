"""HTTP to registries: one requests.Session, TLS per host, scheme discovery, retries.

``Transport.endpoint(host, action)`` pings ``/v2/`` (distribution spec,
"Determining support") once per host and remembers the scheme that answered
and the auth challenge it sent. HTTPS is always tried first; plain HTTP is a
fallback only for hosts the user named insecure and for loopback hosts, as
Docker does for localhost. Kaniko scopes its TLS and plain-HTTP switches to
pulls or pushes, so every request says which it is (``action``): the same
host may be verified for one and not for the other. ``Transport.send``
retries connection errors, 429 and 5xx with exponential backoff, honouring
``Retry-After`` — but only for requests the caller marks as safe to repeat;
uploads restart from their file in their own loop. Nothing here logs a
header, and URLs are logged through ``kanipy.http.redact_url`` (re-exported
here for the client's modules).
"""

from __future__ import annotations

import email.utils
import ipaddress
import logging
import random
import re
import threading
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import requests
import urllib3.exceptions

from kanipy.errors import ConnectionFailed, RegistryError
from kanipy.fieldwise import Fieldwise
from kanipy.http import LowSpeed, low_speed_stall, make_session, redact_url
from kanipy.registry.challenge import Challenge, parse_challenge
from kanipy.registry.options import RegistryOptions

log = logging.getLogger(__name__)

Body = bytes | Iterable[bytes] | Callable[[], Any] | None
_RETRY_STATUS = frozenset({429, 500, 502, 503, 504})


def is_loopback(host: str) -> bool:
    name = host.rsplit(":", 1)[0] if not host.startswith("[") else host[1:].split("]")[0]
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def registry_session(options: RegistryOptions) -> requests.Session:
    """The Session every registry request goes through (``kanipy.http.make_session``)."""
    # Our own loop retries (retries=0: urllib3 must not repeat requests behind our
    # back); never pick up credentials from ~/.netrc: config.json is the only source.
    # Every request, not only blob downloads, is held to the low-speed limit: a
    # registry trickling a manifest, the headers of an upload session or the
    # reading of an upload would otherwise hold the build forever (issue 11).
    return make_session(user_agent=options.user_agent, retries=0,
                        pool_maxsize=options.concurrency * 2, trust_env=False,
                        low_speed=LowSpeed(options.low_speed_limit, options.low_speed_time))


@dataclass(frozen=True, repr=False, eq=False)
class Endpoint(Fieldwise):
    """How a registry host answered the ping: its base URL and its auth challenge."""

    base_url: str
    challenge: Challenge | None


class Transport:
    """Sends requests to registry hosts with the right scheme, TLS settings and retries."""

    def __init__(self, options: RegistryOptions, session: requests.Session | None = None):
        self.options = options
        self.session = session or registry_session(options)
        self._endpoints: dict[tuple[str, bool, bool | str], Endpoint] = {}
        self._lock = threading.Lock()
        # One ping at a time per endpoint key (see ``endpoint``).
        self._pinging: dict[tuple[str, bool, bool | str], threading.RLock] = {}
        self.sleep: Callable[[float], None] = time.sleep
        unverified = [what for what, skip in (("pulls", options.skip_tls_verify_pull),
                                              ("pushes", options.skip_tls_verify_push)) if skip]
        if options.skip_tls_verify_registries:
            unverified.append(", ".join(sorted(options.skip_tls_verify_registries)))
        if unverified:
            which = " and ".join(unverified)
            log.warning("TLS certificates are not verified for %s", which.replace(
                "pulls and pushes", "every registry"))
            # The user asked for this; one warning above instead of one per request.
            warnings.filterwarnings("ignore", category=urllib3.exceptions.InsecureRequestWarning)

    # -- TLS and schemes -------------------------------------------------
    def verify_for(self, host: str, action: str = "pull") -> bool | str:
        """requests' ``verify`` for a request of ``action`` ("pull" or "push") to ``host``."""
        opts = self.options
        if opts.skip_tls_verify_for(action) or host in opts.skip_tls_verify_registries:
            return False
        ca = opts.registry_certificates.get(host)
        return str(ca) if ca else True

    def client_cert_for(self, host: str) -> tuple[str, str] | None:
        """The (certificate, key) files to present to ``host``, for mutual TLS."""
        return self.options.client_certificates.get(host)

    def may_use_http(self, host: str, action: str = "pull") -> bool:
        opts = self.options
        return opts.insecure_for(action) or host in opts.insecure_registries \
            or is_loopback(host)

    def endpoint(self, host: str, action: str = "pull") -> Endpoint:
        """How ``host`` answers requests of ``action``; pinged once per TLS/HTTP setting."""
        key = (host, self.may_use_http(host, action), self.verify_for(host, action))
        with self._lock:
            known = self._endpoints.get(key)
            if known is not None:
                return known
            pinging = self._pinging.setdefault(key, threading.RLock())
        # The pull and the push-permission check start together on the same registry:
        # the second waits for the first's answer instead of probing it again (with
        # --insecure-registry, a TLS handshake that fails and its CA bundle load, issue
        # 14). A ping that fails leaves nothing: the next caller pings for itself.
        with pinging:
            with self._lock:
                known = self._endpoints.get(key)
            if known is not None:
                return known
            found = self._ping(host, action)
            with self._lock:
                self._endpoints[key] = found
            return found

    def forget(self, host: str) -> None:
        with self._lock:
            for key in [k for k in self._endpoints if k[0] == host]:
                del self._endpoints[key]

    def _ping(self, host: str, action: str) -> Endpoint:
        schemes = ["https", "http"] if self.may_use_http(host, action) else ["https"]
        for i, scheme in enumerate(schemes):
            base = f"{scheme}://{host}"
            last = i == len(schemes) - 1
            try:
                # Probing HTTPS on a host that may be plain HTTP: fail fast, no retries.
                resp = self.send("GET", f"{base}/v2/", host=host, retry=last, action=action,
                                 retries=self.options.retries_for(action))
            except RegistryError as exc:
                if last or getattr(exc, "tls_untrusted", False) \
                        or getattr(exc, "tls_client_cert", False):
                    raise
                log.debug("%s did not answer over HTTPS (%s); trying plain HTTP", host, exc)
                continue
            with resp:
                if resp.status_code in (200, 401):
                    challenge = parse_challenge(resp.headers.get("WWW-Authenticate", ""))
                    log.debug("registry %s speaks %s, auth %s", host, scheme,
                              challenge.scheme if challenge else "none")
                    return Endpoint(base, challenge)
                if resp.status_code == 400 and scheme == "http":
                    # Go's TLS server answers plain HTTP with 400 "Client sent an
                    # HTTP request to an HTTPS server".
                    raise RegistryError(
                        f"{host} speaks HTTPS but its certificate could not be used; "
                        "see the error above, or pass --registry-certificate "
                        f"{host}=ca.pem or --skip-tls-verify-registry {host}",
                        registry=host, status=400)
                if not last and resp.status_code < 500:
                    continue
                raise RegistryError(
                    f"{host} does not look like a container registry: GET /v2/ answered "
                    f"HTTP {resp.status_code}", registry=host, status=resp.status_code)
        raise AssertionError("unreachable")

    # -- sending ---------------------------------------------------------
    def send(
        self,
        method: str,
        url: str,
        *,
        host: str,
        headers: Mapping[str, str] | None = None,
        body: Body = None,
        stream: bool = False,
        retry: bool = True,
        retries: int | None = None,
        allow_redirects: bool = True,
        action: str = "pull",
    ) -> requests.Response:
        """One request, retried when ``retry`` and the failure is temporary.

        ``body`` is bytes or a callable returning a fresh body for each attempt.
        ``retries`` overrides the options' count (pulls have their own).
        ``action`` ("pull" or "push") chooses the TLS settings.
        A final 429/5xx response is returned, not raised: the caller names what failed.
        """
        count = self.options.retries if retries is None else retries
        attempts = 1 + (count if retry else 0)
        for attempt in range(attempts):
            data = body() if callable(body) else body
            try:
                resp = self.session.request(
                    method, url, headers=dict(headers or {}), data=data, stream=stream,
                    verify=self.verify_for(host, action), cert=self.client_cert_for(host),
                    allow_redirects=allow_redirects,
                    timeout=(self.options.connect_timeout, self.options.read_timeout),
                )
            except (requests.RequestException, urllib3.exceptions.HTTPError, OSError) as exc:
                error = connection_error(host, exc)
                if attempt + 1 >= attempts or error.tls_untrusted or error.tls_client_cert:
                    raise error from None
                delay = self.backoff_delay(attempt)
                log.info("%s %s failed (%s); retrying in %.1fs (%d/%d)", method,
                         redact_url(url), error, delay, attempt + 1, attempts - 1)
                self.sleep(delay)
                continue
            if resp.status_code in _RETRY_STATUS and attempt + 1 < attempts:
                delay = self.backoff_delay(attempt, resp.headers.get("Retry-After"))
                log.info("%s %s answered HTTP %d; retrying in %.1fs (%d/%d)", method,
                         redact_url(url), resp.status_code, delay, attempt + 1, attempts - 1)
                resp.close()
                self.sleep(delay)
                continue
            log.debug("%s %s -> %d", method, redact_url(url), resp.status_code)
            return resp
        raise AssertionError("unreachable")

    def backoff_delay(self, attempt: int, retry_after: str | None = None) -> float:
        """Exponential backoff with jitter; a server's ``Retry-After`` wins (capped)."""
        opts = self.options
        delay = min(opts.max_backoff, opts.backoff * (2 ** attempt))
        delay *= 0.75 + random.random() / 2
        wanted = parse_retry_after(retry_after)
        if wanted is not None:
            delay = min(opts.max_backoff, max(delay, wanted))
        return delay


def parse_retry_after(value: str | None) -> float | None:
    """RFC 9110 section 10.2.3: delay-seconds or an HTTP-date."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


class TransferStalled(Exception):
    """A response body arrived slower than the low-speed limit."""


class TransferCancelled(Exception):
    """The build stopped (a signal, another download failed) while a body streamed."""


def watched_chunks(resp: requests.Response, *, chunk: int, limit: int, window: float,
                   cancel: threading.Event | None = None,
                   clock: Callable[[], float] = time.monotonic) -> Iterator[bytes]:
    """The raw body of ``resp`` as it arrives, stopped when it stalls or is cancelled.

    Each read returns what the socket has (``read1``), so a trickle is seen at
    once rather than after a whole chunk. Fewer than ``limit`` bytes in any
    ``window`` seconds raises TransferStalled (the socket's read timeout only
    catches a body that stops entirely); a set ``cancel`` raises
    TransferCancelled between reads, so a worker thread ends with the build.
    """
    start = clock()
    received = 0
    while True:
        if cancel is not None and cancel.is_set():
            raise TransferCancelled("the download was cancelled")
        data = resp.raw.read1(chunk, decode_content=False)
        if not data:
            return
        received += len(data)
        now = clock()
        if now - start >= window:
            if received < limit:
                raise TransferStalled(
                    f"{received} bytes arrived in the last {now - start:.0f}s, under the "
                    f"low-speed limit of {limit} bytes per {window:.0f}s")
            start, received = now, 0
        yield data


def connection_error(host: str, exc: BaseException) -> ConnectionFailed:
    """A RegistryError naming ``host`` and, in words, why the connection failed."""
    stall = low_speed_stall(exc)
    if stall is not None:
        return ConnectionFailed(f"{host} stalled: {stall}; check the network or the registry",
                                registry=host)
    text = str(exc)
    if isinstance(exc, requests.exceptions.SSLError) or "SSL" in type(exc).__name__:
        if "CERTIFICATE_VERIFY_FAILED" in text or "certificate verify failed" in text:
            error = ConnectionFailed(
                f"cannot reach {host}: its TLS certificate is not trusted "
                f"({_short_ssl_reason(text)}); pass --registry-certificate {host}=ca.pem "
                f"with the CA that signed it, or --skip-tls-verify-registry {host}",
                registry=host)
            error.tls_untrusted = True
            return error
        lowered = text.lower()
        if "certificate required" in lowered or "alert bad certificate" in lowered \
                or "alert unknown ca" in lowered:
            # The server ended the handshake over our (missing) client certificate:
            # TLS 1.3's certificate_required alert, or TLS 1.2's bad_certificate.
            error = ConnectionFailed(
                f"cannot reach {host}: it asks for a client certificate (mutual TLS) and "
                f"ended the handshake ({_ssl_alert(text)}); pass --registry-client-cert "
                f"{host}=CERT.pem,KEY.pem with a certificate it accepts",
                registry=host)
            error.tls_client_cert = True
            return error
        return ConnectionFailed(f"cannot reach {host}: TLS handshake failed "
                                f"({_short_ssl_reason(text)})", registry=host)
    if isinstance(exc, requests.Timeout):
        return ConnectionFailed(f"cannot reach {host}: timed out", registry=host)
    lowered = text.lower()
    if "name or service not known" in lowered or "nameresolution" in lowered.replace(" ", "") \
            or "temporary failure in name resolution" in lowered:
        why = "its name does not resolve (DNS)"
    elif "connection refused" in lowered:
        why = "connection refused"
    elif "connection reset" in lowered or "remotedisconnected" in lowered.replace(" ", "") \
            or "connection aborted" in lowered or "incompleteread" in lowered.replace(" ", "") \
            or "connection broken" in lowered:
        why = "the connection was dropped"
    else:
        why = type(exc).__name__
    return ConnectionFailed(f"cannot reach {host}: {why}", registry=host)


def _ssl_alert(text: str) -> str:
    """``tlsv13 alert certificate required`` out of OpenSSL's ``[SSL: CODE] words (_ssl.c:N)``."""
    found = re.search(r"\[SSL: [A-Z0-9_]+\] ([^()\]'\"]+)", text)
    return found.group(1).strip() if found else "TLS alert"


def _short_ssl_reason(text: str) -> str:
    marker = "certificate verify failed:"
    if marker in text:
        return "certificate verify failed: " + text.split(marker, 1)[1].split(")")[0].strip()
    return text.split("(", 1)[-1].split(")")[0][:160]


__all__ = ["Endpoint", "Transport", "connection_error", "is_loopback", "parse_retry_after",
           "redact_url", "registry_session"]
