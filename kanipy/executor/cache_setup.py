"""The layer cache from Kaniko's flags: which repository, which settings, per stage.

``--cache`` turns it on; ``--cache-repo`` names a registry repository or, as
``oci:PATH``, an OCI layout on disk, and defaults (as in Kaniko) to the first
destination's repository with ``/cache`` appended. Without a destination and
without ``--cache-repo`` there is nowhere to keep entries: a warning, and the
build runs without a cache.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from kanipy.dockerfile import Stage
from kanipy.errors import UsageError
from kanipy.executor.cache_root import PendingRoot
from kanipy.executor.options import BuildOptions
from kanipy.executor.stage import BuiltStage, LayerPolicy
from kanipy.fs.rootfs import Rootfs
from kanipy.oci.blobstore import BlobStore
from kanipy.reference import Reference
from kanipy.registry import RegistryClient

# The cache's own modules load only with --cache (issue 14: a build without it
# does not pay for their import).
if TYPE_CHECKING:
    from kanipy.executor.cache import LayerCache, StageCache
    from kanipy.executor.cache_store import CacheRepository

log = logging.getLogger(__name__)


def cache_repository(options: BuildOptions, destinations: list[Reference],
                     client: Callable[[], RegistryClient]) -> CacheRepository | None:
    """Where entries live, per ``--cache-repo``; None when there is nowhere."""
    from kanipy.executor.cache_store import LayoutCacheRepository, RegistryCacheRepository

    text = options.cache_repo
    if text and text.startswith("oci:"):
        return LayoutCacheRepository(Path(text[4:]).expanduser())
    if not text:
        if not destinations:
            log.warning("--cache: no --cache-repo and no --destination to put a cache "
                        "repository beside; the build runs without a layer cache")
            return None
        text = f"{destinations[0].registry}/{destinations[0].repository}/cache"
    try:
        ref = Reference.parse(text)
    except UsageError as exc:
        raise UsageError(f"--cache-repo {text!r}: {exc}") from None
    return RegistryCacheRepository(client(), ref)


def open_layer_cache(options: BuildOptions, destinations: list[Reference],
                     client: Callable[[], RegistryClient], store: BlobStore,
                     policy: LayerPolicy, filename: str) -> LayerCache | None:
    """The build's layer cache, or None without ``--cache``."""
    if not options.cache:
        return None
    from kanipy.executor.cache import DEFAULT_TTL_SECONDS, CacheSettings, LayerCache, parse_duration

    settings = CacheSettings(
        ttl_seconds=parse_duration(options.cache_ttl) if options.cache_ttl
        else DEFAULT_TTL_SECONDS,
        run_layers=options.cache_run_layers,
        copy_layers=options.cache_copy_layers,
        push=not options.no_push_cache,
    )
    repository = cache_repository(options, destinations, client)
    if repository is None:
        return None
    log.info("layer cache: %s", repository.name)
    # How layers are written: a cached layer is reused byte for byte, so a
    # different compression or time clamp must not hit.
    layer_settings = {
        "compression": policy.compression, "level": policy.level,
        "mtime_clamp": policy.mtime_clamp, "image_format": options.image_format,
        "ignore_paths": sorted(options.ignore_paths),
    }
    return LayerCache(repository, store, settings, layer_settings=layer_settings)


def stage_cache(cache: LayerCache | None, base: BuiltStage, stage: Stage,
                filename: str, *, hits: bool = True,
                given: Mapping[str, str] | None = None) -> StageCache | None:
    """The key chain of one stage, starting from its base; ``hits=False``: every step
    runs (a cached layer of the stage was lost), and makes its entry again."""
    if cache is None:
        return None
    from kanipy.executor.cache import StageCache

    if base.pending is None:
        base.pending = PendingRoot(Rootfs(base.root), cache.store)
    return StageCache(cache=cache, base_id=base.base_id, stage_label=stage.label,
                      dockerfile=filename, image_format=base.image_format,
                      platform=base.config.platform, root=base.pending, hits=hits,
                      given=dict(given or {}))


__all__ = ["cache_repository", "open_layer_cache", "stage_cache"]
