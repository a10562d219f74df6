"""The stage loop: base image, instructions in order, a layer per changing step.

For each stage: unpack the base (an image, an earlier stage, or nothing) into
a root directory, run the base image's ONBUILD triggers, then expand each
instruction with the stage's state and hand it to its handler. What the
handler changed becomes a layer: RUN by diffing lstat snapshots of the whole
tree, COPY/ADD/WORKDIR by archiving the paths they touched (docs/architecture.md,
decision 3). The handler table's entry says which (``StepKind``); the loop
itself knows no instruction.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from kanipy.dockerfile import (
    BuildPlan,
    Instruction,
    Stage,
    StageScope,
    parse_instructions,
)
from kanipy.errors import DockerfileError
from kanipy.executor.cache_root import PendingRoot, step_scope
from kanipy.executor.handlers import HANDLERS
from kanipy.executor.progress import BuildReporter, StepInfo, StepSummary
from kanipy.executor.runner import SCAFFOLDING
from kanipy.executor.step import StageContext, StageState, StepError, StepKind, StepRule
from kanipy.fs.layer import write_layer
from kanipy.fs.rootfs import Rootfs
from kanipy.fs.snapshot import Changes, Snapshot, changes_for_paths, diff, take_snapshot
from kanipy.http import redact_urls_in
from kanipy.oci import mediatypes
from kanipy.oci.blobstore import BlobStore
from kanipy.oci.config import HistoryEntry, ImageConfig
from kanipy.oci.descriptor import Descriptor
from kanipy.oci.digest import Digest

# The layer cache loads only with --cache (kanipy.executor.cache_setup).
if TYPE_CHECKING:
    from kanipy.executor.cache import HitResult, StageCache

log = logging.getLogger(__name__)


@dataclass
class BuiltStage:
    """A finished stage: its root on disk, its config and its layers (in the store)."""

    index: int
    root: Path
    config: ImageConfig
    layers: list[Descriptor]
    image_format: str  # "oci" | "docker"
    # Layer digest -> repository it was pulled from (for cross-repository mounts).
    layer_sources: dict[str, tuple[str, str]] = field(default_factory=dict)
    # What the layer cache keys the first step on (issue 10): the base image's
    # manifest digest and platform, or an earlier stage's last cache key.
    base_id: str = ""
    cache_key: str = ""  # the layer cache's key after this stage's last step
    # The ARGs the stage declared, with their values: a stage built FROM this one
    # inherits them (issue 12).
    args: Mapping[str, str | None] = field(default_factory=dict)
    # With --cache: the layers ``root`` still lacks (a base not unpacked yet, cached
    # layers); ``ensure_root`` applies them. None: the root is complete.
    pending: PendingRoot | None = None

    def ensure_root(self) -> Path:
        """The root, with every layer applied (for a later stage that reads it)."""
        if self.pending is not None:
            self.pending.fill()
        return self.root


@dataclass
class LayerPolicy:
    """How new layers are written: compression, media types, time clamping."""

    compression: str
    level: int | None
    mtime_clamp: int | None
    created: str
    # zstd on every CPU (-1) or on one (0): builds that promise a digest use one,
    # as multi-threaded zstd writes other bytes (issue 14).
    zstd_threads: int = 0

    def media_type(self, image_format: str) -> str:
        return mediatypes.layer_media_type(image_format, self.compression)


class StageBuilder:
    """Runs one stage's instructions on a root that already holds its base."""

    def __init__(
        self,
        *,
        plan: BuildPlan,
        stage: Stage,
        number: int,
        count: int,
        base: BuiltStage,
        ctx_factory: Callable[[Rootfs, Callable[[bytes], None]], StageContext],
        store: BlobStore,
        policy: LayerPolicy,
        reporter: BuildReporter,
        single_snapshot: bool,
        base_seconds: float = 0.0,
        handlers: Mapping[str, StepRule] = HANDLERS,
        ignore_paths: frozenset[str] = frozenset(),
        cache: StageCache | None = None,
        in_image: bool = True,
        on_layer: Callable[[Descriptor], None] | None = None,
    ) -> None:
        self.plan = plan
        self.stage = stage
        self.number = number
        self.count = count
        self.base = base
        self.ctx_factory = ctx_factory
        self.store = store
        self.policy = policy
        self.reporter = reporter
        self.single_snapshot = single_snapshot
        self.base_seconds = base_seconds
        self.handlers = handlers
        # --ignore-path: image paths left out of every layer, like the runner's
        # scaffolding (never walked, never archived, never reported deleted).
        self.ignore_paths = ignore_paths
        self.summaries: list[StepSummary] = []
        # The layer cache (issue 10); None without --cache or with --single-snapshot.
        self.cache = None if single_snapshot else cache
        # A stage whose layers reach no image (one that later stages only copy from,
        # issue 14) makes none: no snapshot walk, no tar, no compression. Its root is
        # what later stages read. The layer cache stores layers, so with it every
        # stage makes them as before.
        self.make_layers = in_image or self.cache is not None
        # Handed each layer this stage writes that will be in the image, as soon as it
        # is in the store (issue 14: the engine uploads it while later steps run).
        self.on_layer = on_layer if in_image else None

    def build(self) -> BuiltStage:
        base = self.base
        rootfs = Rootfs(base.root)
        if self.cache is None:
            base.ensure_root()  # without the cache every step runs on the whole root
        config = base.config
        instructions: list[Instruction] = list(self.stage.instructions)
        triggers = config.on_build
        if triggers:
            # Docker runs the base image's ONBUILD triggers first, then clears
            # them from the new image.
            instructions = parse_instructions(
                triggers, self.plan.filename, escape=self.plan.escape,
                line=self.stage.from_instruction.line,
            ) + instructions
            config = config.with_config(on_build=None)
        state = StageState.initial(config, self.plan.build_args, base.args)
        layers = list(base.layers)
        step_info: StepInfo | None = None

        def on_output(line: bytes) -> None:
            if step_info is not None:
                self.reporter.step_output(step_info, line)

        ctx = self.ctx_factory(rootfs, on_output)
        scaffolding = frozenset(SCAFFOLDING) | self.ignore_paths
        snapshot: Snapshot | None = None
        first_snapshot: Snapshot | None = None
        if self.single_snapshot:
            first_snapshot = take_snapshot(rootfs.path, scaffolding)

        # FROM is step 1, as buildah and Docker's classic builder count
        # (``STEP 1/5: FROM base``); its time is the pull and unpack.
        steps = len(instructions) + 1
        frm = expand_instruction(self.plan, self.stage, self.stage.from_instruction, state)
        from_info = StepInfo(self.number, self.count, self.stage.name, 1, steps,
                             step_text(self.stage.from_instruction), frm.line)
        self.reporter.step_started(from_info)
        self.summaries.append(StepSummary(from_info, self.base_seconds, None))
        self.reporter.step_finished(self.summaries[-1])

        for number, ins in enumerate(instructions, start=2):
            resolved = expand_instruction(self.plan, self.stage, ins, state)
            step_info = StepInfo(self.number, self.count, self.stage.name, number,
                                 steps, step_text(ins), resolved.line)
            self.reporter.step_started(step_info)
            started = time.monotonic()
            rule = self.handlers.get(resolved.keyword)
            if rule is None:
                raise DockerfileError(f"{resolved.keyword} cannot be used here",
                                      resolved.line, self.plan.filename)
            # -- layer cache hook: a hit's layer stands for the step (kanipy.executor.cache)
            lookup = None
            if self.cache is not None:
                lookup = self.cache.lookup(resolved, state, ctx, rule.kind, number)
            if self.cache is not None and lookup is not None and lookup.hit is not None:
                hit = self.cache.apply_hit(lookup, resolved, state)
                if hit is not None:
                    state, layers = _with_cached_step(hit, layers)
                    snapshot = None  # stale once the hit's layer is unpacked
                    summary = StepSummary(step_info, time.monotonic() - started,
                                          hit.layer.size if hit.layer else None,
                                          layer_digest=hit.layer.digest if hit.layer else None,
                                          cached=True)
                    self.summaries.append(summary)
                    self.reporter.step_finished(summary)
                    step_info = None
                    continue
                lookup.hit = None
            if lookup is not None and lookup.reason and (lookup.stores or lookup.key is None):
                log.info("%s %s: cache miss — %s", step_info.label, step_info.text,
                         lookup.reason, extra={"fields": {
                             "cache": "miss", "reason": lookup.reason,
                             "step": step_info.step_number, "line": step_info.line}})
            if self.cache is not None and rule.kind is not StepKind.METADATA:
                # The base and earlier hits into the root, before any snapshot: only
                # under the paths of a COPY/WORKDIR when no RUN follows (a RUN needs
                # all of it, and one pass over the layers is cheaper than two).
                later = [self.handlers.get(i.keyword) for i in instructions[number - 1:]]
                whole = any(r is not None and r.kind is StepKind.TREE for r in later)
                self.cache.flush(rootfs, None if whole else
                                 step_scope(resolved, state, rule.kind))
            # -- end of the layer cache hook
            if rule.kind.snapshot_before and snapshot is None and not self.single_snapshot \
                    and self.make_layers:
                snapshot = take_snapshot(rootfs.path, scaffolding)
            try:
                result = rule.handler(resolved, state, ctx)
            except StepError as exc:
                raise exc.located(self.plan.filename, resolved.line) from exc
            changes = Changes()
            excluded = scaffolding | frozenset(str(p) for p in result.excluded)
            if self.single_snapshot or not self.make_layers:
                pass
            elif result.changed is None:
                if snapshot is None:
                    raise RuntimeError(f"the {resolved.keyword} handler asks for a tree diff "
                                       "but its table entry is not a tree step")
                after = take_snapshot(rootfs.path, excluded)
                changes = diff(snapshot, after, excluded)
                snapshot = after
            elif result.changed:
                changes = changes_for_paths(rootfs.path, sorted(result.changed), excluded)
                snapshot = None  # stale: retaken before the next tree step

            new_config = result.state.config
            created_by = result.created_by
            entry = HistoryEntry(created=self.policy.created, created_by=created_by or "")
            layer_size: int | None = None
            layer_digest: Digest | None = None
            if not changes.is_empty:
                blob = write_layer(
                    rootfs.path, changes, self.store,
                    compression=self.policy.compression, level=self.policy.level,
                    media_type=self.policy.media_type(base.image_format),
                    mtime_clamp=self.policy.mtime_clamp,
                    zstd_threads=self.policy.zstd_threads,
                )
                if blob is not None:
                    layers.append(blob.descriptor)
                    new_config = new_config.with_layer(blob.diff_id, entry)
                    layer_size = blob.descriptor.size
                    layer_digest = blob.descriptor.digest
                    if self.on_layer is not None:
                        self.on_layer(blob.descriptor)
            if layer_size is None and created_by:
                new_config = new_config.with_history(entry)
            state = dataclasses.replace(result.state, config=new_config)
            if lookup is not None and self.cache is not None:  # layer cache hook
                self.cache.finish(lookup, resolved,
                                  layers[-1] if layer_digest is not None else None,
                                  new_config.diff_ids[-1] if layer_digest is not None else None,
                                  entry if created_by else None)
            summary = StepSummary(step_info, time.monotonic() - started, layer_size,
                                  layer_digest=layer_digest, cached=False)
            self.summaries.append(summary)
            self.reporter.step_finished(summary)
            step_info = None

        config = state.config
        if self.single_snapshot and first_snapshot is not None:
            changes = diff(first_snapshot, take_snapshot(rootfs.path, scaffolding))
            blob = write_layer(
                rootfs.path, changes, self.store, compression=self.policy.compression,
                level=self.policy.level, media_type=self.policy.media_type(base.image_format),
                mtime_clamp=self.policy.mtime_clamp, zstd_threads=self.policy.zstd_threads,
            )
            if blob is not None:
                layers.append(blob.descriptor)
                if self.on_layer is not None:
                    self.on_layer(blob.descriptor)
                config = _single_layer_history(config, len(base.config.history),
                                               blob.diff_id, self.policy.created)
        sources = dict(base.layer_sources)
        if self.cache is not None:  # layer cache hook: cached layers mount from the cache
            sources.update(self.cache.layer_sources)
        # What the root still lacks is applied only if a later stage reads it (FROM,
        # COPY --from): a fully cached stage nothing reads is never unpacked.
        return BuiltStage(self.stage.index, rootfs.path, config, layers, base.image_format,
                          sources, cache_key=self.cache.chain if self.cache else "",
                          args=dict(state.args), pending=base.pending)


