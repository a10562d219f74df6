"""HTTP for every caller: one Session factory, one URL redactor, one verified download.

``make_session`` is the only place a ``requests.Session`` is made: the
registry client, remote contexts and ``ADD <url>`` all get kanipy's
User-Agent, connection pools and, when asked, urllib3 retries for idempotent
requests only (GET, HEAD: connection errors, 429 and 5xx, honouring
``Retry-After``). The registry asks for none: its own loop retries, and
uploads restart from their file.

``redact_url`` is what every message and log line shows of a URL: user-info
(``user:password@``, ``token@``) is shown as ``<hidden>``, and so is the value
of each query parameter whose name suggests a secret (registry upload
``_state``, S3/GCS/Azure signatures, ``access_token``). ``redact_urls_in``
does the same to every URL inside a text (a git error, an exception).

Every connection of a session made with ``low_speed`` is watched on its
socket (``LowSpeed``, as curl's ``--speed-limit``/``--speed-time``): once bytes
have started to flow in either direction, fewer than ``limit`` of them in
``window`` seconds spent waiting on the socket raise ``LowSpeedStall``. A server
that trickles a status line, headers or a body, or reads an upload a byte at
a time, never trips the socket's own timeout, which restarts with each byte; a
server that says nothing at all is left to that timeout (a registry may think
for a while before it answers the last PUT of a large upload). Time the
caller spends between reads does not count: a slow consumer is not a stall.

``download_to_file`` streams a GET into a file, hashing as it writes (memory
does not grow with the body), and checks the digest when one is expected.
"""

from __future__ import annotations

import io
import logging
import os
import re
import socket
import ssl
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote_plus

import requests
from requests.adapters import HTTPAdapter
from requests.utils import DEFAULT_CA_BUNDLE_PATH
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.util.retry import Retry
from urllib3.util.ssl_ import create_urllib3_context

from kanipy import __version__
from kanipy.errors import BuildError, KanipyError
from kanipy.fieldwise import Fieldwise
from kanipy.oci.digest import Digest, HashingWriter

if TYPE_CHECKING:
    from requests.adapters import _HostParams, _PoolKwargs

log = logging.getLogger(__name__)

USER_AGENT = f"kanipy/{__version__}"
HIDDEN = "<hidden>"
# (connect, read) seconds for downloads; the registry has its own (RegistryOptions).
DOWNLOAD_TIMEOUT = (15.0, 60.0)
DOWNLOAD_RETRIES = 3
_CHUNK = 1 << 20
_RETRY_STATUS = frozenset({429, 500, 502, 503, 504})
# Query parameter names (lower-cased) whose values are secrets or grant access:
# tokens, signatures (X-Amz-Signature, X-Goog-Signature, Azure's sig), keys,
# credentials, the registry's upload _state, OAuth codes.
_SECRET_PARAM = re.compile(
    r"token|sig|secret|pass|pwd|key|auth|cred|session|state|code|policy|access|"
    r"^x-amz-|^x-goog-")
