"""Uploading layer blobs to the destinations while later steps run (issue 14).

A layer blob that will surely be in the built image — one made by a step of the
last stage, or of a stage it is built ``FROM`` (``engine._stages_in_image``) —
is complete once the stage loop has written it, and nothing a later step does
can change it. ``EarlyPush.offer`` starts its upload to every destination on a
background thread, with ``registry.push.push_blob`` (the same HEAD, mount,
monolithic or chunked upload and retries as the push at the end), so the
upload overlaps the next steps instead of following the whole build.

The manifest still goes last, and only from the push at the end: ``finish``
waits for these uploads, then ``registry.push.push`` runs as it always did; it
HEADs every blob (an early one is found there), uploads whatever is missing
(an early upload that failed is simply done again, with its error if it fails
again) and puts the manifest. A build that fails after some blobs went up
leaves no manifest and no tag: nothing anyone can pull. The blobs it left are
referenced by no manifest and are removed by the registry's garbage collection
(``registry garbage-collect`` for the CNCF registry). ``abandon`` stops the
uploads on a failure or a signal: queued ones are cancelled, and one under way
fails at its next 1 MiB piece, so nothing waits on them; an upload blocked on a
stalled registry is ended by the low-speed limit, and the CLI does not join it.

Only after the push-permission check passed (the engine makes an
``EarlyPush`` only then): a refused destination still stops the build before
any step, and no upload starts without that check.
"""

from __future__ import annotations

import contextvars
import logging
import threading
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import BinaryIO, cast

from kanipy.oci.blobstore import BlobStore
from kanipy.oci.descriptor import Descriptor
from kanipy.oci.image import Blob
from kanipy.reference import Reference
from kanipy.registry import RegistryClient
from kanipy.registry.auth import repository_scope
from kanipy.registry.progress import ProgressCallback
from kanipy.registry.push import push_blob

log = logging.getLogger(__name__)

# Uploads at once. The next step runs meanwhile and wants the CPU (two cores on
# the machines this was measured on); the push at the end is not limited by it.
WORKERS = 2


class UploadCancelled(BaseException):
    """Raised inside an early upload once the build has failed: it ends the thread's
    work. A BaseException so that no retry loop or error mapping takes it for a
    registry's failure."""


class _CancellableStream:
    """A blob file whose reads stop once ``cancelled`` is set (between 1 MiB pieces)."""

    def __init__(self, raw: BinaryIO, cancelled: threading.Event) -> None:
        self._raw = raw
        self._cancelled = cancelled

    def read(self, n: int = -1, /) -> bytes:
        if self._cancelled.is_set():
            raise UploadCancelled()
        return self._raw.read(n)

    def close(self) -> None:
        self._raw.close()

    def __enter__(self) -> _CancellableStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class EarlyPush:
    """Background uploads of finished layer blobs to every destination's repository."""

    def __init__(self, client: RegistryClient, destinations: Sequence[Reference],
                 store: BlobStore, on_progress: ProgressCallback | None = None) -> None:
        self._client = client
        # One upload per repository: two tags of one repository need the blob once,
        # and two uploads of one blob at once meet the registry's link race (issue 13).
        repositories: dict[tuple[str, str], Reference] = {}
        for ref in destinations:
            repositories.setdefault((ref.registry, ref.repository), ref)
        self._destinations = list(repositories.values())
        self._store = store
        self._on_progress = on_progress
        self._cancelled = threading.Event()
        self._lock = threading.Lock()
        self._offered: set[str] = set()
        self._uploads: list[tuple[Reference, Descriptor, Future[str]]] = []
        self._pool = ThreadPoolExecutor(max_workers=WORKERS,
                                        thread_name_prefix="kanipy-early-push")

    def offer(self, desc: Descriptor) -> None:
        """Upload the store's blob ``desc`` to every destination's repository, in the
        background.

        The caller vouches that the blob will be in the image (a layer of a stage
        in the image, not a cache hit: those are mounted by the push at the end).
        """
        with self._lock:
            if self._cancelled.is_set() or str(desc.digest) in self._offered:
                return
            self._offered.add(str(desc.digest))
            for ref in self._destinations:
                future = self._pool.submit(contextvars.copy_context().run, self._upload, ref,
                                           desc)
                self._uploads.append((ref, desc, future))
        log.debug("uploading layer %s to %d destinations while the build goes on",
                  desc.digest, len(self._destinations))

    def _upload(self, ref: Reference, desc: Descriptor) -> str:
        if self._cancelled.is_set():
            raise UploadCancelled()
        store = self._store
        cancelled = self._cancelled

        def open_blob() -> BinaryIO:
            return cast(BinaryIO, _CancellableStream(store.open(desc.digest), cancelled))

        scopes = [repository_scope(ref.repository, "pull,push")]
        return push_blob(self._client, ref, Blob(desc, open_blob), scopes, None,
                         self._on_progress)

    def finish(self) -> None:
        """Wait for every upload started; those that failed are logged and left to the
        push at the end, which uploads what the registry lacks (and reports its error)."""
        with self._lock:
            uploads = list(self._uploads)
        for ref, desc, future in uploads:
            try:
                how = future.result()
            except Exception as exc:  # noqa: BLE001 - the push at the end tries again
                log.info("early upload of %s to %s failed (%s); the push at the end "
                         "uploads it again", desc.digest, ref.name, exc)
                continue
            log.debug("%s %s to %s while the build ran", how, desc.digest, ref.name)
        self._pool.shutdown(wait=True)

    def abandon(self) -> None:
        """The build failed or was stopped: cancel what is queued, stop what runs, wait
        for nothing (an upload ends at its next piece, or by the low-speed limit)."""
        with self._lock:
            self._cancelled.set()
        self._pool.shutdown(wait=False, cancel_futures=True)
