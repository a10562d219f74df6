"""Test servers for the registry client: a fault-injecting proxy and a token server.

``FaultProxy`` forwards to a real registry and, on request, answers 503 or 429
(with ``Retry-After``) or any status with a registry error body of our choosing,
drops the connection halfway through a response body, flips a byte of one,
trickles one out a byte at a time (``trickle``), trickles the status line and
headers (``trickle-headers``), or reads a request body a byte at a time
(``trickle-read``);
it records every request it sees. ``TokenServer``
issues Docker registry tokens (JWTs, RS256) signed with ``openssl dgst`` by a
key whose self-signed certificate the registry trusts (``rootcertbundle``),
and counts the token requests. Both listen on 127.0.0.1 and run in threads.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import requests

from tests.fixtures.registry import HOST, Registry, free_port

_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade",
               "proxy-authorization", "proxy-authenticate", "content-length"}


@dataclass
class Fault:
    """Applies to the next ``times`` requests whose method and path match."""

    method: str
    path_contains: str
    # "503", "429", "drop", "corrupt", "trickle", "trickle-headers", "trickle-read",
    # "error" (status, code, message)
    kind: str
    times: int = 1
    retry_after: int = 1
    status: int = 0
    code: str = ""
    message: str = ""


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


class FaultProxy:
    """A plain-HTTP proxy in front of ``upstream`` that injects faults on demand."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.faults: list[Fault] = []
        self.requests: list[tuple[str, str]] = []
        self.injected: list[tuple[str, str, str]] = []
        self._lock = threading.Lock()
        self.port = free_port()
        self._server = _Server((HOST, self.port), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._session = requests.Session()

    @property
    def host(self) -> str:
        return f"{HOST}:{self.port}"

    def start(self) -> FaultProxy:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def inject(self, method: str, path_contains: str, kind: str, times: int = 1,
               retry_after: int = 1) -> None:
        with self._lock:
            self.faults.append(Fault(method, path_contains, kind, times, retry_after))

    def inject_error(self, method: str, path_contains: str, status: int, code: str,
                     message: str, times: int = 1) -> None:
        """Answer matching requests with ``status`` and a distribution spec error body.

        A HEAD gets the status alone: ``inject_error("HEAD", digest, 200, "", "")``
        says a blob is there whether or not it is.
        """
        with self._lock:
            self.faults.append(Fault(method, path_contains, "error", times, status=status,
                                     code=code, message=message))

    def count(self, method: str, path_contains: str) -> int:
        with self._lock:
            return sum(1 for m, p in self.requests if m == method and path_contains in p)

    def _take_fault(self, method: str, path: str) -> Fault | None:
        with self._lock:
            self.requests.append((method, path))
            for fault in self.faults:
                if fault.times > 0 and fault.method == method and fault.path_contains in path:
                    fault.times -= 1
                    self.injected.append((method, path, fault.kind))
                    return fault
        return None

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                pass

            def _trickle(self, data: bytes, pause: float) -> None:
                for byte in data:
                    try:
                        self.wfile.write(bytes([byte]))
                        self.wfile.flush()
                    except OSError:
                        break
                    time.sleep(pause)
                self.close_connection = True

            def _forward(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                fault = proxy._take_fault(self.command, self.path)
                if fault is not None and fault.kind == "trickle-read":
                    # A server (or a network) that takes an upload a byte at a time
                    # (whatever its framing: Content-Length or chunked).
                    while True:
                        try:
                            if not self.rfile.read(1):
                                break
                        except OSError:
                            break
                        time.sleep(fault.retry_after / 10)
                    self.close_connection = True
                    return
                body = self.rfile.read(length) if length else None
                if fault is not None and fault.kind in ("503", "429", "error"):
                    code = {"429": "TOOMANYREQUESTS", "503": "UNAVAILABLE"}.get(fault.kind,
                                                                               fault.code)
                    payload = json.dumps({"errors": [{"code": code, "message":
                                                      fault.message or "injected"}]}).encode()
                    if self.command == "HEAD":
                        # A HEAD answer has no body; with status 200 this is a lie
                        # ("the blob is there") that a test can tell.
                        payload = b""
                    self.send_response(fault.status or int(fault.kind))
                    if fault.kind == "429":
                        self.send_header("Retry-After", str(fault.retry_after))
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                    return
                headers = {k: v for k, v in self.headers.items()
                           if k.lower() not in _HOP_BY_HOP}
                resp = proxy._session.request(
                    self.command, proxy.upstream + self.path, headers=headers, data=body,
                    stream=True, allow_redirects=False)
                with resp:
                    data = resp.raw.read(decode_content=False) if self.command != "HEAD" \
                        else b""
                    if fault is not None and fault.kind == "drop" and len(data) <= 1:
                        # Nothing to cut in half: hang up without an answer.
                        self.close_connection = True
                        return
                    self.send_response(resp.status_code)
                    for key, value in resp.headers.items():
                        if key.lower() not in _HOP_BY_HOP:
                            self.send_header(key, value)
                    length_header = resp.headers.get("Content-Length")
                    if self.command == "HEAD" and length_header is not None:
                        self.send_header("Content-Length", length_header)
                    else:
                        self.send_header("Content-Length", str(len(data)))
                    if fault is not None and fault.kind == "trickle-headers":
                        head = b"".join(self._headers_buffer) + b"\r\n"  # type: ignore[attr-defined]
                        self._headers_buffer = []  # type: ignore[attr-defined]
                        self._trickle(head + data, fault.retry_after / 10)
                        return
                    self.end_headers()
                    if fault is not None and fault.kind == "drop" and len(data) > 1:
                        self.wfile.write(data[: len(data) // 2])
                        self.wfile.flush()
                        self.close_connection = True
                        return
                    if fault is not None and fault.kind == "trickle":
                        # One byte every retry_after/10 seconds: a registry (or a
                        # network) that stalls without ever going quiet.
                        self._trickle(data, fault.retry_after / 10)
                        return
                    if fault is not None and fault.kind == "corrupt" and data:
                        mid = len(data) // 2
                        data = data[:mid] + bytes([data[mid] ^ 0xFF]) + data[mid + 1:]
                    self.wfile.write(data)

            do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = _forward

        return Handler


# -- token auth ---------------------------------------------------------------

def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@dataclass
class TokenServer:
    """Issues registry tokens for ``username``/``password`` or the identity token."""

    directory: Path
    username: str
    password: str
    identity_token: str = field(default_factory=lambda: "idtok-" + uuid.uuid4().hex)
    service: str = "kanipy-test-registry"
    issuer: str = "kanipy-test-issuer"
    lifetime: int = 300
    port: int = field(default_factory=free_port)
    requests: list[dict[str, object]] = field(default_factory=list)
    issued: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.key = self.directory / "token-key.pem"
        self.cert = self.directory / "token-cert.pem"
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
             "-subj", "/CN=kanipy token issuer", "-keyout", str(self.key),
             "-out", str(self.cert)], check=True, capture_output=True)
        der = subprocess.run(["openssl", "x509", "-in", str(self.cert), "-outform", "DER"],
                             check=True, capture_output=True).stdout
        self._x5c = base64.b64encode(der).decode()
        self._lock = threading.Lock()
        self._server = _Server((HOST, self.port), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def realm(self) -> str:
        return f"http://{HOST}:{self.port}/token"

    def start(self) -> TokenServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def sign(self, scopes: list[str], subject: str) -> str:
        access = []
        for scope in scopes:
            kind, _, rest = scope.partition(":")
            name, _, actions = rest.rpartition(":")
            access.append({"type": kind, "name": name, "actions": actions.split(",")})
        now = int(time.time())
        header = {"typ": "JWT", "alg": "RS256", "x5c": [self._x5c]}
        claims = {"iss": self.issuer, "sub": subject, "aud": self.service, "exp":
                  now + self.lifetime, "nbf": now - 10, "iat": now, "jti": uuid.uuid4().hex,
                  "access": access}
        signing_input = (_b64url(json.dumps(header).encode()) + "." +
                         _b64url(json.dumps(claims).encode()))
        signature = subprocess.run(
            ["openssl", "dgst", "-sha256", "-sign", str(self.key)],
            input=signing_input.encode(), check=True, capture_output=True).stdout
        token = signing_input + "." + _b64url(signature)
        with self._lock:
            self.issued.append(token)
        return token

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                pass

            def _reply(self, status: int, data: dict[str, object]) -> None:
                payload = json.dumps(data).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def do_GET(self) -> None:
                query = parse_qs(urlsplit(self.path).query)
                scopes = query.get("scope", [])
                auth = self.headers.get("Authorization", "")
                with server._lock:
                    server.requests.append({"method": "GET", "scopes": scopes,
                                            "basic": bool(auth)})
                if not auth:
                    # Anonymous callers get a token with no access at all.
                    self._reply(200, {"token": server.sign([], ""), "expires_in":
                                      server.lifetime})
                    return
                user, _, password = base64.b64decode(auth.split(" ", 1)[1]).decode() \
                    .partition(":")
                if (user, password) != (server.username, server.password):
                    self._reply(401, {"details": "incorrect username or password"})
                    return
                self._reply(200, {"token": server.sign(scopes, user),
                                  "expires_in": server.lifetime})

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                form = parse_qs(self.rfile.read(length).decode())
                scopes = " ".join(form.get("scope", [])).split()
                with server._lock:
                    server.requests.append({"method": "POST", "scopes": scopes,
                                            "grant": form.get("grant_type", [""])[0]})
                if form.get("refresh_token", [""])[0] != server.identity_token:
                    self._reply(401, {"error": "invalid_grant"})
                    return
                self._reply(200, {"access_token": server.sign(scopes, server.username),
                                  "expires_in": server.lifetime})

        return Handler


@dataclass
class TokenRegistry(Registry):
    """A plain-HTTP registry whose auth is Bearer tokens from ``token_server``."""

    token_server: TokenServer | None = None

    def start(self) -> TokenRegistry:
        assert self.token_server is not None
        ts = self.token_server
        storage = self.directory / "storage"
        storage.mkdir(parents=True, exist_ok=True)
        config = self.directory / "config.yml"
        config.write_text("\n".join([
            "version: 0.1",
            "log:",
            "  level: error",
            "storage:",
            "  filesystem:",
            f"    rootdirectory: {storage}",
            "http:",
            f"  addr: {self.host}",
            f"  secret: kanipy-test-{self.port}",
            "auth:",
            "  token:",
            f"    realm: {ts.realm}",
            f"    service: {ts.service}",
            f"    issuer: {ts.issuer}",
            f"    rootcertbundle: {ts.cert}",
        ]) + "\n")
        log = open(self.directory / "registry.log", "wb")  # noqa: SIM115
        self.process = subprocess.Popen(
            ["docker-registry", "serve", str(config)], stdout=log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, env={**os.environ, "OTEL_TRACES_EXPORTER": "none"})
        log.close()
        self._wait_ready()
        return self