def _with_cached_step(hit: HitResult, layers: list[Descriptor]
                      ) -> tuple[StageState, list[Descriptor]]:
    """The state and layers after a step the layer cache supplied."""
    config = hit.state.config
    if hit.layer is not None and hit.diff_id is not None:
        config = config.with_layer(hit.diff_id, hit.history or HistoryEntry(created_by=""))
        layers = [*layers, hit.layer]
    elif hit.history is not None:
        config = config.with_history(hit.history)
    return dataclasses.replace(hit.state, config=config), layers


def step_text(ins: Instruction) -> str:
    """What a step line and the summary show: the instruction as written in the
    Dockerfile (its first line), as buildah shows it, never expanded, so that a
    ``--build-arg`` value (a token) does not reach the log through ``ARG NAME`` or a
    word that names it; credentials in a URL are masked. The history keeps what Docker
    writes there."""
    return redact_urls_in(ins.original.split("\n")[0])


def expand_instruction(plan: BuildPlan, stage: Stage, ins: Instruction, state: StageState
                       ) -> Instruction:
    """``ins`` with its words expanded from ``state`` (its ARGs and Env) per Docker's
    rules; the state itself changes only through the handlers (ARG, ENV)."""
    scope = StageScope(plan, stage, list(state.config.env))
    scope.args = dict(state.args)
    return scope.resolve(ins)


def _single_layer_history(config: ImageConfig, base_entries: int, diff_id: Digest,
                          created: str) -> ImageConfig:
    """--single-snapshot: the stage's steps share one layer, recorded on the last entry."""
    doc = config.to_json()
    history = doc.get("history") or []
    own = history[base_entries:]
    if own:
        own[-1].pop("empty_layer", None)
    else:
        own.append({"created": created, "created_by": "kanipy single snapshot"})
    doc["history"] = history[:base_entries] + own
    rootfs = doc.setdefault("rootfs", {"type": "layers", "diff_ids": []})
    rootfs["diff_ids"] = [*rootfs.get("diff_ids", []), str(diff_id)]
    return ImageConfig(doc)


__all__ = ["BuiltStage", "LayerPolicy", "StageBuilder", "expand_instruction", "step_text"]
