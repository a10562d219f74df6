"""A stage root filled only as far as a step needs it (the layer cache, issue 10).

With ``--cache`` a stage's root starts empty. Its base's layers and the layers
of the steps the cache supplied are *pending*, each with a way to bring its
blob into the store. ``PendingRoot.fill`` applies them when a step has to run:

* before a step that may read and change anything (RUN), all of them;
* before a step that touches known paths (COPY, ADD, WORKDIR: ``step_scope``),
  only the entries on and under those paths and the directories above them
  (and ``/etc/passwd``, ``/etc/group``, which ``--chown`` reads). The other
  entries stay pending and are applied later, in layer order, if something
  needs the whole root. That is exact because what is left is disjoint from
  every path a step has touched since; where it cannot be known (a symlink or
  a whiteout on the way, a hardlink across the boundary) the whole root is
  filled instead.

So a late edit of a COPY unpacks next to nothing, and a stage whose root
nothing reads (the final one, or one no later stage names) is never filled:
its blobs are fetched only where an output needs their bytes.
"""

from __future__ import annotations

import contextvars
import hashlib
import logging
import posixpath
from collections.abc import Callable, Collection, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import BinaryIO

from kanipy.dockerfile import Copy, Instruction, Workdir
from kanipy.errors import IntegrityError
from kanipy.executor.step import StageState, StepKind
from kanipy.fs.compression import Readable, open_decompressed
from kanipy.fs.rootfs import Rootfs
from kanipy.fs.tarreader import LNKTYPE, SYMTYPE, TarEntry
from kanipy.fs.unpack import WHITEOUT_OPAQUE, WHITEOUT_PREFIX, extract_tar
from kanipy.oci import mediatypes
from kanipy.oci.blobstore import BlobStore
from kanipy.oci.descriptor import Descriptor
from kanipy.oci.digest import Digest
from kanipy.oci.image import StoredImage

log = logging.getLogger(__name__)

# Blobs downloaded at once while a root is filled.
_FETCHERS = 4
# What --chown (names) and WORKDIR (USER's owner) read besides their own paths.
_ALWAYS = ("etc/passwd", "etc/group")


class CachedLayerLost(Exception):
    """A cached layer could not be fetched, or did not match its entry, when it was needed.

    The stage is then built again without cache hits (a warning, never a failure).
    """


@dataclass
class PendingLayer:
    """A layer the root still lacks, and how to bring its blob into the store."""

    descriptor: Descriptor
    fetch: Callable[[], None]  # verified against the digest as it arrives
    # The diff_id an entry promised, checked as the layer is unpacked; None for a
    # base layer (its config is the registry's, verified by digest).
    diff_id: Digest | None = None
    cached: bool = False  # from the layer cache: a failure is CachedLayerLost
    # Whether the blob is still where it would be mounted from (a cached layer).
    present: Callable[[], bool] | None = None


class _Whole(Exception):
    """The step's paths cannot be filled apart from the rest: fill everything."""


def _clean(name: str) -> str:
    path = posixpath.normpath("/" + name).lstrip("/")
    return "" if path == "." else path


def _relevant(path: str, roots: Sequence[str]) -> bool:
    """``path`` is one of ``roots``, above one (a parent directory) or under one."""
    for root in roots:
        if path == root or root.startswith(path + "/") or path.startswith(root + "/") \
                or path == "":
            return True
    return False


def _above(path: str, roots: Sequence[str]) -> bool:
    """``path`` is a directory strictly above one of ``roots``."""
    return any(root != path and (path == "" or root.startswith(path + "/")) for root in roots)


def step_scope(ins: Instruction, state: StageState, kind: StepKind) -> list[str] | None:
    """The image paths a step writes under, or None when it may touch anything."""
    if kind is StepKind.TREE:
        return None
    if isinstance(ins, Workdir):
        # The key module loads with the layer cache, not with every build (issue 14).
        from kanipy.executor.cache_key import workdir_path

        return [_clean(workdir_path(ins, state)), *_ALWAYS]
    if isinstance(ins, Copy):  # ADD is a Copy too
        dest = posixpath.join(state.workdir or "/", ins.dest)
        return [_clean(dest), *_ALWAYS]
    return None


