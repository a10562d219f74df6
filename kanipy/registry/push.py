"""Pushing an image: blobs first (skipped, mounted or streamed up), the manifest last.

Distribution spec, "Pushing blobs": HEAD tells whether a blob is there; a
``POST .../blobs/uploads/?mount=D&from=REPO`` mounts it from another repository
of the same registry (201), or starts an ordinary upload (202) when the
registry declines. Uploads are monolithic (POST, then PUT with the file as
body) or chunked (PATCH with ``Content-Range``, then PUT) for large blobs or
when the registry sets ``OCI-Chunk-Min-Length``. Bodies are streamed from the
BlobStore file in 1 MiB pieces, never read whole. A failed upload restarts
from the file with a new POST. The manifest goes up only after every blob it
names exists, so a registry never holds a manifest with missing parts.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

import requests

from kanipy.errors import IntegrityError, RegistryError
from kanipy.oci.blobstore import BlobStore
from kanipy.oci.descriptor import Descriptor
from kanipy.oci.digest import Digest
from kanipy.reference import Reference
from kanipy.registry.auth import repository_scope
from kanipy.registry.progress import ProgressCallback, emit
from kanipy.registry.transport import redact_url

if TYPE_CHECKING:
    from kanipy.registry.client import RegistryClient

log = logging.getLogger(__name__)

_PIECE = 1 << 20


class FileRange:
    """A request body: ``length`` bytes of a file from ``offset``, read 1 MiB at a time.

    It has ``__len__`` so requests sends a Content-Length (no chunked transfer
    encoding) and ``__iter__`` so urllib3 streams it without a read() of 8 KiB
    blocks. Each attempt makes a fresh FileRange: a retry re-reads the file.
    """

    def __init__(self, path: Path, offset: int, length: int,
                 on_bytes: ProgressCallback | None = None, digest: Digest | None = None,
                 total: int = 0, done_before: int = 0) -> None:
        self.path, self.offset, self.length = path, offset, length
        self._on_bytes = on_bytes
        self._digest = digest
        self._total = total
        self._done_before = done_before

    def __len__(self) -> int:
        return self.length

    def __iter__(self) -> Iterator[bytes]:
        remaining = self.length
        sent = 0
        with open(self.path, "rb") as fh:
            fh.seek(self.offset)
            while remaining > 0:
                piece = fh.read(min(_PIECE, remaining))
                if not piece:
                    raise IntegrityError(f"{self.path} shrank while it was being uploaded")
                remaining -= len(piece)
                sent += len(piece)
                if self._digest is not None:
                    emit(self._on_bytes, self._digest, self._done_before + sent,
                                  self._total, "upload")
                yield piece


def push_image(
    client: RegistryClient, ref: Reference, manifest_raw: bytes, manifest_media_type: str,
    blobs: Sequence[Descriptor], store: BlobStore,
    mount_sources: dict[Digest, str], on_progress: ProgressCallback | None = None,
) -> Digest:
    """Push blobs then the manifest to ``ref``; returns the manifest digest."""
    unique: dict[Digest, Descriptor] = {}
    for desc in blobs:
        unique.setdefault(desc.digest, desc)
    sources = {d: repo for d, raw in mount_sources.items()
               if (repo := _same_registry_repo(raw, ref)) and repo != ref.repository}
    scopes = [repository_scope(ref.repository, "pull,push")]
    scopes += [repository_scope(repo, "pull") for repo in sorted(set(sources.values()))]

    workers = max(1, min(client.options.concurrency, len(unique)))
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="kanipy-push") as pool:
        futures = [pool.submit(push_blob, client, ref, desc, store, scopes,
                               sources.get(desc.digest), on_progress)
                   for desc in unique.values()]
        try:
            for future in futures:
                future.result()
        except BaseException:
            for future in futures:
                future.cancel()
            raise
    return put_manifest(client, ref, manifest_raw, manifest_media_type, scopes)


def _same_registry_repo(source: str, ref: Reference) -> str | None:
    """``repo`` or ``registry/repo`` -> the repository, if it lives on ref's registry."""
    if source.startswith(ref.registry + "/"):
        return source[len(ref.registry) + 1:]
    first = source.split("/", 1)[0]
    if "." in first or ":" in first or first == "localhost":
        return None
    return source


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


def push_blob(client: RegistryClient, ref: Reference, desc: Descriptor, store: BlobStore,
              scopes: list[str], mount_from: str | None,
              on_progress: ProgressCallback | None) -> str:
    """Make ``desc`` exist in ``ref``'s repository; returns "exists", "mounted" or "uploaded"."""
    digest = desc.digest
    if blob_exists(client, ref, digest, scopes):
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
    if not store.has(digest):
        raise RegistryError(f"push to {ref.name} failed: blob {digest} is neither in the "
                            "registry nor in the local blob store", registry=ref.registry)
    upload_blob(client, ref, desc, store, scopes, location, on_progress)
    return "uploaded"