_URL_PARTS = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://)([^/?#]*)(.*)\Z", re.DOTALL)
_URL_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>`]+")


@dataclass(frozen=True, repr=False, eq=False)
class LowSpeed(Fieldwise):
    """A connection has stalled when fewer than ``limit`` bytes move in ``window`` seconds."""

    limit: int = 1024
    window: float = 60.0


class LowSpeedStall(TimeoutError):
    """A connection moved fewer bytes than its low-speed limit allows (``LowSpeed``).

    A TimeoutError, so urllib3 and requests treat it as a read timeout; find it
    behind their exceptions with ``low_speed_stall``.
    """


def low_speed_stall(exc: BaseException) -> LowSpeedStall | None:
    """The LowSpeedStall behind ``exc`` (itself, a cause, a context or an argument)."""
    seen: set[int] = set()
    pending: list[BaseException] = [exc]
    while pending:
        current = pending.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, LowSpeedStall):
            return current
        pending += [e for e in (current.__cause__, current.__context__,
                                getattr(current, "reason", None), *current.args)
                    if isinstance(e, BaseException)]
    return None


class _WatchedSocket:
    """A connected socket whose reads and writes are held to a ``LowSpeed`` rule.

    The window starts with the first byte that moves in a direction (sending a
    request, receiving its answer): silence before it (a server thinking) is
    left to the socket's own timeout. Only time spent inside socket calls counts.
    """

    def __init__(self, sock: socket.socket, rule: LowSpeed) -> None:
        self._sock = sock
        self._rule = rule
        self._direction = ""
        self._flowing = False
        self._waited = 0.0
        self._moved = 0

    def __getattr__(self, name: str) -> object:
        return getattr(self._sock, name)

    def _watched(self, direction: str, call: Callable[[], int]) -> int:
        rule = self._rule
        if direction != self._direction:
            self._direction, self._flowing = direction, False
            self._waited, self._moved = 0.0, 0
        flowing = self._flowing
        timeout = self._sock.gettimeout()
        if flowing:
            left = max(0.001, rule.window - self._waited)
            self._sock.settimeout(left if timeout is None else min(timeout, left))
        started = time.monotonic()
        try:
            count = call()
        except TimeoutError:
            if flowing:
                self._waited += time.monotonic() - started
                if self._waited >= rule.window:
                    raise self._stall() from None
            raise
        finally:
            if flowing:
                self._sock.settimeout(timeout)
        if flowing:
            self._waited += time.monotonic() - started
        elif count:
            self._flowing = True
        self._moved += count
        if self._moved >= rule.limit:
            self._waited, self._moved = 0.0, 0
        elif self._waited >= rule.window:
            raise self._stall()
        return count

    def _stall(self) -> LowSpeedStall:
        moved, waited = self._moved, self._waited
        self._waited, self._moved = 0.0, 0
        return LowSpeedStall(
            f"{moved} bytes moved in {waited:.0f}s, under the low-speed limit of "
            f"{self._rule.limit} bytes per {self._rule.window:g}s")

    # Arguments are passed on as given: an SSLSocket reads "nbytes=None" and "0"
    # differently from a plain socket.
    def recv_into(self, buffer: memoryview | bytearray, *args: int) -> int:
        return self._watched("in", lambda: self._sock.recv_into(buffer, *args))

    def recv(self, bufsize: int, *args: int) -> bytes:
        data: list[bytes] = []

        def call() -> int:
            data.append(self._sock.recv(bufsize, *args))
            return len(data[0])
        self._watched("in", call)
        return data[0]

    def send(self, data: bytes, *args: int) -> int:
        return self._watched("out", lambda: self._sock.send(data, *args))

    def sendall(self, data: bytes, *args: int) -> None:
        view = memoryview(data).cast("B")
        while view:
            view = view[self.send(view, *args):]  # type: ignore[arg-type]

    def makefile(self, mode: str = "r", buffering: int | None = None, **_: object
                 ) -> io.BufferedIOBase:
        # What http.client reads a response through: reads come back to recv_into.
        if mode != "rb":
            raise ValueError(f"unsupported makefile mode {mode!r}")
        raw = socket.SocketIO(self, "rb")  # type: ignore[arg-type]
        self._sock._io_refs += 1  # type: ignore[attr-defined]
        return io.BufferedReader(raw, buffering or io.DEFAULT_BUFFER_SIZE)


def _watched_pools(rule: LowSpeed) -> dict[str, type[HTTPConnectionPool]]:
    class WatchedHTTPConnection(HTTPConnection):
        def connect(self) -> None:
            super().connect()
            self.sock = _WatchedSocket(self.sock, rule)  # type: ignore[assignment]

    class WatchedHTTPSConnection(HTTPSConnection):
        def connect(self) -> None:
            super().connect()
            self.sock = _WatchedSocket(self.sock, rule)  # type: ignore[assignment]

    class WatchedHTTPPool(HTTPConnectionPool):
        ConnectionCls = WatchedHTTPConnection

    class WatchedHTTPSPool(HTTPSConnectionPool):
        ConnectionCls = WatchedHTTPSConnection

    return {"http": WatchedHTTPPool, "https": WatchedHTTPSPool}


class _Adapter(HTTPAdapter):
    """An HTTPAdapter whose HTTPS connections share one TLS context per trust setting.

    Left to themselves, requests and urllib3 make a new SSL context for each new
    connection and load the CA bundle into it: certifi's bundle costs ~15 ms of CPU
    each time, paid again by every connection a pull's or a push's threads open.
    Here the context for a ``verify`` value (True: requests' default bundle; a path:
    that file or directory) is made once per process and handed to urllib3 as the
    pool's ``ssl_context``; the pool then loads nothing per connection. requests'
    own checks (a bundle that does not exist) still run first, with their messages.
    A client certificate (``cert``), or a context that cannot be made, goes the
    ordinary per-connection way, so its errors read as they always have; so does the
    CA setting of a pool behind an HTTPS proxy, which urllib3 also uses for the proxy.
    """

    def build_connection_pool_key_attributes(
            self, request: requests.PreparedRequest, verify: bool | str,
            cert: str | tuple[str, str] | None = None,
    ) -> tuple[_HostParams, _PoolKwargs]:
        host_params, pool_kwargs = super().build_connection_pool_key_attributes(
            request, verify, cert)
        if host_params.get("scheme") == "https" and verify is not False and not cert:
            context = _shared_tls_context(verify)
            if context is not None:
                pool_kwargs["ssl_context"] = context
        return host_params, pool_kwargs

    def cert_verify(self, conn: Any, url: str, verify: bool | str,
                    cert: str | tuple[str, str] | None) -> None:
        super().cert_verify(conn, url, verify, cert)
        # Through an HTTPS proxy the pool's CA settings also verify the proxy: kept
        # (the shared context is then loaded per connection, as without it).
        proxy = getattr(conn, "proxy", None)
        if url.lower().startswith("https") and verify is not False and not cert and \
                conn.conn_kw.get("ssl_context") is not None and \
                (proxy is None or proxy.scheme != "https"):
            conn.ca_certs = conn.ca_cert_dir = None  # in the shared context already


_tls_contexts: dict[tuple[str, int, int, int], ssl.SSLContext | None] = {}
_tls_lock = threading.Lock()


def _shared_tls_context(verify: bool | str) -> ssl.SSLContext | None:
    """The process's TLS context trusting ``verify``'s CAs; None if it cannot be made.

    Keyed by the bundle's path and its inode, size and mtime: a library caller
    that rewrites a CA file between builds gets a context with the new one."""
    where = DEFAULT_CA_BUNDLE_PATH if verify is True else str(verify)
    try:
        st = os.stat(where)
    except OSError:
        return None  # requests' own check says what is missing
    key = (where, st.st_ino, st.st_size, st.st_mtime_ns)
    with _tls_lock:
        if key in _tls_contexts:
            return _tls_contexts[key]
        made = create_urllib3_context(cert_reqs=ssl.CERT_REQUIRED)
        context: ssl.SSLContext | None = made
        try:
            if os.path.isdir(where):
                made.load_verify_locations(capath=where)
            else:
                made.load_verify_locations(cafile=where)
        except (OSError, ssl.SSLError):
            context = None  # the per-connection way raises it, as before
        _tls_contexts[key] = context
        return context


class _WatchedAdapter(_Adapter):
    """An HTTPAdapter whose connections are held to a low-speed rule."""

    def __init__(self, rule: LowSpeed, **kwargs: object) -> None:
        self._rule = rule
        super().__init__(**kwargs)  # type: ignore[arg-type]

    def init_poolmanager(self, *args: object, **kwargs: object) -> None:
        super().init_poolmanager(*args, **kwargs)  # type: ignore[arg-type]
        # getattr: an unpickled adapter has no _rule (requests pickles __attrs__ only).
        rule = getattr(self, "_rule", LowSpeed())
        self.poolmanager.pool_classes_by_scheme = _watched_pools(rule)


def make_session(
    *,
    user_agent: str = USER_AGENT,
    retries: int = 0,
    backoff: float = 0.5,
    pool_maxsize: int = 8,
    verify: bool | str = True,
    trust_env: bool = True,
    low_speed: LowSpeed | None = None,
) -> requests.Session:
    """A Session with kanipy's User-Agent and pools; ``retries`` > 0 retries GET and
    HEAD only. ``verify`` is False or a CA bundle for TLS (per-request ``verify``
    wins); ``trust_env=False`` ignores proxies, CA bundles and ``.netrc`` from the
    environment (the registry client's credentials come only from config.json).
    ``low_speed`` holds every connection to that rule (``LowSpeedStall``)."""
    session = requests.Session()
    session.headers["User-Agent"] = user_agent
    session.verify = verify
    session.trust_env = trust_env
    max_retries: Retry | int = 0
    if retries > 0:
        max_retries = Retry(
            total=retries, backoff_factor=backoff, status_forcelist=_RETRY_STATUS,
            allowed_methods=frozenset({"GET", "HEAD"}), respect_retry_after_header=True,
            raise_on_status=False)
    adapter = _Adapter(pool_connections=8, pool_maxsize=max(8, pool_maxsize),
                          max_retries=max_retries) if low_speed is None else \
        _WatchedAdapter(low_speed, pool_connections=8, pool_maxsize=max(8, pool_maxsize),
                        max_retries=max_retries)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    return session


def redact_url(url: str) -> str:
    """``url`` with its user-info and secret query values shown as ``<hidden>``.

    Everything else is kept byte for byte; anything that is not a
    ``scheme://`` URL (a path, ``git@host:repo``) is returned as it is.
    """
    match = _URL_PARTS.match(url)
    if match is None:
        return url
    scheme, authority, rest = match.groups()
    if "@" in authority:
        authority = f"{HIDDEN}@{authority.rpartition('@')[2]}"
    before_fragment, hash_mark, fragment = rest.partition("#")
    path, question_mark, query = before_fragment.partition("?")
    if query:
        query = "&".join(_redact_param(param) for param in query.split("&"))
    return f"{scheme}{authority}{path}{question_mark}{query}{hash_mark}{fragment}"


def _redact_param(param: str) -> str:
    name, equals, _ = param.partition("=")
    if equals and _SECRET_PARAM.search(unquote_plus(name).lower()):
        return f"{name}={HIDDEN}"
    return param


def redact_urls_in(text: str) -> str:
    """``text`` with every ``scheme://`` URL in it passed through ``redact_url``."""
    return _URL_IN_TEXT.sub(lambda m: redact_url(m.group(0)), text)


@dataclass(frozen=True, repr=False, eq=False)
class Download(Fieldwise):
    """A body saved to ``path`` (the caller removes it), its digest and size, and the
    response's ``Last-Modified`` header, if any."""

    path: Path
    digest: Digest
    size: int
    last_modified: str | None


def download_to_file(
    url: str,
    directory: Path,
    *,
    what: str,
    error: type[KanipyError] = BuildError,
    expected: Digest | None = None,
    session: requests.Session | None = None,
    timeout: tuple[float, float] = DOWNLOAD_TIMEOUT,
) -> Download:
    """GET ``url`` into a new file in ``directory``, streamed and hashed as it comes.

    Redirects are followed. Anything but 200, a broken connection, or a digest
    other than ``expected`` raises ``error`` with a message starting with
    ``what``; the partial file is removed.
    """
    own_session = session is None
    if session is None:
        session = make_session(retries=DOWNLOAD_RETRIES, low_speed=LowSpeed())
    log.debug("downloading %s", redact_url(url))
    fd, name = tempfile.mkstemp(prefix="download-", dir=directory)
    target = Path(name)
    try:
        with os.fdopen(fd, "wb") as out:
            try:
                response = session.get(url, stream=True, timeout=timeout)
            except requests.RequestException as exc:
                raise error(f"{what}: cannot download it: {_reason(exc)}") from None
            with response:
                if response.status_code != 200:
                    raise error(f"{what}: the server answered {response.status_code} "
                                f"{response.reason}")
                hasher = HashingWriter(
                    out, expected.algorithm if expected else "sha256")  # type: ignore[arg-type]
                try:
                    for chunk in response.iter_content(_CHUNK):
                        hasher.write(chunk)
                except requests.RequestException as exc:
                    raise error(f"{what}: the download broke off: {_reason(exc)}") from None
                last_modified = response.headers.get("Last-Modified")
        if expected is not None and hasher.digest != expected:
            raise error(f"{what}: checksum mismatch: expected {expected}, got "
                        f"{hasher.digest}; the download was discarded and nothing was written")
    except BaseException:
        target.unlink(missing_ok=True)
        raise
    finally:
        if own_session:
            session.close()
    return Download(target, hasher.digest, hasher.size, last_modified)


def _reason(exc: BaseException) -> str:
    """Why a request failed, in words, without credentials or tokens."""
    text = str(exc)
    lowered = text.lower()
    stall = low_speed_stall(exc)
    if stall is not None:
        return f"the server stalled ({stall})"
    if isinstance(exc, requests.Timeout):
        return "timed out"
    if "name or service not known" in lowered or "failed to resolve" in lowered \
            or "temporary failure in name resolution" in lowered:
        return "the host name does not resolve (DNS)"
    if "connection refused" in lowered:
        return "connection refused"
    if isinstance(exc, requests.exceptions.SSLError):
        return f"TLS failed ({redact_urls_in(text)[:300]})"
    return f"{type(exc).__name__}: {redact_urls_in(text)[:300]}"
