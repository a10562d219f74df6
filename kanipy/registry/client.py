"""RegistryClient: the distribution API's HTTP calls to any registry, and errors a user can act on.

Every request names what it is for (pull or push, which repository, which
object), so a failure can say "push to reg/app denied: ..." with the credential
source that was tried. This module is the middle of three layers: below it
``transport`` (TLS, retries) and ``auth`` (challenges, tokens, credentials);
above it ``pull`` and ``push``, which speak in images (``kanipy.oci.image``)
and call only this client. The calls here are single API operations:
a manifest GET verified against its digest and parsed by ``kanipy.oci``, blob
GETs verified as they stream (into a BlobStore or to a reader), a blob HEAD,
an upload session opened.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Sequence
from typing import BinaryIO, cast
from urllib.parse import urljoin

import requests
import urllib3.exceptions

from kanipy.errors import AuthError, IntegrityError, NotFoundError, RegistryError
from kanipy.fs.diskspace import no_space_left
from kanipy.oci import mediatypes
from kanipy.oci.blobstore import BlobStore
from kanipy.oci.descriptor import Descriptor
from kanipy.oci.digest import Digest, VerifyingReader
from kanipy.oci.manifest import Index, Manifest, parse_manifest
from kanipy.reference import DOCKER_HUB, Reference
from kanipy.registry.auth import Authenticator, repository_scope
from kanipy.registry.challenge import parse_challenge
from kanipy.registry.credentials import CredentialStore
from kanipy.registry.options import RegistryOptions
from kanipy.registry.progress import ProgressCallback, emit
from kanipy.registry.transport import (
    Body,
    TransferCancelled,
    TransferStalled,
    Transport,
    connection_error,
    watched_chunks,
)

log = logging.getLogger(__name__)

# distribution spec: registries may refuse manifests over 4 MiB; so do we.
MAX_MANIFEST_BYTES = 4 << 20
_READ_CHUNK = 1 << 20
_STREAM_ERRORS = (requests.RequestException, urllib3.exceptions.HTTPError, ConnectionError)


class RegistryClient:
    """Talks the distribution API v2 to any number of registries."""

    def __init__(self, options: RegistryOptions | None = None,
                 session: requests.Session | None = None) -> None:
        self.options = (options or RegistryOptions()).normalized()
        self.transport = Transport(self.options, session)
        self.credentials = CredentialStore(self.options.docker_config_dir)
        self.auth = Authenticator(self.transport, self.credentials)

    # -- requests ------------------------------------------------------------
    def request(
        self,
        ref: Reference,
        method: str,
        path: str,
        *,
        action: str,
        scopes: Sequence[str] | None = None,
        headers: dict[str, str] | None = None,
        body: Body = None,
        stream: bool = False,
        retry: bool = True,
        url: str | None = None,
    ) -> requests.Response:
        """``METHOD /v2/<repository><path>`` (or ``url``) with auth; returns any response.

        ``action`` is "pull" or "push": it chooses the default token scope and the
        words of an error. A 401 is answered once with a fresh challenge.
        """
        host = ref.api_host
        endpoint = self.transport.endpoint(host, action)
        if scopes is None:
            scopes = [repository_scope(ref.repository,
                                       "pull,push" if action == "push" else "pull")]
        target = url or f"{endpoint.base_url}/v2/{ref.repository}{path}"
        challenge = endpoint.challenge
        for attempt in range(2):
            try:
                authorization = self.auth.authorization(ref.registry, host, challenge, scopes)
            except AuthError as exc:
                raise AuthError(f"{describe_action(action, ref)} denied: {exc.message}",
                                registry=ref.registry, status=exc.status,
                                code=exc.code) from None
            all_headers = dict(headers or {})
            if authorization:
                all_headers["Authorization"] = authorization
            resp = self.transport.send(method, target, host=host, headers=all_headers,
                                       body=body, stream=stream, retry=retry,
                                       retries=self.options.retries_for(action),
                                       action=action)
            if resp.status_code != 401 or attempt == 1:
                return resp
            new_challenge = parse_challenge(resp.headers.get("WWW-Authenticate", ""))
            if new_challenge is None or (
                new_challenge.scheme == "basic" and (
                    authorization is not None or self.auth.credential(ref.registry) is None)
            ):
                # Basic credentials were sent and refused, or there are none to send.
                return resp
            resp.close()
            # The token may have expired, or the challenge may ask for other scopes.
            self.auth.invalidate(host, scopes)
            challenge = new_challenge
        raise AssertionError("unreachable")

    def resolve_location(self, ref: Reference, location: str) -> str:
        # Locations come from upload sessions: pushes.
        base = self.transport.endpoint(ref.api_host, "push").base_url
        return urljoin(base + "/", location)

    # -- errors --------------------------------------------------------------
    def http_error(self, resp: requests.Response, ref: Reference, action: str,
                   what: str) -> RegistryError:
        """The error for an unexpected response: names action, target, credentials, codes."""
        status = resp.status_code
        codes, detail = registry_error_codes(resp)
        code = codes[0] if codes else None
        said = f" (registry said {code}: {detail})" if code else ""
        doing = describe_action(action, ref)
        if status in (401, 403):
            cred = self.auth.credential(ref.registry)
            if cred is None:
                login = "docker login" if ref.registry == DOCKER_HUB else \
                    f"docker login {ref.registry}"
                need = "authentication required" if status == 401 else "access forbidden"
                message = (f"{doing} denied: {need}; no credentials for {ref.registry} in "
                           f"{self.credentials.config_path} — run `{login}` or mount a "
                           "config.json")
            elif status == 401:
                message = f"{doing} denied: the credentials from {cred.source} were rejected"
            else:
                message = (f"{doing} denied: the credentials from {cred.source} do not grant "
                           f"{action} access")
            return AuthError(message + said, registry=ref.registry, status=status, code=code)
        if status == 404:
            if code == "NAME_UNKNOWN":
                message = f"{doing} failed: repository {ref.name} not found"
            else:
                message = f"{doing} failed: {what} not found"
            return NotFoundError(message + said, registry=ref.registry, status=status, code=code)
        return RegistryError(f"{doing} failed: {what}: HTTP {status}{said}",
                             registry=ref.registry, status=status, code=code)

    # -- manifests -----------------------------------------------------------
    def get_manifest(
        self, ref: Reference, accept: Sequence[str] = mediatypes.ACCEPT_MANIFESTS,
    ) -> Manifest | Index:
        """The manifest or index ``ref`` names, verified against the digest asked for or sent.

        The raw bytes are kept in the parsed value (``kanipy.oci.manifest``);
        its digest is over them.
        """
        what = (f"manifest {ref.digest}" if ref.digest is not None
                else f"tag {ref.tag!r} in {ref.name}")
        resp = self.request(ref, "GET", f"/manifests/{ref.identifier}", action="pull",
                            headers={"Accept": ", ".join(accept)}, stream=True)
        with resp:
            if resp.status_code != 200:
                raise self.http_error(resp, ref, "pull", what)
            raw = _read_capped(resp, MAX_MANIFEST_BYTES, ref)
            header = resp.headers.get("Docker-Content-Digest")
            content_type = resp.headers.get("Content-Type", "")
        expected = ref.digest
        if expected is None and header:
            try:
                expected = Digest.parse(header.strip())
            except ValueError:
                log.warning("%s sent an unparsable Docker-Content-Digest; ignored", ref.registry)
        algorithm = expected.algorithm if expected is not None else "sha256"
        actual = Digest.of_bytes(raw, algorithm)
        if expected is not None and actual != expected:
            raise IntegrityError(f"manifest of {ref}: digest mismatch, expected {expected}, "
                                 f"got {actual}")
        return parse_manifest(raw, content_type)

    # -- blobs ---------------------------------------------------------------
    def fetch_blob(
        self, ref: Reference, descriptor: Descriptor, store: BlobStore,
        on_progress: ProgressCallback | None = None, cancel: threading.Event | None = None,
    ) -> bool:
        """Stream a blob into ``store``, verified; False when it was already there.

        A dropped or stalled connection (under the options' low-speed limit)
        restarts the download (bounded by ``retries``); a digest or size
        mismatch raises IntegrityError and stores nothing. A set ``cancel``
        stops the download between reads.
        """
        digest = descriptor.digest
        if store.has(digest):
            emit(on_progress, digest, descriptor.size, descriptor.size, "exists")
            return False
        what = f"blob {digest} of {ref.name}"
        attempts = 1 + self.options.retries_for("pull")
        for attempt in range(attempts):
            resp = self.request(ref, "GET", f"/blobs/{digest}", action="pull", stream=True)
            if resp.status_code != 200:
                with resp:
                    raise self.http_error(resp, ref, "pull", f"blob {digest}")
            done = 0
            try:
                with resp, no_space_left(store.root, f"downloading {what}",
                                         needs=descriptor.size), \
                        store.writer(expected=digest, size=descriptor.size, what=what) as out:
                    # decode_content=False: a registry (or a proxy) that adds a
                    # Content-Encoding must not change the bytes we hash.
                    for chunk in watched_chunks(
                            resp, chunk=_READ_CHUNK, limit=self.options.low_speed_limit,
                            window=self.options.low_speed_time, cancel=cancel):
                        out.write(chunk)
                        done += len(chunk)
                        if done > descriptor.size:
                            raise IntegrityError(f"{what}: received more than the "
                                                 f"{descriptor.size} bytes declared")
                        emit(on_progress, digest, done, descriptor.size, "download")
            except TransferCancelled:
                raise RegistryError(f"pull from {ref.name}: {what}: cancelled",
                                    registry=ref.registry) from None
            except (*_STREAM_ERRORS, TransferStalled) as exc:
                error: RegistryError = connection_error(ref.api_host, exc)
                if isinstance(exc, TransferStalled):
                    error = RegistryError(f"{ref.registry} stalled: {exc}; check the "
                                          "network or the registry", registry=ref.registry)
                if attempt + 1 >= attempts:
                    raise RegistryError(f"pull from {ref.name} failed: {what}: {error}",
                                        registry=ref.registry) from None
                delay = self.transport.backoff_delay(attempt)
                log.info("download of %s interrupted (%s); restarting in %.1fs", digest, error,
                         delay)
                self.transport.sleep(delay)
                continue
            emit(on_progress, digest, done, descriptor.size, "done")
            return True
        raise AssertionError("unreachable")

    def open_blob(self, ref: Reference, descriptor: Descriptor) -> BinaryIO:
        """A stream of the blob straight from the registry, checked at EOF.

        Reading it to the end raises IntegrityError on a size or digest
        mismatch; nothing is stored. There is no restart: a dropped connection
        is a RegistryError for whoever reads.
        """
        digest = descriptor.digest
        resp = self.request(ref, "GET", f"/blobs/{digest}", action="pull", stream=True)
        if resp.status_code != 200:
            with resp:
                raise self.http_error(resp, ref, "pull", f"blob {digest}")
        what = f"blob {digest} of {ref.name}"
        body = cast(BinaryIO, _ResponseStream(resp, ref, what))
        return cast(BinaryIO, VerifyingReader(body, digest, descriptor.size, what))

    def blob_exists(self, ref: Reference, digest: Digest, scopes: list[str]) -> bool:
        """HEAD the blob in ``ref``'s repository (asked with push scopes, as a push asks)."""
        resp = self.request(ref, "HEAD", f"/blobs/{digest}", action="push", scopes=scopes)
        with resp:
            if resp.status_code == 200:
                return True
            if resp.status_code == 404:
                return False
            raise self.http_error(resp, ref, "push", f"blob {digest}")

    # -- uploads -------------------------------------------------------------
    def start_upload(self, ref: Reference, scopes: list[str], *, retry: bool = False
                     ) -> tuple[str, int]:
        """POST a new upload session; its Location and the registry's minimum chunk length."""
        resp = self.request(ref, "POST", "/blobs/uploads/", action="push", scopes=scopes,
                            retry=retry, headers={"Content-Length": "0"})
        with resp:
            if resp.status_code != 202 or not resp.headers.get("Location"):
                raise self.http_error(resp, ref, "push", "starting a blob upload")
            location = self.resolve_location(ref, resp.headers["Location"])
            try:
                min_chunk = int(resp.headers.get("OCI-Chunk-Min-Length", "0"))
            except ValueError:
                min_chunk = 0
        return location, min_chunk

    def check_push_permission(self, ref: Reference) -> None:
        """Fail early (AuthError) when ``ref`` cannot be pushed to: open an upload and cancel it.

        Kaniko checks this before building, so a denied destination costs seconds,
        not a whole build. Temporary failures are retried as --push-retry says: an
        upload session that is opened twice is cancelled, never used (issue 11).
        """
        scopes = [repository_scope(ref.repository, "pull,push")]
        location, _ = self.start_upload(ref, scopes, retry=True)
        resp = self.request(ref, "DELETE", "", url=location, action="push", scopes=scopes,
                            retry=False)
        resp.close()
        log.debug("push to %s permitted", ref.name)


def describe_action(action: str, ref: Reference) -> str:
    return f"{action} {'to' if action == 'push' else 'from'} {ref.name}"


def registry_error_codes(resp: requests.Response) -> tuple[list[str], str]:
    """The distribution spec error body: ``{"errors": [{"code", "message"}]}``."""
    try:
        body = resp.content[:65536]
        data = json.loads(body) if body else {}
    except (ValueError, requests.RequestException, urllib3.exceptions.HTTPError):
        return [], ""
    errors = data.get("errors") if isinstance(data, dict) else None
    if not isinstance(errors, list):
        return [], ""
    codes = [str(e.get("code")) for e in errors if isinstance(e, dict) and e.get("code")]
    messages = [str(e.get("message")) for e in errors if isinstance(e, dict) and e.get("message")]
    return codes, "; ".join(messages)


def _read_capped(resp: requests.Response, limit: int, ref: Reference) -> bytes:
    parts: list[bytes] = []
    total = 0
    try:
        for chunk in resp.raw.stream(65536, decode_content=True):
            total += len(chunk)
            if total > limit:
                raise RegistryError(f"manifest of {ref} is larger than {limit} bytes",
                                    registry=ref.registry)
            parts.append(chunk)
    except (urllib3.exceptions.HTTPError, requests.RequestException, ConnectionError) as exc:
        raise connection_error(ref.api_host, exc) from None
    return b"".join(parts)


class _ResponseStream:
    """The body of a streamed response as a file object, bytes exactly as sent."""

    def __init__(self, resp: requests.Response, ref: Reference, what: str) -> None:
        self._resp = resp
        self._ref = ref
        self._what = what

    def read(self, n: int = -1) -> bytes:
        try:
            # decode_content=False: a registry (or a proxy) that adds a
            # Content-Encoding must not change the bytes we hash.
            data: bytes = self._resp.raw.read(None if n < 0 else n, decode_content=False)
        except _STREAM_ERRORS as exc:
            error = connection_error(self._ref.api_host, exc)
            raise RegistryError(f"pull from {self._ref.name} failed: {self._what}: {error}",
                                registry=self._ref.registry) from None
        return data

    def close(self) -> None:
        self._resp.close()
