"""Pushing an image: blobs first (skipped, mounted or streamed up), the manifest last.

``push(image, reference, client=...)`` takes any ``kanipy.oci.image.Image``.
Distribution spec, "Pushing blobs": HEAD tells whether a blob is there; a
``POST .../blobs/uploads/?mount=D&from=REPO`` mounts it from another repository
of the same registry (201), or starts an ordinary upload (202) when the
registry declines. Uploads are monolithic (POST, then PUT with the blob as
body) or chunked (PATCH with ``Content-Range``, then PUT) for large blobs or
when the registry sets ``OCI-Chunk-Min-Length``. Bodies stream from the
image's blob in 1 MiB pieces, never read whole. A failed upload restarts with
a fresh stream of the blob and a new POST. The manifest goes up only after
every blob it names exists, so a registry never holds a manifest with missing
parts.

Builds that push the same blobs at once meet the registry's own races: the
CNCF registry rewrites a repository's blob link in place, so while one client
commits an upload another may see the blob as unknown (a HEAD answering 500, a
manifest refused as MANIFEST_BLOB_UNKNOWN, or DIGEST_INVALID "blob unknown to
registry"), although every upload was accepted (issue 13). Such a refusal
makes ``push`` check every blob again, upload those that are missing and send
the manifest again, ``blob_retries`` times, apart from ``--push-retry``
(which counts retries of one request). A pushed manifest is then asked for
by digest (HEAD): nothing is reported pushed that the registry does not serve.
"""

from __future__ import annotations

import contextvars
import io
import logging
import os
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import BinaryIO

import requests

from kanipy.errors import IntegrityError, RegistryError
from kanipy.oci.descriptor import Descriptor
from kanipy.oci.digest import Digest
from kanipy.oci.image import Blob, Image, image_blobs
from kanipy.reference import Reference
from kanipy.registry.auth import repository_scope
from kanipy.registry.client import RegistryClient
from kanipy.registry.progress import ProgressCallback, emit
from kanipy.registry.transport import redact_url

log = logging.getLogger(__name__)

_PIECE = 1 << 20

# Manifest refusals that name a blob the registry does not (yet) know. The CNCF
# registry answers DIGEST_INVALID ("blob unknown to registry") when a blob link
# it reads is being rewritten by a concurrent upload of the same blob.
UNKNOWN_BLOB_CODES = frozenset({"MANIFEST_BLOB_UNKNOWN", "BLOB_UNKNOWN", "DIGEST_INVALID"})
# How many times a manifest refused for an unknown blob is sent again after the
# blobs were checked (and re-uploaded where missing); not --push-retry.
MANIFEST_BLOB_RETRIES = 3


class StreamRange:
    """A request body: the next ``length`` bytes of ``stream``, read 1 MiB at a time.

    It has ``__len__`` so requests sends a Content-Length (no chunked transfer
    encoding) and ``__iter__`` so urllib3 streams it without a read() of 8 KiB
    blocks. Each attempt opens a fresh stream of the blob: a retry re-reads it.
    """

    def __init__(self, stream: BinaryIO, length: int, what: str,
                 on_bytes: ProgressCallback | None = None, digest: Digest | None = None,
                 total: int = 0, done_before: int = 0) -> None:
        self.stream, self.length, self.what = stream, length, what
        self._on_bytes = on_bytes
        self._digest = digest
        self._total = total
        self._done_before = done_before

    def __len__(self) -> int:
        return self.length

    def __iter__(self) -> Iterator[bytes]:
        remaining = self.length
        sent = 0
        while remaining > 0:
            piece = self.stream.read(min(_PIECE, remaining))
            if not piece:
                raise IntegrityError(f"{self.what} ended {remaining} bytes short while it "
                                     "was being uploaded")
            remaining -= len(piece)
            sent += len(piece)
            if self._digest is not None:
                emit(self._on_bytes, self._digest, self._done_before + sent, self._total,
                     "upload")
            yield piece