class PendingRoot:
    """The layers a stage's root still lacks (see the module docstring)."""

    def __init__(self, rootfs: Rootfs, store: BlobStore,
                 prepare: Callable[[], None] | None = None) -> None:
        self.rootfs = rootfs
        self.store = store
        self._prepare = prepare  # e.g. copy an earlier stage's root; runs before any layer
        self.layers: list[PendingLayer] = []
        self._applied: list[str] = []  # roots of the parts filled so far
        # Every layer's blob source by digest, kept after the layer is applied.
        self.sources: dict[str, PendingLayer] = {}
        self.partial_fills = 0
        self.whole_fills = 0
        self._fetching: dict[int, Future[None]] = {}

    def add(self, layer: PendingLayer) -> None:
        self.layers.append(layer)
        self.sources.setdefault(str(layer.descriptor.digest), layer)

    @property
    def empty(self) -> bool:
        return not self.layers and self._prepare is None

    def fill(self, scope: list[str] | None = None) -> None:
        """Apply what the root lacks: everything, or (``scope``) what those paths need."""
        if self._prepare is not None:
            prepare, self._prepare = self._prepare, None
            prepare()
        if not self.layers:
            return
        # Every blob downloads at once while the first ones are unpacked.
        self._fetching = self._prefetch(self.layers)
        try:
            if scope is not None:
                try:
                    self._fill_part(scope)
                    self.partial_fills += 1
                    return
                except _Whole:
                    log.debug("layer cache: %s cannot be filled apart; filling the whole "
                              "root", scope)
            applied = list(self._applied)
            for layer in self.layers:
                self._unpack(layer, (lambda e: not _relevant(_clean(e.name), applied))
                             if applied else None)
            self.layers, self._applied = [], []
            self.whole_fills += 1
        finally:
            for future in self._fetching.values():
                future.cancel()
            self._fetching = {}

    def fetch(self, digests: Collection[str]) -> None:
        """Bring the blobs ``digests`` name (those this root knows) into the store, several
        at a time; an output needs their bytes."""
        wanted = [self.sources[d] for d in digests if d in self.sources]
        futures = self._prefetch(wanted)
        try:
            for layer in wanted:
                self._fetch(layer, futures.get(id(layer)))
        finally:
            for future in futures.values():
                future.cancel()

    def _prefetch(self, layers: Sequence[PendingLayer]) -> dict[int, Future[None]]:
        missing = [layer for layer in layers if not self.store.has(layer.descriptor.digest)]
        if len(missing) < 2:
            return {}
        pool = ThreadPoolExecutor(max_workers=min(_FETCHERS, len(missing)),
                                  thread_name_prefix="kanipy-layer-fetch")
        futures = {id(layer): pool.submit(contextvars.copy_context().run, layer.fetch)
                   for layer in missing}
        pool.shutdown(wait=False)
        return futures

    def _fetch(self, layer: PendingLayer, future: Future[None] | None) -> None:
        try:
            if future is not None:
                future.result()
            else:
                layer.fetch()
        except CachedLayerLost:
            raise
        except Exception as exc:
            if layer.cached:
                raise CachedLayerLost(f"cached layer {layer.descriptor.digest}: {exc}") \
                    from exc
            raise

    def _fill_part(self, scope: list[str]) -> None:
        applied = list(self._applied)

        def select(entry: TarEntry) -> bool:
            path = _clean(entry.name)
            base = posixpath.basename(path)
            if base.startswith(WHITEOUT_PREFIX):
                parent = posixpath.dirname(path)
                hidden = parent if base == WHITEOUT_OPAQUE else \
                    posixpath.join(parent, base[len(WHITEOUT_PREFIX):])
                if _above(hidden, scope) or _above(hidden, applied):
                    raise _Whole()
                wanted = _relevant(hidden, scope) and not _relevant(hidden, applied)
                return wanted and path != ""
            in_scope = _relevant(path, scope)
            if entry.type == LNKTYPE:
                target = _clean(entry.linkname)
                if in_scope != _relevant(target, scope) or \
                        _relevant(path, applied) != _relevant(target, applied):
                    raise _Whole()
            if not in_scope or _relevant(path, applied):
                return False
            if entry.type == SYMTYPE:
                raise _Whole()  # a COPY through it would write elsewhere
            return True

        for layer in self.layers:
            self._unpack(layer, select)
        self._applied += [root for root in scope if root not in self._applied]

    def _unpack(self, layer: PendingLayer, select: Callable[[TarEntry], bool] | None) -> None:
        desc = layer.descriptor
        self._fetch(layer, self._fetching.pop(id(layer), None))
        what = f"layer {desc.digest}"
        try:
            with self.store.open(desc.digest) as fh:
                inner = open_decompressed(fh, mediatypes.layer_compression(desc.media_type),
                                          what)
                # A base layer's digest was checked as it arrived; a cached layer's
                # diff_id comes from the entry and is checked here, once.
                stream = _Hashing(inner) if layer.diff_id is not None else None
                extract_tar(self.rootfs, stream or inner, what=what, select=select)
                while stream is not None and stream.read(1 << 20):
                    pass
        except IntegrityError as exc:
            if layer.cached:
                raise CachedLayerLost(str(exc)) from exc
            raise
        if stream is not None and stream.digest() != str(layer.diff_id):
            raise CachedLayerLost(f"cached layer {desc.digest} does not decompress to its "
                                  f"diff_id {layer.diff_id}")
        layer.diff_id = None  # checked once; later parts read the same bytes


class FetchingImage(StoredImage):
    """An image whose layers may still be remote (mounted on push); a blob opened
    anyway (the registry refused the mount) is fetched first."""

    def __init__(self, image: StoredImage, root: PendingRoot) -> None:
        super().__init__(image.store, image.manifest())
        self._root = root

    def open_blob(self, descriptor: Descriptor) -> BinaryIO:
        if not self.store.has(descriptor.digest):
            try:
                self._root.fetch([str(descriptor.digest)])
            except CachedLayerLost as exc:
                raise FileNotFoundError(str(exc)) from exc
        return super().open_blob(descriptor)


class _Hashing:
    """A readable that hashes what passes through it (a layer's diff_id)."""

    def __init__(self, inner: Readable) -> None:
        self._inner = inner
        self._hash = hashlib.sha256()

    def read(self, n: int = -1, /) -> bytes:
        data = self._inner.read(n)
        self._hash.update(data)
        return data

    def digest(self) -> str:
        return f"sha256:{self._hash.hexdigest()}"


__all__ = ["CachedLayerLost", "FetchingImage", "PendingLayer", "PendingRoot", "step_scope"]