def blob_exists(client: RegistryClient, ref: Reference, digest: Digest,
                scopes: list[str]) -> bool:
    resp = client.request(ref, "HEAD", f"/blobs/{digest}", action="push", scopes=scopes)
    with resp:
        if resp.status_code == 200:
            return True
        if resp.status_code == 404:
            return False
        raise client.http_error(resp, ref, "push", f"blob {digest}")


def upload_blob(client: RegistryClient, ref: Reference, desc: Descriptor, store: BlobStore,
                scopes: list[str], location: str | None,
                on_progress: ProgressCallback | None) -> None:
    """Upload one blob, restarting from the file on a temporary failure (bounded)."""
    path = store.path(desc.digest)
    size = os.stat(path).st_size
    if size != desc.size:
        raise IntegrityError(f"blob {desc.digest} in the store is {size} bytes, "
                             f"the manifest says {desc.size}")
    attempts = 1 + client.options.retries
    for attempt in range(attempts):
        try:
            min_chunk = 0
            if location is None:
                location, min_chunk = start_upload(client, ref, scopes)
            chunked = size >= client.options.chunk_threshold or min_chunk > 0
            if chunked:
                _upload_chunked(client, ref, desc, path, scopes, location,
                                max(min_chunk, client.options.chunk_size), on_progress)
            else:
                _upload_monolithic(client, ref, desc, path, scopes, location, on_progress)
        except RegistryError as exc:
            location = None
            if not exc.temporary or attempt + 1 >= attempts:
                raise
            delay = client.transport.backoff_delay(attempt)
            log.info("upload of %s to %s failed (%s); restarting from the file in %.1fs",
                     desc.digest, ref.name, exc, delay)
            client.transport.sleep(delay)
            continue
        emit(on_progress, desc.digest, size, size, "done")
        return


def start_upload(client: RegistryClient, ref: Reference, scopes: list[str]) -> tuple[str, int]:
    """POST a new upload session; its Location and the registry's minimum chunk length."""
    resp = client.request(ref, "POST", "/blobs/uploads/", action="push", scopes=scopes,
                          retry=False, headers={"Content-Length": "0"})
    with resp:
        if resp.status_code != 202 or not resp.headers.get("Location"):
            raise client.http_error(resp, ref, "push", "starting a blob upload")
        location = client.resolve_location(ref, resp.headers["Location"])
        try:
            min_chunk = int(resp.headers.get("OCI-Chunk-Min-Length", "0"))
        except ValueError:
            min_chunk = 0
    return location, min_chunk


def _with_digest(location: str, digest: Digest) -> str:
    sep = "&" if "?" in location else "?"
    return f"{location}{sep}digest={digest}"


def _upload_monolithic(client: RegistryClient, ref: Reference, desc: Descriptor, path: Path,
                       scopes: list[str], location: str,
                       on_progress: ProgressCallback | None) -> None:
    log.debug("uploading %s (%d bytes) to %s", desc.digest, desc.size, redact_url(location))
    resp = _send_upload(
        client, ref, "PUT", _with_digest(location, desc.digest), scopes,
        {"Content-Type": "application/octet-stream"},
        FileRange(path, 0, desc.size, on_progress, desc.digest, desc.size))
    with resp:
        if resp.status_code != 201:
            raise client.http_error(resp, ref, "push", f"blob {desc.digest}")


def _upload_chunked(client: RegistryClient, ref: Reference, desc: Descriptor, path: Path,
                    scopes: list[str], location: str, chunk: int,
                    on_progress: ProgressCallback | None) -> None:
    log.debug("uploading %s (%d bytes) in chunks of %d", desc.digest, desc.size, chunk)
    offset = 0
    while offset < desc.size:
        length = min(chunk, desc.size - offset)
        body = FileRange(path, offset, length, on_progress, desc.digest, desc.size, offset)
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
                 body: FileRange | None) -> requests.Response:
    # retry=False: the upload session's state is unknown after a failure; the
    # caller restarts the whole upload from the file instead.
    return client.request(ref, method, "", url=url, action="push", scopes=scopes,
                          headers=headers, body=body, retry=False)


def check_push_permission(client: RegistryClient, ref: Reference) -> None:
    """Fail early (AuthError) when ``ref`` cannot be pushed to: open an upload and cancel it.

    Kaniko checks this before building, so a denied destination costs seconds,
    not a whole build.
    """
    scopes = [repository_scope(ref.repository, "pull,push")]
    location, _ = start_upload(client, ref, scopes)
    resp = client.request(ref, "DELETE", "", url=location, action="push", scopes=scopes,
                          retry=False)
    resp.close()
    log.debug("push to %s permitted", ref.name)

