"""Where a stage starts, and the images COPY --from names.

A stage's base is an image pulled from a registry and unpacked into the
stage's root (each layer as soon as it arrives, while later ones download), a
copy of an earlier stage's finished root, or nothing (``scratch``).
``StageBases.image_root`` pulls and unpacks an image that ``COPY --from=IMAGE``
names, once per build, and gives its root.
"""

from __future__ import annotations

import logging
import subprocess
import tempfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from functools import partial
from pathlib import Path

from kanipy.dockerfile import Stage, StageRef
from kanipy.errors import (
    BuildError,
    ConnectionFailed,
    DockerfileError,
    PlatformNotFoundError,
    UsageError,
)
from kanipy.executor.cache_root import PendingLayer, PendingRoot
from kanipy.executor.progress import BuildReporter
from kanipy.executor.stage import BuiltStage
from kanipy.fs.diskspace import no_space_left
from kanipy.fs.rootfs import Rootfs
from kanipy.fs.unpack import unpack_layer
from kanipy.oci import mediatypes
from kanipy.oci.blobstore import BlobStore
from kanipy.oci.config import new_config
from kanipy.oci.descriptor import Descriptor, Platform
from kanipy.reference import Reference
from kanipy.registry import RegistryClient
from kanipy.registry.pull import check_platform, pull
from kanipy.registry.remote import RemoteImage

log = logging.getLogger(__name__)


