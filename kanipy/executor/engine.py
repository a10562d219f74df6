"""One build from start to finish: context, plan, stages, image, outputs.

``run_build`` is what ``kanipy build`` calls. It checks every destination
before any work (a denied push fails in a second, not after a long build),
builds the needed stages in dependency order (their bases come from
``bases``), assembles the image in the blob store, validates it, and only then
writes outputs (``outputs``): registries (manifest last), a ``docker load``
tarball, an OCI layout, digest files. A failed build writes nothing anywhere.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from kanipy.context import BuildContext, open_context
from kanipy.context.dockerfile import dockerfile_in_context
from kanipy.dockerfile import BuildPlan, Stage, StageRef, format_plan, plan_build
from kanipy.errors import BuildError, DockerfileError, KanipyError, UsageError
from kanipy.executor import outputs, preflight, workdirs
from kanipy.executor.bases import StageBases, unreachable_hint
from kanipy.executor.cache_root import CachedLayerLost, FetchingImage
from kanipy.executor.cache_setup import open_layer_cache, stage_cache
from kanipy.executor.early_push import EarlyPush
from kanipy.executor.handlers.run import run_cache_root
from kanipy.executor.options import BuildOptions, host_platform
from kanipy.executor.progress import BuildReporter, StepSummary
from kanipy.executor.remover import remove_tree
from kanipy.executor.runner import ChrootRunner, Runner
from kanipy.executor.sandbox_caps import require_build_privileges
from kanipy.executor.stage import BuiltStage, LayerPolicy, StageBuilder
from kanipy.executor.stagejobs import (
    StageEvents,
    StageRunner,
    StagesStopped,
    current_stage,
    overlap_possible,
    stage_jobs,
)
from kanipy.executor.step import StageContext, StageNames
from kanipy.fs.diskspace import no_space_left, room_taken_since
from kanipy.fs.rootfs import Rootfs
from kanipy.oci import mediatypes
from kanipy.oci.blobstore import BlobStore
from kanipy.oci.descriptor import Descriptor
from kanipy.oci.digest import Digest
from kanipy.oci.image import StoredImage, store_image, validate_image
from kanipy.reference import Reference
from kanipy.registry import RegistryClient, RegistryOptions

if TYPE_CHECKING:  # loaded with --cache only (kanipy.executor.cache_setup)
    from kanipy.executor.cache import LayerCache

log = logging.getLogger(__name__)


@dataclass
class BuildResult:
    """What a build produced; ``stdout_lines`` is the machine output (``name@digest``)."""

    image: StoredImage | None = None
    digest: str | None = None
    pushed: list[str] = field(default_factory=list)
    stdout_lines: list[str] = field(default_factory=list)
    summaries: list[StepSummary] = field(default_factory=list)


def registry_options(options: BuildOptions) -> RegistryOptions:
    """Kaniko's transport flags as registry client options, scoped as Kaniko scopes them.

    Plain HTTP: ``--insecure`` for pushes, ``--insecure-pull`` for pulls,
    ``--insecure-registry`` for both (Kaniko's push.go and remote.go).
    Unverified TLS: ``--skip-tls-verify-pull`` for pulls, ``--skip-tls-verify``
    for pushes, ``--skip-tls-verify-registry`` for both, as Kaniko documents
    them (issue 12): a switch given for the push never weakens the pull of a
    base image. (Kaniko's own transport lets ``--skip-tls-verify`` reach pulls.)
    """
    for host, path in options.registry_certificates:
        if not Path(path).is_file():
            raise UsageError(f"--registry-certificate {host}={path}: {path} is not a file; "
                             "name the PEM file of the CA that signed the registry's "
                             "certificate")
    for host, *files in options.registry_client_certs:
        for path in files:
            if not Path(path).is_file():
                raise UsageError(f"--registry-client-cert {host}: {path} is not a file")
    return RegistryOptions(
        insecure_registries=frozenset(options.insecure_registries),
        insecure_pull=options.insecure_pull,
        insecure_push=options.insecure,
        skip_tls_verify_pull=options.skip_tls_verify_pull,
        skip_tls_verify_push=options.skip_tls_verify,
        skip_tls_verify_registries=frozenset(options.skip_tls_verify_registries),
        registry_certificates=dict(options.registry_certificates),
        client_certificates={host: (cert, key)
                             for host, cert, key in options.registry_client_certs},
        mirrors=tuple(options.registry_mirrors),
        registry_maps=tuple(options.registry_maps),
        skip_default_registry_fallback=options.skip_default_registry_fallback,
        retries=options.push_retry,
        pull_retries=options.image_download_retry,
        docker_config_dir=Path(options.env["DOCKER_CONFIG"])
        if options.env.get("DOCKER_CONFIG") else None,
    )


def _destinations(options: BuildOptions) -> list[Reference]:
    """Every --destination parsed; each must name a tag, which the push moves.

    A digest names content, and the built image's digest is not known until
    the build ends: the registry would refuse the manifest after the whole
    build (issue 11), so refuse it before any work.
    """
    refs = []
    for text in options.destinations:
        ref = Reference.parse(text)
        if ref.digest is not None:
            raise UsageError(f"--destination {text}: a destination names a tag, not a digest "
                             f"(the image's digest is known only once it is built); "
                             f"use {ref.name}:TAG")
        refs.append(ref)
    return refs


def _check_output_paths(options: BuildOptions) -> list[Path]:
    """Every output path checked before the build (``preflight``); the directories made."""
    made: list[Path] = []
    files = [(options.tar_path, "--tar-path"), (options.digest_file, "--digest-file"),
             (options.image_name_with_digest_file, "--image-name-with-digest-file"),
             (options.image_name_tag_with_digest_file, "--image-name-tag-with-digest-file")]
    for path, flag in files:
        if path is not None:
            made += preflight.check_output_file(Path(path), flag)
    if options.oci_layout_path is not None:
        made += preflight.prepare_directory(Path(options.oci_layout_path),
                                            "--oci-layout-path")
    if options.builder_output is not None and not options.no_push:
        made += preflight.prepare_directory(Path(options.builder_output), "BUILDER_OUTPUT")
    return made


def _source_date_epoch(options: BuildOptions) -> int | None:
    value = options.env.get("SOURCE_DATE_EPOCH")
    if value is None or value == "":
        return 0 if options.reproducible else None
    try:
        return int(value)
    except ValueError:
        raise UsageError(f"SOURCE_DATE_EPOCH={value!r} is not a whole number of seconds") \
            from None


def _compression_level(options: BuildOptions) -> int | None:
    """``--compression-level``, checked against what the compressor accepts.

    gzip (zlib) takes 1-9 (Kaniko passes 0-9 to Go's gzip; 0, "store", makes
    no sense for layers), zstd 1-22. None leaves the pinned default.
    """
    level = options.compression_level
    if level is None:
        return None
    top = 9 if options.compression == "gzip" else 22
    if not 1 <= level <= top:
        raise UsageError(f"--compression-level {level}: {options.compression} levels "
                         f"are 1 to {top}")
    return level


def _rfc3339(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _read_secrets(options: BuildOptions) -> dict[str, bytes]:
    secrets: dict[str, bytes] = {}
    for secret_id, kind, value in options.secrets:
        if kind == "src":
            try:
                secrets[secret_id] = Path(value).expanduser().read_bytes()
            except OSError as exc:
                raise UsageError(f"--secret id={secret_id}: cannot read {value}: "
                                 f"{exc.strerror}") from None
        else:
            if value not in options.env:
                raise UsageError(f"--secret id={secret_id}: environment variable {value} "
                                 "is not set")
            secrets[secret_id] = options.env[value].encode()
    return secrets


class Build:
    """The state of one build; ``run()`` does it."""

    def __init__(self, options: BuildOptions, reporter: BuildReporter,
                 runner: Runner | None = None) -> None:
        self.options = options
        self.reporter = reporter
        self.stages: dict[int, BuiltStage] = {}
        self.summaries: list[StepSummary] = []
        self.secrets: dict[str, bytes] = {}
        self.runner: Runner = runner or ChrootRunner()
        # Made by _run once the store and the Dockerfile's name are known.
        self.bases: StageBases | None = None
        self._client: RegistryClient | None = None
        self._cleaner: threading.Thread | None = None  # removes the roots during the push
        self._cleaner_stop = threading.Event()
        # Layer uploads while the build goes on (issue 14); made by _run once the
        # push-permission check is under way, None when nothing is pushed early.
        self._early: EarlyPush | None = None
        self.filename = "Dockerfile"
        self.cache: LayerCache | None = None  # the layer cache (issue 10), made by _run
        # Builds a stage again without cache hits (a cached layer was lost), by index.
        self._rebuild: Callable[[int], BuiltStage] = lambda index: self.stages[index]
        # Stages may be built at the same time (--jobs, kanipy.executor.stagejobs):
        # ``_lock`` guards ``stages``, ``summaries`` and the client; a stage's root
        # is filled (a lazy root, issue 10) under a lock of its own.
        self._lock = threading.RLock()
        self._root_locks: dict[int, threading.RLock] = {}
        self._pull_locks: dict[str, threading.Lock] = {}  # by base image (``_pulling``)
        self._built: dict[int, threading.Event] = {}
        self._events = StageEvents(reporter)
        self._stage_runner: StageRunner | None = None

    @property
    def client(self) -> RegistryClient:
        with self._lock:
            if self._client is None:
                self._client = RegistryClient(registry_options(self.options))
            return self._client

    def run(self) -> BuildResult:
        options = self.options
        destinations = _destinations(options)
        own_workdir = options.kanipy_dir is None
        if not own_workdir:
            preflight.prepare_directory(Path(options.kanipy_dir or ""), "--kanipy-dir")
        if options.cache_dir is not None:
            preflight.prepare_directory(Path(options.cache_dir), "--cache-dir")
        made_for_outputs = [] if options.dry_run else _check_output_paths(options)
        workdir = Path(tempfile.mkdtemp(prefix="kanipy-")) if own_workdir else \
            Path(options.kanipy_dir or "")
        build_dir = Path(tempfile.mkdtemp(prefix="build-", dir=workdir))
        # Held until the process ends: a later build removes what a killed one left.
        lock = workdirs.WorkdirLock(workdir if own_workdir else build_dir)
        # The directory kanipy made under $TMPDIR goes whole; in --kanipy-dir (the
        # user's) only this build's own build-*. Its siblings are what killed builds left.
        tree, prefix = (workdir, "kanipy-") if own_workdir else (build_dir, "build-")
        sweeper = workdirs.sweep(tree.parent, prefix)
        succeeded = False
        try:
            result = self._run(destinations, build_dir)
            succeeded = True
            return result
        except BaseException:
            if self._early is not None:  # uploads under way stop; no manifest goes up
                self._early.abandon()
            if self.cache is not None:  # layer cache hook: a failed build waits little
                self.cache.close(abandon=True)
            preflight.remove_created(made_for_outputs)
            raise
        finally:
            if self.cache is not None:  # layer cache hook: entries still being pushed
                self.cache.close()
            handed_over = False
            try:
                self._stop_cleaner()
                if succeeded and not options.cleanup:
                    # Nothing is left to do but remove the tree (issue 14): a detached
                    # process does it, holding the lock, and finishes the sweep.
                    if sweeper is not None:
                        sweeper.stop()
                    handed_over = lock.hand_over(tree.parent, prefix) is not None
            finally:
                try:
                    if not handed_over:
                        _remove_work_dir(tree)
                finally:
                    lock.release()
                    if sweeper is not None and not handed_over:  # a killed build's remains
                        sweeper.join()

    def _stop_cleaner(self) -> None:
        """Stop removing the roots at the next entry: the rest of the removal, the roots'
        remains included, is done in one place (here or in the detached remover)."""
        self._cleaner_stop.set()
        if self._cleaner is not None:
            self._cleaner.join()

    def _run(self, destinations: list[Reference], build_dir: Path) -> BuildResult:
        options = self.options
        context, dockerfile_path = open_context(
            options.context, build_dir, options.dockerfile, options.context_sub_path,
            env=options.env)
        text = _read_dockerfile(dockerfile_in_context(context.root, dockerfile_path))
        self.filename = dockerfile_path.name
        build_args = {}
        for key, value in options.build_args:
            if value is None:
                value = options.env.get(key)
                if value is None:
                    continue
            build_args[key] = value
        plan = plan_build(
            text, filename=dockerfile_path.name, build_args=build_args,
            target=options.target, target_platform=options.target_platform,
            build_platform=host_platform(),
        )
        for name in plan.unused_build_args:
            log.warning("--build-arg %s was not consumed by any ARG in %s", name,
                        dockerfile_path.name)
        if options.dry_run:
            return BuildResult(stdout_lines=[format_plan(plan, None).rstrip("\n")])
        require_build_privileges()
        if options.compression == "zstd" and options.image_format == "docker":
            raise UsageError("--compression zstd needs OCI media types: Docker schema 2 has no "
                             "zstd layer type; drop --image-format docker or use gzip")
        push_check: _PushCheck | None = None  # started with the first stage's pull

        # The per-build store goes with the work directory at the end of the
        # build: its blobs need no fsync (a --cache-dir outlives the build: they do).
        store = (BlobStore(options.cache_dir) if options.cache_dir
                 else BlobStore(build_dir / "blobs", durable=False))
        epoch = _source_date_epoch(options)
        policy = LayerPolicy(
            compression=options.compression,
            level=_compression_level(options),
            mtime_clamp=epoch,
            created=_rfc3339(epoch if epoch is not None else time.time()),
            # --reproducible and SOURCE_DATE_EPOCH promise the same digest: one thread.
            zstd_threads=0 if epoch is not None else -1,
        )
        self.secrets = _read_secrets(options)
        bases = self.bases = StageBases(
            client=lambda: self.client, store=store, build_dir=build_dir,
            reporter=self._events, target_platform=options.target_platform,
            image_format=options.image_format, filename=self.filename,
            platform_asked=options.custom_platform is not None,
        )
        self.cache = open_layer_cache(options, destinations, lambda: self.client, store,
                                      policy, self.filename)
        count = len(plan.stages)
        in_image = _stages_in_image(plan)

        def build_stage(number: int, stage: Stage, hits: bool = True) -> BuiltStage:
            # Log records name the stage they come from (the JSON log's "stage").
            token = current_stage.set(number)
            try:
                return build_stage_now(number, stage, hits)
            finally:
                current_stage.reset(token)

        def build_stage_now(number: int, stage: Stage, hits: bool) -> BuiltStage:
            self._events.stage_started(number, count, stage.name, _base_text(stage, plan))
            started = time.monotonic()
            single = options.single_snapshot and stage is plan.stages[-1]
            with no_space_left([build_dir, store.root],
                               f"pulling and unpacking the base of stage {number}",
                               needs=room_taken_since([build_dir, store.root])):
                # layer cache hook: with the cache, the base is unpacked only when needed
                try:
                    with self._pulling(stage):
                        base = bases.stage_base(stage, self.stages,
                                                lazy=self.cache is not None and not single,
                                                stage_root=self._stage_root)
                except Exception:
                    # A refused push is what the user hears of first (a signal is
                    # not waited on: the check may be what stalls).
                    if push_check is not None:
                        push_check.result()
                    raise
            if push_check is not None:
                push_check.result()  # before the first step that runs anything
            builder = StageBuilder(
                plan=plan, stage=stage, number=number, count=count, base=base,
                ctx_factory=self._ctx_factory(plan, stage, context, build_dir, store),
                store=store, policy=policy, reporter=self._events,
                single_snapshot=single,
                base_seconds=time.monotonic() - started,
                ignore_paths=frozenset(options.ignore_paths),
                cache=stage_cache(self.cache, base, stage, self.filename, hits=hits,
                                  given=plan.build_args),
                in_image=stage.index in in_image,
                on_layer=self._early.offer if self._early is not None else None,
            )
            with no_space_left([build_dir, store.root],
                               f"building stage {number} (its root and its layers)",
                               needs=room_taken_since([build_dir, store.root])):
                built = builder.build()
            with self._lock:
                # In stage order whatever order the stages finished in (a stage
                # built again after a lost cached layer replaces its own steps).
                summaries = [s for s in self.summaries if s.step.stage_number != number]
                self.summaries = sorted(summaries + builder.summaries,
                                        key=lambda s: s.step.stage_number)
                self.stages[stage.index] = built
                self._built.setdefault(stage.index, threading.Event()).set()
            return built

        numbered = {stage.index: (number, stage)
                    for number, stage in enumerate(plan.stages, start=1)}
        self._rebuild = lambda index: build_stage(*numbered[index], hits=False)
        if not options.no_push and not options.skip_push_permission_check and destinations:
            push_check = _PushCheck(self.client, destinations)
            # Layers go up as they are made, once the check passed (it is waited for
            # before any step runs, so before any layer exists).
            self._early = EarlyPush(self.client, destinations, store, self._events.transfer)

        def build_one(number: int, stage: Stage) -> None:
            try:
                build_stage(number, stage)
            except CachedLayerLost as exc:  # layer cache hook: build it again, uncached
                self._without_hits(stage.index, exc)

        jobs = stage_jobs(options.jobs)
        if jobs == 1 or not overlap_possible(plan.stages):
            for number, stage in enumerate(plan.stages, start=1):
                build_one(number, stage)
        else:
            self._build_at_once(plan, build_one, jobs)

        final = self.stages[plan.stages[-1].index]
        remote: frozenset[Digest] = frozenset()
        if self.cache is not None:  # layer cache hook: only the blobs outputs need
            try:
                remote = self._blobs_for_outputs(final, destinations, store)
            except CachedLayerLost as exc:
                final = self._without_hits(final.index, exc)
                remote = self._blobs_for_outputs(final, destinations, store)
        image_format = options.image_format or final.image_format
        if options.compression == "zstd" and image_format == "docker":
            # A Docker schema 2 manifest cannot name a zstd layer (skopeo refuses
            # it); like BuildKit, zstd switches an image from a Docker base to OCI.
            log.info("--compression zstd: writing an OCI manifest (the base image is Docker "
                     "schema 2, which has no zstd layer type)")
            image_format = "oci"
        config = final.config.with_metadata(created=policy.created)
        if options.labels:
            # --label (Kaniko, docker build) applies to the final image and wins over
            # a Dockerfile LABEL of the same key.
            config = config.with_labels(dict(options.labels))
        layers = [_layer_for_format(d, image_format) for d in final.layers]
        # --annotation: on the manifest itself (OCI image spec, "Annotations"), so
        # the digest every output names is over the bytes that carry them.
        image = store_image(store, config, layers, image_format,
                            dict(options.annotations) or None)
        if remote and final.pending is not None:  # layer cache hook: a refused mount uploads
            image = FetchingImage(image, final.pending)
        # Every layer is in the blob store now; the roots are not needed for the
        # outputs. Removing a large root costs one unlink per file (100,000 files:
        # 5-20 s here), so it runs while the image is pushed.
        roots = [s.root for s in self.stages.values()] + bases.image_roots
        self._cleaner = threading.Thread(target=_remove_trees,
                                         args=(roots, self._cleaner_stop.is_set),
                                         name="kanipy-cleanup", daemon=True)
        self._cleaner.start()
        result = BuildResult(image=image, digest=str(image.digest), summaries=self.summaries)
        # Every output gets an image whose digests, sizes, diff_id and history
        # counts hold. Blob digests are re-hashed; diff_ids are not (that would
        # decompress every layer again; they were computed as the layers were made).
        validate_image(image, check_diff_ids=False, remote_layers=remote)
        self._write_outputs(image, destinations, final, result)
        self.reporter.finished(self.summaries)
        return result

    # -- stages built at the same time (--jobs) -------------------------------------------

    def _build_at_once(self, plan: BuildPlan, build_one: Callable[[int, Stage], None],
                       jobs: int) -> None:
        """Build the stages on threads, each once the stage it is built FROM is built; a
        step reading another stage waits for it (``_wait_for_stage``)."""
        events = self._events

        def stop() -> None:
            events.stopping.set()
            stop_runner = getattr(self.runner, "stop", None)  # ends running RUN steps
            if stop_runner is not None:
                stop_runner()

        runner = self._stage_runner = StageRunner(plan.stages, build_one, jobs=jobs, stop=stop)
        try:
            runner.run()
        except BaseException as exc:
            # The stages stopped because of another's failure say so; the failed one
            # stays the reporter's running step. After a signal every stage was
            # stopped by it, and each is reported as the signal's, as today.
            if not isinstance(exc, KeyboardInterrupt):
                events.stopped(runner.failed_stage)
            if isinstance(exc, StagesStopped):  # never the first failure; a bug if so
                raise BuildError(str(exc)) from exc
            raise
        finally:
            self._stage_runner = None

    def _pulling(self, stage: Stage) -> threading.Lock | contextlib.nullcontext[None]:
        """Held while a stage pulls its base image: two stages built at once FROM one
        image pull it one after the other, the second finding its blobs in the store,
        rather than both downloading every blob."""
        if not isinstance(stage.base, str) or stage.base == "scratch":
            return contextlib.nullcontext()
        with self._lock:
            return self._pull_locks.setdefault(stage.base, threading.Lock())

    def _wait_for_stage(self, index: int) -> bool:
        """Wait until stage ``index`` is built, when it is being built at the same time as
        the caller's stage, whose step reads it (COPY --from, RUN --mount from=; also a
        ``--from`` planning could not resolve, set by the base image's ENV or ONBUILD).
        False when no such stage is coming."""
        runner = self._stage_runner
        if runner is None or index not in {s.index for s in runner.stages}:
            return False
        with self._lock:
            built = self._built.setdefault(index, threading.Event())
        with runner.waiting():
            while not built.wait(0.2):
                if runner.stopping.is_set():
                    raise StagesStopped("the build is stopping: another stage failed")
        return True

    # -- the layer cache's lazy roots ------------------------------------------------------

    def _stage_root(self, index: int) -> Path:
        """The whole root of the earlier stage ``index`` (filled now if it was left lazy).

        Two stages built at once may read one earlier stage: its root is filled once,
        under its own lock (a stage's lock is only ever taken before the locks of
        the stages it reads, so no two threads wait for each other).
        """
        with self._lock:
            lock = self._root_locks.setdefault(index, threading.RLock())
        with lock:
            try:
                return self.stages[index].ensure_root()
            except CachedLayerLost as exc:
                return self._without_hits(index, exc).root

    def _without_hits(self, index: int, lost: CachedLayerLost) -> BuiltStage:
        """Build stage ``index`` again with every step run, after a cached layer was lost."""
        log.warning("layer cache: %s; building the stage again without cache hits", lost)
        bases = self.bases
        assert bases is not None
        shutil.rmtree(bases.stage_root_path(index), ignore_errors=True)
        with self._lock:
            self.stages.pop(index, None)
        return self._rebuild(index)

    def _blobs_for_outputs(self, final: BuiltStage, destinations: list[Reference],
                           store: BlobStore) -> frozenset[Digest]:
        """Fetch the final image's blobs that an output needs and the store lacks (a lazy
        base, cache hits); the digests left remote (mounted where they are)."""
        pending = final.pending
        if pending is None:
            return frozenset()
        options = self.options
        files = bool(options.tar_path or options.oci_layout_path)
        fetch: list[str] = []
        remote: set[Digest] = set()
        for desc in final.layers:
            digest = str(desc.digest)
            layer = pending.sources.get(digest)
            if layer is None or store.has(desc.digest):
                continue
            source = final.layer_sources.get(digest)
            if options.no_push and not files:
                remote.add(desc.digest)  # no output reads the bytes
                continue
            mountable = not options.no_push and source is not None and all(
                ref.registry == source[0] for ref in destinations)
            if files or not mountable or (layer.present is not None and not layer.present()):
                fetch.append(digest)
            else:
                remote.add(desc.digest)
        pending.fetch(fetch)
        return frozenset(remote)

    def _ctx_factory(self, plan: BuildPlan, stage: Stage, context: BuildContext,
                     build_dir: Path, store: BlobStore
                     ) -> Callable[[Rootfs, Callable[[bytes], None]], StageContext]:
        bases = self.bases
        assert bases is not None, "_run makes the bases before any stage"
        roots = _SourceRoots(self.stages, bases, self._stage_root, self._wait_for_stage)
        stages = StageNames.of(plan, stage)
        run_cache_dir = run_cache_root(self.options.cache_dir, self.options.kanipy_dir,
                                       build_dir)

        def make(rootfs: Rootfs, on_output: Callable[[bytes], None]) -> StageContext:
            return StageContext(
                rootfs=rootfs, context=context, runner=self.runner, on_output=on_output,
                roots=roots, stages=stages, scratch_dir=build_dir,
                run_cache_dir=run_cache_dir, secrets=self.secrets,
            )
        return make

    # -- outputs -----------------------------------------------------------------------

    def _write_outputs(self, image: StoredImage, destinations: list[Reference],
                       final: BuiltStage, result: BuildResult) -> None:
        """Each kind of output in turn (see ``outputs``); pushes first, then files."""
        try:
            self._write_each_output(image, destinations, final, result)
        except KanipyError as exc:
            # The tags already moved stay moved: say so on stdout, and let the exit
            # status say the build did not fully succeed (README, "Outputs").
            exc.pushed = tuple(result.pushed)
            raise
        except OSError as exc:
            # The paths were checked before the build; what still fails here (an I/O
            # error, a file system gone read-only) is the output's, not a bug.
            error = BuildError(f"writing the outputs failed: {exc.strerror or exc}"
                               f"{f': {exc.filename}' if exc.filename else ''}")
            error.pushed = tuple(result.pushed)
            raise error from exc

    def _write_each_output(self, image: StoredImage, destinations: list[Reference],
                           final: BuiltStage, result: BuildResult) -> None:
        options = self.options
        if not options.no_push:
            if self._early is not None:
                # The blobs the steps made are up (or failed and go up again now);
                # the config and the manifest follow, as without early uploads.
                self._early.finish()
            outputs.push_to_registries(
                image, destinations, client=self.client, layer_sources=final.layer_sources,
                reporter=self.reporter,
                ignore_immutable_tag_errors=options.push_ignore_immutable_tag_errors,
                pushed=result.pushed)
            result.stdout_lines += result.pushed
            if options.builder_output is not None:
                outputs.write_builder_output(image, options.destinations,
                                             options.builder_output)
        size = outputs.image_size(image)
        if options.tar_path:
            with no_space_left(options.tar_path, f"writing the --tar-path archive "
                               f"{options.tar_path}", needs=size):
                outputs.write_tarball(image, options.tar_path, destinations)
        if options.oci_layout_path:
            with no_space_left(options.oci_layout_path, f"writing the OCI layout "
                               f"{options.oci_layout_path}", needs=size):
                outputs.write_oci_layout(image, options.oci_layout_path, destinations)
        with no_space_left(Path(options.digest_file or "."), "writing the digest files"):
            outputs.write_digest_files(
                image, destinations, digest_file=options.digest_file,
                image_name_with_digest_file=options.image_name_with_digest_file,
                image_name_tag_with_digest_file=options.image_name_tag_with_digest_file)
        if options.no_push and not result.stdout_lines:
            result.stdout_lines.append(str(image.digest))


class _SourceRoots:
    """The roots COPY --from and RUN --mount from= read: stages built so far, and
    images pulled once per build (the ``SourceRoots`` of kanipy.executor.step)."""

    def __init__(self, stages: Mapping[int, BuiltStage], bases: StageBases,
                 whole_root: Callable[[int], Path],
                 wait_for: Callable[[int], bool] = lambda index: False) -> None:
        self.stages = stages
        self.bases = bases
        self.whole_root = whole_root
        self.wait_for = wait_for
        # Two stages built at once may COPY --from one image: pulled once.
        self._image_lock = threading.Lock()

    def stage_root(self, index: int) -> Path:
        if index not in self.stages and not self.wait_for(index):
            raise KeyError(index)
        return self.whole_root(index)  # a lazily built stage is filled now (layer cache)

    def image_root(self, text: str) -> Path:
        with self._image_lock:
            return self.bases.image_root(text)


def _layer_for_format(desc: Descriptor, image_format: str) -> Descriptor:
    """The same blob under the media type the manifest format uses for it."""
    wanted = mediatypes.layer_media_type(image_format,
                                         mediatypes.layer_compression(desc.media_type))
    if desc.media_type in (mediatypes.DOCKER_FOREIGN_LAYER_GZIP,
                           mediatypes.OCI_LAYER_NONDIST_GZIP) or wanted == desc.media_type:
        return desc
    return Descriptor(wanted, desc.digest, desc.size, desc.annotations, desc.platform, desc.urls)


def _stages_in_image(plan: BuildPlan) -> set[int]:
    """The stages whose layers are the built image's: the last stage and, through
    ``FROM <stage>``, its ancestors. Any other stage is only read by ``COPY --from``
    or ``RUN --mount from=``, which take files from its root, never its layers."""
    wanted: set[int] = set()
    stage: Stage | None = plan.stages[-1]
    while stage is not None:
        wanted.add(stage.index)
        base = stage.base
        stage = plan.stage(base) if isinstance(base, StageRef) else None
    return wanted


def _read_dockerfile(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise DockerfileError("not valid UTF-8", None, path.name) from None


def _base_text(stage: Stage, plan: BuildPlan) -> str:
    if isinstance(stage.base, StageRef):
        # The name the Dockerfile used (``FROM builder``), not an internal index.
        parents = [s for s in plan.stages if s.index == stage.base.index]
        return parents[0].name if parents and parents[0].name else f"stage {stage.base.index}"
    return str(stage.base)


def run_build(options: BuildOptions, reporter: BuildReporter,
              runner: Runner | None = None) -> BuildResult:
    """Build as ``options`` say, reporting progress to ``reporter``.

    RUN steps go through ``runner`` (default: the namespaced ``ChrootRunner``).
    """
    return Build(options, reporter, runner).run()


class _PushCheck:
    """The push-permission check, run on a thread while the first base is pulled.

    Kaniko's check comes before the build so that a refused destination costs
    seconds, not a build. Its round trips (a token for push, opening an upload,
    cancelling it) need nothing from the build, so they overlap the first pull
    instead of preceding it; ``result()`` is called after that pull and before
    the first step runs, and raises the check's error, so a refused push still
    stops the build before any step and is reported ahead of a failed pull.
    """

    def __init__(self, client: RegistryClient, destinations: list[Reference]) -> None:
        self._error: BaseException | None = None
        self._done = False
        self._lock = threading.Lock()  # stages built at once each ask for the result
        self._thread = threading.Thread(target=self._check, args=(client, destinations),
                                        name="kanipy-push-check", daemon=True)
        self._thread.start()

    def _check(self, client: RegistryClient, destinations: list[Reference]) -> None:
        try:
            for ref in destinations:
                with unreachable_hint(f"push to {ref.name}"):
                    client.check_push_permission(ref)
        except BaseException as exc:  # handed to the main thread by result()
            self._error = exc

    def result(self) -> None:
        """Wait for the check (once); raise its error if the push was refused."""
        with self._lock:
            if self._done:
                if self._error is not None:  # a stage built at the same time raised it
                    raise StagesStopped("the push-permission check failed")
                return
            self._thread.join()
            self._done = True
            if self._error is not None:
                raise self._error


def _remove_work_dir(tree: Path) -> None:
    """Remove the build's own directory, even when a signal interrupts the removal.

    The CLI raises on the first SIGTERM/SIGINT only, so a removal cut short by
    it is simply done again before the interrupt goes on (issue 11: a stopped
    build leaves nothing behind). The lock file goes last (``remover``).
    """
    try:
        remove_tree(tree, last=workdirs.LOCK_NAME)
    except BaseException:
        remove_tree(tree, last=workdirs.LOCK_NAME)
        raise


def _remove_trees(paths: list[Path], stop: Callable[[], bool]) -> None:
    for path in paths:
        remove_tree(path, stop=stop)
