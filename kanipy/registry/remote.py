"""RemoteImage: an image in a registry, behind the ``kanipy.oci.image.Image`` protocol.

As go-containerregistry's ``remote.Image``: the manifest is fetched when the
image is made (``pull.pull`` does that, through an index if need be); the
config is fetched the first time it is asked for; a layer blob is fetched only
when it is opened, and every open is a fresh, verified stream. With a
BlobStore, each blob is fetched into the store once (verified before it gets
its name) and then read from there; ``fetch_all`` brings every blob in at
once, several at a time.
"""

from __future__ import annotations

import contextvars
import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import BinaryIO

from kanipy.oci.blobstore import BlobStore
from kanipy.oci.config import ImageConfig
from kanipy.oci.descriptor import Descriptor, Platform
from kanipy.oci.digest import Digest
from kanipy.oci.image import ImageLayer, Layer
from kanipy.oci.manifest import Index, Manifest
from kanipy.reference import Reference
from kanipy.registry.client import RegistryClient
from kanipy.registry.progress import ProgressCallback

log = logging.getLogger(__name__)

LayerCallback = Callable[[Descriptor], None]


class RemoteImage:
    """A single-platform image in a registry; config and layers fetched on demand.

    ``reference`` is the name asked for, pinned to the digest it resolved to
    (the index's, when there was one); ``source`` is where the blobs come from
    (a Docker Hub mirror, or the registry itself). ``index`` and ``platform``
    say which entry of which index was chosen, when the name led to an index.
    """

    def __init__(
        self,
        client: RegistryClient,
        reference: Reference,
        manifest: Manifest,
        *,
        source: Reference | None = None,
        index: Index | None = None,
        platform: Platform | None = None,
        store: BlobStore | None = None,
        on_progress: ProgressCallback | None = None,
    ) -> None:
        self.client = client
        self.reference = reference
        self.source = source or reference
        self.index = index
        self.platform = platform
        self.store = store
        self._manifest = manifest
        self._on_progress = on_progress
        self._config_raw: bytes | None = None
        self._config: ImageConfig | None = None
        self._lock = threading.Lock()

    @property
    def digest(self) -> Digest:
        return self._manifest.digest

    def manifest(self) -> Manifest:
        return self._manifest

    def config_bytes(self) -> bytes:
        with self._lock:
            if self._config_raw is None:
                with self.open_blob(self._manifest.config) as stream:
                    raw = stream.read()
                    stream.read()  # at EOF: a VerifyingReader checks size and digest
                self._config_raw = raw
            return self._config_raw

    def config(self) -> ImageConfig:
        if self._config is None:
            self._config = ImageConfig.parse(self.config_bytes())
        return self._config

    def layers(self) -> list[Layer]:
        return [ImageLayer(self, i, desc) for i, desc in enumerate(self._manifest.layers)]

    def open_blob(self, descriptor: Descriptor) -> BinaryIO:
        """A fresh stream of one of this image's blobs (from the store, once fetched there)."""
        if self.store is None:
            return self.client.open_blob(self.source, descriptor)
        if not self.store.has(descriptor.digest):
            self.client.fetch_blob(self.source, descriptor, self.store, self._on_progress)
        return self.store.open(descriptor.digest)

    def fetch_all(self, on_layer: LayerCallback | None = None) -> None:
        """Bring the config and every layer into the store, several downloads at a time.

        ``on_layer`` is called with each layer's descriptor, in image order, as
        soon as that layer (and every one before it) is in the store, while
        later layers still download: the build unpacks layer N while N+1 arrives.
        """
        store = self.store
        if store is None:
            raise ValueError("fetch_all needs a RemoteImage made with a BlobStore")
        descriptors = [self._manifest.config, *self._manifest.layers]
        workers = max(1, min(self.client.options.concurrency, len(descriptors)))
        # Not ``with pool``: its exit waits for every worker, and a worker reading a
        # stalled registry would hold a signalled build for minutes (issue 11).
        # On any failure the workers are told to stop and are not waited for.
        cancel = threading.Event()
        pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="kanipy-pull")
        try:
            # In a copy of this thread's context: log records name the stage
            # that pulls (contextvars do not follow a task to a pool thread).
            futures = [pool.submit(contextvars.copy_context().run, self.client.fetch_blob,
                                   self.source, d, store, self._on_progress, cancel)
                       for d in descriptors]
            for i, future in enumerate(futures):
                future.result()
                if i > 0 and on_layer is not None:
                    on_layer(descriptors[i])
        except BaseException:
            cancel.set()
            pool.shutdown(wait=False, cancel_futures=True)
            raise
        pool.shutdown(wait=True)

    def __repr__(self) -> str:
        return f"RemoteImage({self.reference})"