def push(
    image: Image,
    reference: Reference,
    *,
    client: RegistryClient,
    mount_sources: Mapping[Digest, str] | None = None,
    on_progress: ProgressCallback | None = None,
    blob_retries: int = MANIFEST_BLOB_RETRIES,
) -> Digest:
    """Push ``image``'s blobs, then its manifest, to ``reference``; the manifest digest.

    A manifest refused for an unknown blob is sent again after the blobs are
    checked and re-uploaded where missing, at most ``blob_retries`` times; the
    digest is returned only once the registry serves the manifest.

    ``mount_sources`` maps a blob digest to a repository (``repo`` or
    ``registry/repo``) that already holds it; on the same registry the blob
    is mounted from there instead of uploaded.
    """
    manifest = image.manifest()
    blobs = image_blobs(image)
    sources = {d: repo for d, raw in (mount_sources or {}).items()
               if (repo := _same_registry_repo(raw, reference)) and repo != reference.repository}
    scopes = [repository_scope(reference.repository, "pull,push")]
    scopes += [repository_scope(repo, "pull") for repo in sorted(set(sources.values()))]

    def push_blobs() -> None:
        workers = max(1, min(client.options.concurrency, len(blobs)))
        # Not ``with pool``: its exit waits for every worker, and a worker writing
        # to a stalled registry would hold a signalled build until the low-speed
        # limit ends it (issue 11). On a failure the workers are not waited for.
        pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="kanipy-push")
        try:
            futures = [pool.submit(contextvars.copy_context().run, push_blob, client, reference,
                                   blob, scopes, sources.get(blob.descriptor.digest),
                                   on_progress)
                       for blob in blobs]
            for future in futures:
                future.result()
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)
            raise
        pool.shutdown(wait=True)

    push_blobs()
    for attempt in range(1 + blob_retries):
        last = attempt >= blob_retries
        try:
            digest = put_manifest(client, reference, manifest.raw, manifest.media_type, scopes)
        except RegistryError as exc:
            if last or not names_unknown_blob(exc):
                raise
            delay = client.transport.backoff_delay(attempt)
            log.warning("%s refused the manifest of %s (%s); checking its %d blobs again "
                        "in %.1fs (%d/%d)", reference.registry, reference.name,
                        exc.code, len(blobs), delay, attempt + 1, blob_retries)
            client.transport.sleep(delay)
            push_blobs()
            continue
        if manifest_served(client, reference, digest, manifest.media_type, scopes):
            return digest
        if last:
            raise RegistryError(
                f"push to {reference.name} failed: the registry accepted manifest {digest} "
                f"but does not serve it (checked {1 + blob_retries} times)",
                registry=reference.registry)
        log.warning("%s accepted manifest %s of %s but does not serve it; pushing again",
                    reference.registry, digest, reference.name)
        client.transport.sleep(client.transport.backoff_delay(attempt))
        push_blobs()
    raise AssertionError("unreachable")


def names_unknown_blob(error: RegistryError) -> bool:
    """True when a manifest PUT was refused because a blob it names is unknown."""
    return error.code in UNKNOWN_BLOB_CODES and error.status in (400, 404)


def manifest_served(client: RegistryClient, ref: Reference, digest: Digest,
                    media_type: str, scopes: list[str]) -> bool:
    """HEAD the manifest by digest: True when the registry serves it, False on 404.

    Any other answer (after the transport's retries) is an error of the push.
    """
    resp = client.request(ref, "HEAD", f"/manifests/{digest}", action="push", scopes=scopes,
                          headers={"Accept": media_type})
    with resp:
        if resp.status_code == 404:
            return False
        if resp.status_code != 200:
            raise client.http_error(resp, ref, "push", f"manifest {digest}")
        header = (resp.headers.get("Docker-Content-Digest") or "").strip()
    if header and header != str(digest):
        raise IntegrityError(f"push to {ref.name}: the registry serves {header} for "
                             f"manifest {digest}")
    return True