class StageBases:
    """Gives each stage its starting root and config; pulls what it needs into ``store``.

    ``client`` is called for the registry client only when something is pulled,
    so a build from scratch or from earlier stages never makes one.
    ``image_format`` is ``--image-format`` (None when not given).
    ``platform_asked``: ``--custom-platform`` was given, so a base image for
    another platform is refused, as one under ``FROM --platform`` always is.
    """

    def __init__(
        self,
        *,
        client: Callable[[], RegistryClient],
        store: BlobStore,
        build_dir: Path,
        reporter: BuildReporter,
        target_platform: Platform,
        image_format: str | None,
        filename: str = "Dockerfile",
        platform_asked: bool = False,
    ) -> None:
        self._client = client
        self._store = store
        self._build_dir = build_dir
        self._reporter = reporter
        self._target_platform = target_platform
        self._image_format = image_format
        self._filename = filename
        self._platform_asked = platform_asked
        self._image_roots: dict[str, Path] = {}

    @property
    def image_roots(self) -> list[Path]:
        """The roots of the images COPY --from pulled so far."""
        return list(self._image_roots.values())

    def stage_base(self, stage: Stage, built: Mapping[int, BuiltStage], *, lazy: bool = False,
                   stage_root: Callable[[int], Path] | None = None) -> BuiltStage:
        """A new root for ``stage`` holding its base, with the base's config and layers.

        ``built`` holds the stages finished so far, by index. ``lazy`` (the layer
        cache): only the base's manifest and config are fetched now; the root is
        filled when a step has to run (``BuiltStage.pending``), through
        ``stage_root`` for an earlier stage's root.
        """
        root = self.stage_root_path(stage.index)
        root.mkdir()
        if isinstance(stage.base, StageRef):
            index = stage.base.index
            parent = built[index]
            source = stage_root or (lambda i: built[i].ensure_root())

            def copy() -> None:
                _copy_root(source(index), root)
            pending = None
            if lazy:
                pending = PendingRoot(Rootfs(root), self._store, copy)
                if parent.pending is not None:
                    pending.sources.update(parent.pending.sources)
            else:
                copy()
            return BuiltStage(stage.index, root, parent.config, list(parent.layers),
                              parent.image_format, dict(parent.layer_sources),
                              base_id=f"stage {parent.cache_key}", args=dict(parent.args),
                              pending=pending)
        platform = self._stage_platform(stage)
        if stage.base == "scratch":
            return BuiltStage(stage.index, root, new_config(platform), [],
                              self._image_format or "oci", base_id=f"scratch {platform}")
        if lazy:
            return self._manifest_of(str(stage.base), platform, root, stage)
        return self._pull_into(str(stage.base), platform, root, stage)

    def stage_root_path(self, index: int) -> Path:
        """Where the root of stage ``index`` is made."""
        return self._build_dir / f"stage-{index}"

    def image_root(self, text: str) -> Path:
        """The unpacked root of the image ``text`` names (COPY --from), pulled once per build."""
        if text not in self._image_roots:
            root = Path(tempfile.mkdtemp(prefix="from-image-", dir=self._build_dir))
            self._pull_into(text, self._target_platform, root, None)
            self._image_roots[text] = root
        return self._image_roots[text]

    def _stage_platform(self, stage: Stage) -> Platform:
        if stage.platform:
            try:
                return Platform.parse(stage.platform)
            except ValueError as exc:
                raise DockerfileError(f"FROM --platform: {exc}",
                                      stage.from_instruction.line, self._filename) from None
        return self._target_platform

    def _pull_into(self, text: str, platform: Platform, root: Path,
                   stage: Stage | None) -> BuiltStage:
        ref = self._parse(text, stage)
        rootfs = Rootfs(root)
        where = (f"pull of {ref} (FROM on {self._filename}:{stage.from_instruction.line})"
                 if stage is not None else f"pull of {ref} (--from)")
        # Each layer is unpacked as soon as it has arrived, while later ones download.
        with unreachable_hint(where):
            asked = self._platform_asked or (stage is not None and bool(stage.platform))
            try:
                image = pull(ref, client=self._client(), platform=platform, store=self._store,
                             on_progress=self._reporter.transfer,
                             on_layer=lambda desc: self._unpack(rootfs, desc, ref),
                             require_platform=asked)
            except PlatformNotFoundError as exc:
                # Still a usage error (exit 2), as for an index without the platform;
                # the message says which FROM asked.
                if stage is not None:
                    exc.message = f"{where}: {exc.message}"
                    exc.args = (exc.message,)
                raise
        manifest = image.manifest()
        image_format = "docker" if manifest.media_type == mediatypes.DOCKER_MANIFEST else "oci"
        sources = {str(d.digest): (image.source.registry, image.source.repository)
                   for d in manifest.layers}
        return BuiltStage(stage.index if stage else -1, root, image.config(),
                          list(manifest.layers), image_format, sources,
                          base_id=f"{manifest.digest} {platform}")

    def _manifest_of(self, text: str, platform: Platform, root: Path,
                     stage: Stage) -> BuiltStage:
        """The base ``text`` names, its manifest and config fetched and its layers left
        pending: a stage whose steps all hit never downloads them."""
        ref = self._parse(text, stage)
        where = f"pull of {ref} (FROM on {self._filename}:{stage.from_instruction.line})"
        with unreachable_hint(where):
            asked = self._platform_asked or bool(stage.platform)
            try:
                lazy = pull(ref, client=self._client(), platform=platform,
                            require_platform=asked)
            except PlatformNotFoundError as exc:
                exc.message = f"{where}: {exc.message}"
                exc.args = (exc.message,)
                raise
            # The same image, its blobs fetched into the store when they are opened.
            image = RemoteImage(lazy.client, lazy.reference, lazy.manifest(),
                                source=lazy.source, index=lazy.index, platform=lazy.platform,
                                store=self._store, on_progress=self._reporter.transfer)
            if not asked:
                check_platform(image, platform, ref, False)
            config = image.config()
        manifest = image.manifest()
        image_format = "docker" if manifest.media_type == mediatypes.DOCKER_MANIFEST else "oci"
        sources = {str(d.digest): (image.source.registry, image.source.repository)
                   for d in manifest.layers}
        pending = PendingRoot(Rootfs(root), self._store)
        for desc in manifest.layers:
            pending.add(PendingLayer(desc, partial(_fetch_blob, image, desc, where)))
        return BuiltStage(stage.index, root, config, list(manifest.layers), image_format,
                          sources, base_id=f"{manifest.digest} {platform}", pending=pending)

    def _parse(self, text: str, stage: Stage | None) -> Reference:
        try:
            return Reference.parse(text)
        except UsageError as exc:
            if stage is None:
                raise
            raise DockerfileError(f"FROM {text}: {exc}", stage.from_instruction.line,
                                  self._filename) from None

    def _unpack(self, rootfs: Rootfs, layer: Descriptor, ref: Reference) -> None:
        # The room a layer takes unpacked is not recorded anywhere; gzip shrinks
        # a filesystem's files about threefold, hence the estimate.
        with no_space_left(rootfs.path, f"unpacking layer {layer.digest} of {ref}",
                           needs=3 * layer.size), self._store.open(layer.digest) as fh:
            unpack_layer(rootfs, fh, compression=mediatypes.layer_compression(layer.media_type),
                         layer_name=str(layer.digest))


def _fetch_blob(image: RemoteImage, desc: Descriptor, where: str) -> None:
    with unreachable_hint(where):
        image.open_blob(desc).close()


@contextmanager
def unreachable_hint(doing: str) -> Iterator[None]:
    """Say what was being done when a registry could not be reached, and what to try.

    The registry client's connection errors name the host and the reason; only
    the build knows whether it was the push check or which FROM's pull.
    """
    try:
        yield
    except ConnectionFailed as exc:
        hint = ""
        if not (exc.tls_untrusted or exc.tls_client_cert):
            hint = ("; check the registry address and that it is running (a plain-HTTP "
                    "registry needs --insecure-registry HOST:PORT)")
        exc.message = f"{doing} failed: {exc.message}{hint}"
        exc.args = (exc.message,)
        raise


def _copy_root(source: Path, target: Path) -> None:
    """A stage built FROM an earlier one starts from a copy of that stage's finished root.

    GNU ``cp -a`` keeps owners, modes, times, hardlinks, device nodes and xattrs,
    and is several times faster than unpacking the parent's layers again.
    """
    proc = subprocess.run(["cp", "-a", "--reflink=auto", f"{source}/.", str(target)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise BuildError(f"could not copy the root of the earlier stage: {proc.stderr.strip()}")
