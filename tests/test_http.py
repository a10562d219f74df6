"""kanipy.http: what a URL looks like in messages, the session, and verified downloads.

Downloads are served by a threading HTTP server on 127.0.0.1 with a free port.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from urllib3.util.retry import Retry

from kanipy.errors import BuildError, ContextError
from kanipy.http import (
    USER_AGENT,
    download_to_file,
    make_session,
    redact_url,
    redact_urls_in,
)
from kanipy.oci.digest import Digest

BODY = b"downloaded\n"


@pytest.mark.parametrize(("url", "shown"), [
    ("https://user:hunter2@example.com/r.git", "https://<hidden>@example.com/r.git"),
    ("https://ghp_token123@github.com/o/r.git#main:sub",
     "https://<hidden>@github.com/o/r.git#main:sub"),
    ("http://a:b@[::1]:8080/x", "http://<hidden>@[::1]:8080/x"),
    ("https://r/v2/a/blobs/uploads/u?_state=abc&digest=sha256:1",
     "https://r/v2/a/blobs/uploads/u?_state=<hidden>&digest=sha256:1"),
    ("https://s3.example/b?X-Amz-Credential=AK%2F1&X-Amz-Signature=f00&partNumber=2",
     "https://s3.example/b?X-Amz-Credential=<hidden>&X-Amz-Signature=<hidden>&partNumber=2"),
    ("https://blob.example/c?sv=2020&sig=abc%3D", "https://blob.example/c?sv=2020&sig=<hidden>"),
    ("https://h/f?access_token=t&api_key=k&id=3", "https://h/f?access_token=<hidden>&"
     "api_key=<hidden>&id=3"),
    ("https://h/download?id=3&name=a+b", "https://h/download?id=3&name=a+b"),
    ("https://example.com/ctx.tar.gz", "https://example.com/ctx.tar.gz"),
    ("git@github.com:org/repo.git", "git@github.com:org/repo.git"),
    ("/srv/context", "/srv/context"),
    ("https://user:p@ss@host/x", "https://<hidden>@host/x"),
], ids=["user-password", "token-user", "ipv6", "registry-upload-state", "s3-presigned",
        "azure-sas", "token-params", "plain-query-kept", "no-secrets", "scp-like-git",
        "path", "at-in-password"])
def test_redact_url(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def test_redact_urls_in_text() -> None:
    text = ("fatal: unable to access 'https://bob:hunter2@git.example/r.git/': The "
            "requested URL returned error: 403; see http://h/x?token=abc")
    shown = redact_urls_in(text)
    assert "hunter2" not in shown and "abc" not in shown
    assert "'https://<hidden>@git.example/r.git/'" in shown
    assert shown.endswith("see http://h/x?token=<hidden>")


def test_session_retries_only_idempotent_requests() -> None:
    session = make_session(retries=2)
    assert session.headers["User-Agent"] == USER_AGENT
    retry = session.get_adapter("https://example.com").max_retries
    assert isinstance(retry, Retry) and retry.total == 2
    assert retry.allowed_methods == frozenset({"GET", "HEAD"})
    assert 503 in (retry.status_forcelist or ())
    registry_like = make_session(retries=0, trust_env=False)
    assert registry_like.get_adapter("https://example.com").max_retries.total == 0
    assert registry_like.trust_env is False


class _Handler(BaseHTTPRequestHandler):
    """/file: BODY; /flaky: 503 on the first GET of each server, then BODY; else 404."""

    flaky_seen: set[int] = set()

    def do_GET(self) -> None:  # noqa: N802 - the http.server API
        server_id = id(self.server)
        if self.path == "/flaky" and server_id not in self.flaky_seen:
            self.flaky_seen.add(server_id)
            self.send_response(503)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if self.path not in ("/file", "/flaky"):
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(BODY)))
        self.send_header("Last-Modified", "Fri, 14 Jul 2017 02:40:00 GMT")
        self.end_headers()
        self.wfile.write(BODY)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


@pytest.fixture()
def server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_download_checks_the_digest(server: str, tmp_path: Path) -> None:
    digest = Digest("sha256", hashlib.sha256(BODY).hexdigest())
    got = download_to_file(f"http://{server}/file", tmp_path, what="ADD x", expected=digest)
    assert got.path.read_bytes() == BODY and got.digest == digest and got.size == len(BODY)
    assert got.last_modified == "Fri, 14 Jul 2017 02:40:00 GMT"

    with pytest.raises(BuildError, match="ADD x: checksum mismatch: expected sha256:0000"):
        download_to_file(f"http://{server}/file", tmp_path, what="ADD x",
                         expected=Digest("sha256", "0" * 64))
    assert sorted(tmp_path.iterdir()) == [got.path]  # the bad download was removed


def test_download_retries_a_temporary_failure(server: str, tmp_path: Path) -> None:
    got = download_to_file(f"http://{server}/flaky", tmp_path, what="ADD x")
    assert got.path.read_bytes() == BODY


@pytest.mark.parametrize("path", ["/missing?token=s3cr3t", "/file"], ids=["404", "refused"])
def test_download_errors_never_show_credentials(server: str, tmp_path: Path,
                                                path: str) -> None:
    host = server if path != "/file" else "127.0.0.1:1"  # nothing listens on port 1
    url = f"http://bob:hunter2@{host}{path}"
    with pytest.raises(ContextError) as caught:
        download_to_file(url, tmp_path, what=f"--context {redact_url(url)}",
                         error=ContextError, session=make_session(retries=0))
    message = caught.value.message
    assert "hunter2" not in message and "s3cr3t" not in message
    assert message.startswith("--context http://<hidden>@")
    assert "404" in message or "connection refused" in message
    assert list(tmp_path.iterdir()) == []