def _same_registry_repo(source: str, ref: Reference) -> str | None:
    """``repo`` or ``registry/repo`` -> the repository, if it lives on ref's registry."""
    if source.startswith(ref.registry + "/"):
        return source[len(ref.registry) + 1:]
    first = source.split("/", 1)[0]
    if "." in first or ":" in first or first == "localhost":
        return None
    return source


# What registries answer when a manifest PUT would move an immutable tag, as
# Kaniko's pkg/executor/push.go matches them (in the registry's error message):
IMMUTABLE_TAG_MESSAGES = (
    # Artifact Registry: cloud.google.com/artifact-registry/docs/docker/troubleshoot#push
    "The repository has enabled tag immutability",
    # ECR, code TAG_INVALID:
    # docs.aws.amazon.com/AmazonECR/latest/userguide/image-tag-mutability.html
    "cannot be overwritten because the repository is immutable",
)


def is_immutable_tag_refusal(error: RegistryError) -> bool:
    """True when ``error`` is a registry refusing to move an immutable tag."""
    return any(text in error.message for text in IMMUTABLE_TAG_MESSAGES)


def put_manifest(client: RegistryClient, ref: Reference, raw: bytes, media_type: str,
                 scopes: list[str]) -> Digest:
    digest = Digest.of_bytes(raw)
    tag_or_digest = ref.tag if ref.tag is not None else str(ref.digest or digest)
    resp = client.request(ref, "PUT", f"/manifests/{tag_or_digest}", action="push",
                          scopes=scopes, headers={"Content-Type": media_type}, body=raw)
    with resp:
        if resp.status_code not in (200, 201):
            raise client.http_error(resp, ref, "push", f"manifest {tag_or_digest}")
        header = resp.headers.get("Docker-Content-Digest")
    if header and header.strip() != str(digest):
        raise IntegrityError(f"push to {ref.name}: the registry stored the manifest as "
                             f"{header.strip()}, but its bytes hash to {digest}")
    log.debug("pushed %s@%s", ref.name, digest)
    return digest


def push_blob(client: RegistryClient, ref: Reference, blob: Blob, scopes: list[str],
              mount_from: str | None, on_progress: ProgressCallback | None) -> str:
    """Make ``blob`` exist in ``ref``'s repository; returns "exists", "mounted" or "uploaded"."""
    desc = blob.descriptor
    digest = desc.digest
    if client.blob_exists(ref, digest, scopes):
        log.debug("%s already in %s", digest, ref.name)
        emit(on_progress, digest, desc.size, desc.size, "exists")
        return "exists"
    location: str | None = None
    if mount_from:
        resp = client.request(ref, "POST", f"/blobs/uploads/?mount={digest}&from={mount_from}",
                              action="push", scopes=scopes, retry=False)
        with resp:
            if resp.status_code == 201:
                log.debug("mounted %s from %s into %s", digest, mount_from, ref.name)
                emit(on_progress, digest, desc.size, desc.size, "mounted")
                return "mounted"
            if resp.status_code == 202 and resp.headers.get("Location"):
                # The registry declined the mount and opened an upload instead.
                location = client.resolve_location(ref, resp.headers["Location"])
            else:
                log.info("mount of %s from %s refused (HTTP %d); uploading instead",
                         digest, mount_from, resp.status_code)
    upload_blob(client, ref, blob, scopes, location, on_progress)
    return "uploaded"


def _open_blob(blob: Blob, ref: Reference) -> BinaryIO:
    """A fresh stream of ``blob``; a blob the image cannot produce is named as such."""
    desc = blob.descriptor
    try:
        stream = blob.open()
    except FileNotFoundError:
        raise RegistryError(f"push to {ref.name} failed: blob {desc.digest} is neither in the "
                            "registry nor in the local blob store", registry=ref.registry) \
            from None
    if isinstance(stream, io.BufferedReader):
        # A blob file of the wrong size is caught before any byte goes up.
        size = os.fstat(stream.fileno()).st_size
        if size != desc.size:
            stream.close()
            raise IntegrityError(f"blob {desc.digest} in the store is {size} bytes, "
                                 f"the manifest says {desc.size}")
    return stream


