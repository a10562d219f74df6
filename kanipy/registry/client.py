"""RegistryClient: authenticated requests to one registry API, and errors a user can act on.

Every request names what it is for (pull or push, which repository, which
object), so a failure can say "push to reg/app denied: ..." with the credential
source that was tried. Pull and push themselves live in ``pull.py`` and
``push.py``; this module holds what they share: the request loop that answers
401 challenges, manifest GETs verified against their digest, and blob fetches
verified as they stream into the BlobStore.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin

import requests
import urllib3.exceptions

from kanipy.errors import AuthError, IntegrityError, NotFoundError, RegistryError
from kanipy.oci import mediatypes
from kanipy.oci.blobstore import BlobStore
from kanipy.oci.descriptor import Descriptor, Platform
from kanipy.oci.digest import Digest
from kanipy.reference import DOCKER_HUB, Reference
from kanipy.registry import pull, push
from kanipy.registry.auth import Authenticator, parse_challenge, repository_scope
from kanipy.registry.credentials import CredentialStore
from kanipy.registry.options import RegistryOptions
from kanipy.registry.progress import ProgressCallback, emit
from kanipy.registry.transport import Body, Transport, connection_error

log = logging.getLogger(__name__)

# distribution spec: registries may refuse manifests over 4 MiB; so do we.
MAX_MANIFEST_BYTES = 4 << 20
_READ_CHUNK = 1 << 20


@dataclass(frozen=True)
class Manifest:
    """A manifest or index exactly as the registry sent it."""

    raw: bytes
    media_type: str
    digest: Digest

    def json(self) -> dict[str, Any]:
        data = json.loads(self.raw)
        if not isinstance(data, dict):
            raise RegistryError(f"manifest {self.digest} is not a JSON object")
        return data

    @property
    def is_index(self) -> bool:
        return self.media_type in mediatypes.INDEX_TYPES


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
        endpoint = self.transport.endpoint(host)
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
                                       body=body, stream=stream, retry=retry)
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
        base = self.transport.endpoint(ref.api_host).base_url
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
    ) -> Manifest:
        """The manifest ``ref`` names, raw, verified against the digest asked for or sent."""
        what = (f"manifest {ref.digest}" if ref.digest is not None
                else f"tag {ref.tag!r} in {ref.name}")
        resp = self.request(ref, "GET", f"/manifests/{ref.identifier}", action="pull",
                            headers={"Accept": ", ".join(accept)}, stream=True)
        with resp:
            if resp.status_code != 200:
                raise self.http_error(resp, ref, "pull", what)
            raw = _read_capped(resp, MAX_MANIFEST_BYTES, ref)
            header = resp.headers.get("Docker-Content-Digest")
            content_type = resp.headers.get("Content-Type", "").split(";")[0].strip()
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
        media_type = _manifest_media_type(raw, content_type, ref)
        return Manifest(raw=raw, media_type=media_type, digest=actual)

    # -- blobs ---------------------------------------------------------------
    def fetch_blob(
        self, ref: Reference, descriptor: Descriptor, store: BlobStore,
        on_progress: ProgressCallback | None = None,
    ) -> bool:
        """Stream a blob into ``store``, verified; False when it was already there.

        A dropped connection restarts the download (bounded by ``retries``); a
        digest or size mismatch raises IntegrityError and stores nothing.
        """
        digest = descriptor.digest
        if store.has(digest):
            emit(on_progress, digest, descriptor.size, descriptor.size, "exists")
            return False
        what = f"blob {digest} of {ref.name}"
        attempts = 1 + self.options.retries
        for attempt in range(attempts):
            resp = self.request(ref, "GET", f"/blobs/{digest}", action="pull", stream=True)
            if resp.status_code != 200:
                with resp:
                    raise self.http_error(resp, ref, "pull", f"blob {digest}")
            done = 0
            try:
                with resp, store.writer(expected=digest, size=descriptor.size, what=what) as out:
                    # decode_content=False: a registry (or a proxy) that adds a
                    # Content-Encoding must not change the bytes we hash.
                    for chunk in resp.raw.stream(_READ_CHUNK, decode_content=False):
                        out.write(chunk)
                        done += len(chunk)
                        if done > descriptor.size:
                            raise IntegrityError(f"{what}: received more than the "
                                                 f"{descriptor.size} bytes declared")
                        emit(on_progress, digest, done, descriptor.size, "download")
            except (requests.RequestException, urllib3.exceptions.HTTPError,
                    ConnectionError) as exc:
                error = connection_error(ref.api_host, exc)
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

    # -- pull and push (see pull.py, push.py) --------------------------------
    def pull_image(self, ref: Reference, platform: Platform | None, store: BlobStore,
                   on_progress: ProgressCallback | None = None,
                   on_layer: pull.LayerCallback | None = None) -> pull.PulledImage:
        """Pull ``ref`` for ``platform`` (linux/amd64 by default) with every blob into ``store``.

        ``on_layer`` sees each layer, in order, as soon as it is stored (see pull.pull_image).
        """
        return pull.pull_image(self, ref, platform or Platform(), store, on_progress, on_layer)

    def push_image(
        self, ref: Reference, manifest_raw: bytes, manifest_media_type: str,
        blobs: Sequence[Descriptor], store: BlobStore,
        mount_sources: dict[Digest, str] | None = None,
        on_progress: ProgressCallback | None = None,
    ) -> Digest:
        """Push blobs (skipped, mounted or uploaded) then the manifest; its digest."""
        return push.push_image(self, ref, manifest_raw, manifest_media_type, blobs, store,
                          mount_sources or {}, on_progress)

    def check_push_permission(self, ref: Reference) -> None:
        """Raise AuthError now if ``ref`` cannot be pushed to (before a long build)."""
        push.check_push_permission(self, ref)


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


def _manifest_media_type(raw: bytes, content_type: str, ref: Reference) -> str:
    try:
        declared = json.loads(raw).get("mediaType")
    except (ValueError, AttributeError):
        raise RegistryError(f"the manifest of {ref} is not JSON", registry=ref.registry) from None
    media_type = content_type
    if media_type not in mediatypes.INDEX_TYPES | mediatypes.MANIFEST_TYPES:
        media_type = declared or content_type
        if not media_type:
            # OCI image spec: mediaType is optional; manifests vs indexes by shape.
            data = json.loads(raw)
            media_type = mediatypes.OCI_INDEX if "manifests" in data else mediatypes.OCI_MANIFEST
    if media_type in (mediatypes.DOCKER_MANIFEST_V1, mediatypes.DOCKER_MANIFEST_V1_SIGNED):
        raise RegistryError(
            f"{ref} is a Docker schema 1 image, which is deprecated and not supported; "
            "push it again with a current Docker or skopeo", registry=ref.registry)
    return media_type