def upload_blob(client: RegistryClient, ref: Reference, blob: Blob, scopes: list[str],
                location: str | None, on_progress: ProgressCallback | None) -> None:
    """Upload one blob, restarting from a fresh stream on a temporary failure (bounded)."""
    desc = blob.descriptor
    attempts = 1 + client.options.retries
    for attempt in range(attempts):
        # Opened outside the try: a blob the image cannot produce is not retried.
        stream = _open_blob(blob, ref)
        try:
            with stream:
                min_chunk = 0
                if location is None:
                    location, min_chunk = client.start_upload(ref, scopes)
                chunked = desc.size >= client.options.chunk_threshold or min_chunk > 0
                if chunked:
                    _upload_chunked(client, ref, desc, stream, scopes, location,
                                    max(min_chunk, client.options.chunk_size), on_progress)
                else:
                    _upload_monolithic(client, ref, desc, stream, scopes, location,
                                       on_progress)
        except RegistryError as exc:
            location = None
            if not exc.temporary or attempt + 1 >= attempts:
                raise
            delay = client.transport.backoff_delay(attempt)
            log.info("upload of %s to %s failed (%s); restarting from the blob in %.1fs",
                     desc.digest, ref.name, exc, delay)
            client.transport.sleep(delay)
            continue
        emit(on_progress, desc.digest, desc.size, desc.size, "done")
        return


def _with_digest(location: str, digest: Digest) -> str:
    sep = "&" if "?" in location else "?"
    return f"{location}{sep}digest={digest}"


def _upload_monolithic(client: RegistryClient, ref: Reference, desc: Descriptor,
                       stream: BinaryIO,
                       scopes: list[str], location: str,
                       on_progress: ProgressCallback | None) -> None:
    log.debug("uploading %s (%d bytes) to %s", desc.digest, desc.size, redact_url(location))
    resp = _send_upload(
        client, ref, "PUT", _with_digest(location, desc.digest), scopes,
        {"Content-Type": "application/octet-stream"},
        StreamRange(stream, desc.size, f"blob {desc.digest}", on_progress, desc.digest,
                    desc.size))
    with resp:
        if resp.status_code != 201:
            raise client.http_error(resp, ref, "push", f"blob {desc.digest}")


def _upload_chunked(client: RegistryClient, ref: Reference, desc: Descriptor,
                    stream: BinaryIO,
                    scopes: list[str], location: str, chunk: int,
                    on_progress: ProgressCallback | None) -> None:
    log.debug("uploading %s (%d bytes) in chunks of %d", desc.digest, desc.size, chunk)
    offset = 0
    while offset < desc.size:
        length = min(chunk, desc.size - offset)
        body = StreamRange(stream, length, f"blob {desc.digest}", on_progress, desc.digest,
                           desc.size, offset)
        resp = _send_upload(client, ref, "PATCH", location, scopes, {
            "Content-Type": "application/octet-stream",
            "Content-Range": f"{offset}-{offset + length - 1}",
        }, body)
        with resp:
            if resp.status_code != 202:
                raise client.http_error(resp, ref, "push", f"blob {desc.digest} chunk at "
                                                           f"{offset}")
            if resp.headers.get("Location"):
                location = client.resolve_location(ref, resp.headers["Location"])
        offset += length
    resp = _send_upload(client, ref, "PUT", _with_digest(location, desc.digest), scopes,
                        {"Content-Length": "0"}, None)
    with resp:
        if resp.status_code != 201:
            raise client.http_error(resp, ref, "push", f"blob {desc.digest}")


def _send_upload(client: RegistryClient, ref: Reference, method: str, url: str,
                 scopes: list[str], headers: dict[str, str],
                 body: StreamRange | None) -> requests.Response:
    # retry=False: the upload session's state is unknown after a failure; the
    # caller restarts the whole upload from a fresh stream of the blob instead.
    return client.request(ref, method, "", url=url, action="push", scopes=scopes,
                          headers=headers, body=body, retry=False)
