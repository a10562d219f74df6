"""One build from start to finish: context, plan, stages, image, outputs.

``run_build`` is what ``kanipy build`` calls. It checks every destination
before any work (a denied push fails in a second, not after a long build),
builds the needed stages in dependency order, assembles the image in the blob
store, and only then writes outputs: registries (manifest last), a
``docker load`` tarball, an OCI layout, digest files. A failed build writes
nothing anywhere.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from kanipy.context import BuildContext, open_context
from kanipy.dockerfile import BuildPlan, Stage, StageRef, StageScope, format_plan, plan_build
from kanipy.errors import BuildError, ConnectionFailed, DockerfileError, UsageError
from kanipy.executor.options import BuildOptions, host_platform
from kanipy.executor.progress import BuildReporter, StepSummary
from kanipy.executor.runner import ChrootRunner
from kanipy.executor.sandbox_caps import require_build_privileges
from kanipy.executor.stage import BuiltStage, LayerPolicy, StageBuilder
from kanipy.executor.step import StageContext
from kanipy.fs.rootfs import Rootfs
from kanipy.fs.unpack import unpack_layer
from kanipy.oci import mediatypes
from kanipy.oci.blobstore import BlobStore
from kanipy.oci.config import ImageConfig, new_config
from kanipy.oci.descriptor import Descriptor, Platform
from kanipy.oci.image import StoredImage, store_image
from kanipy.reference import DOCKER_HUB, Reference
from kanipy.registry import RegistryClient, RegistryOptions
from kanipy.registry.progress import ProgressEvent

log = logging.getLogger(__name__)

# Kaniko's name for the image of a --no-push build without --destination.
UNSET_DESTINATION = "docker.io/unset-repo/unset-image-name:latest"


@dataclass
class BuildResult:
    """What a build produced; ``stdout_lines`` is the machine output (``name@digest``)."""

    image: StoredImage | None = None
    digest: str | None = None
    pushed: list[str] = field(default_factory=list)
    stdout_lines: list[str] = field(default_factory=list)
    summaries: list[StepSummary] = field(default_factory=list)


def registry_options(options: BuildOptions) -> RegistryOptions:
    """Kaniko's transport flags as registry client options.

    kanipy uses one client for pulls and pushes, so the pull and push variants
    of ``--insecure`` and ``--skip-tls-verify`` both widen it.
    """
    return RegistryOptions(
        insecure_registries=frozenset(options.insecure_registries),
        insecure_all=options.insecure or options.insecure_pull,
        skip_tls_verify=options.skip_tls_verify or options.skip_tls_verify_pull,
        skip_tls_verify_registries=frozenset(options.skip_tls_verify_registries),
        registry_certificates=dict(options.registry_certificates),
        mirrors=tuple(options.registry_mirrors),
        retries=options.push_retry,
        docker_config_dir=Path(options.env["DOCKER_CONFIG"])
        if options.env.get("DOCKER_CONFIG") else None,
    )


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

    def __init__(self, options: BuildOptions, reporter: BuildReporter) -> None:
        self.options = options
        self.reporter = reporter
        self.stages: dict[int, BuiltStage] = {}
        self.summaries: list[StepSummary] = []
        self._client: RegistryClient | None = None
        self._image_roots: dict[str, Path] = {}
        self._cleaner: threading.Thread | None = None
        self.filename = "Dockerfile"

    @property
    def client(self) -> RegistryClient:
        if self._client is None:
            self._client = RegistryClient(registry_options(self.options))
        return self._client

    def run(self) -> BuildResult:
        options = self.options
        destinations = [Reference.parse(d) for d in options.destinations]
        own_workdir = options.kanipy_dir is None
        workdir = Path(tempfile.mkdtemp(prefix="kanipy-")) if own_workdir else \
            Path(options.kanipy_dir or "")
        workdir.mkdir(parents=True, exist_ok=True)
        build_dir = Path(tempfile.mkdtemp(prefix="build-", dir=workdir))
        try:
            return self._run(destinations, build_dir)
        finally:
            if self._cleaner is not None:
                self._cleaner.join()
            shutil.rmtree(build_dir, ignore_errors=True)
            if own_workdir:
                shutil.rmtree(workdir, ignore_errors=True)

    def _run(self, destinations: list[Reference], build_dir: Path) -> BuildResult:
        options = self.options
        context, dockerfile_path = open_context(
            options.context, build_dir, options.dockerfile, options.context_sub_path,
            env=options.env)
        text = _read_dockerfile(dockerfile_path)
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
        if not options.no_push:
            for ref in destinations:
                with _unreachable_hint(f"push to {ref.name}"):
                    self.client.check_push_permission(ref)

        store = BlobStore(options.cache_dir or build_dir / "blobs")
        epoch = _source_date_epoch(options)
        policy = LayerPolicy(
            compression=options.compression,
            level=_compression_level(options),
            mtime_clamp=epoch,
            created=_rfc3339(epoch if epoch is not None else time.time()),
        )
        self.secrets = _read_secrets(options)
        self.runner = ChrootRunner()
        count = len(plan.stages)
        for number, stage in enumerate(plan.stages, start=1):
            self.reporter.stage_started(number, count, stage.name, _base_text(stage, plan))
            started = time.monotonic()
            base = self._base(stage, plan, store, build_dir)
            builder = StageBuilder(
                plan=plan, stage=stage, number=number, count=count, base=base,
                ctx_factory=self._ctx_factory(plan, stage, context, build_dir, store),
                store=store, policy=policy, reporter=self.reporter,
                single_snapshot=options.single_snapshot and stage is plan.stages[-1],
                base_seconds=time.monotonic() - started,
            )
            built = builder.build()
            self.summaries += builder.summaries
            self.stages[stage.index] = built

        final = self.stages[plan.stages[-1].index]
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
        image = store_image(store, config, layers, image_format)
        # Every layer is in the blob store now; the roots are not needed for the
        # outputs. Removing a large root costs one unlink per file (100,000 files:
        # 5-20 s here), so it runs while the image is pushed.
        roots = [s.root for s in self.stages.values()] + list(self._image_roots.values())
        self._cleaner = threading.Thread(target=_remove_trees, args=(roots,),
                                         name="kanipy-cleanup", daemon=True)
        self._cleaner.start()
        result = BuildResult(image=image, digest=str(image.digest), summaries=self.summaries)
        self._write_outputs(image, destinations, final, result)
        self.reporter.finished(self.summaries)
        return result

    # -- bases -------------------------------------------------------------------------

    def _base(self, stage: Stage, plan: BuildPlan, store: BlobStore, build_dir: Path
              ) -> BuiltStage:
        root = build_dir / f"stage-{stage.index}"
        root.mkdir()
        if isinstance(stage.base, StageRef):
            parent = self.stages[stage.base.index]
            _copy_root(parent.root, root)
            return BuiltStage(stage.index, root, parent.config, list(parent.layers),
                              parent.image_format, dict(parent.layer_sources))
        platform = self._stage_platform(stage)
        if stage.base == "scratch":
            return BuiltStage(stage.index, root, new_config(platform), [],
                              self.options.image_format or "oci")
        return self._pull_into(str(stage.base), platform, root, store, stage)

    def _stage_platform(self, stage: Stage) -> Platform:
        if stage.platform:
            try:
                return Platform.parse(stage.platform)
            except ValueError as exc:
                raise DockerfileError(f"FROM --platform: {exc}",
                                      stage.from_instruction.line, self.filename) from None
        return self.options.target_platform

    def _pull_into(self, text: str, platform: Platform, root: Path, store: BlobStore,
                   stage: Stage | None) -> BuiltStage:
        try:
            ref = Reference.parse(text)
        except UsageError as exc:
            if stage is None:
                raise
            raise DockerfileError(f"FROM {text}: {exc}", stage.from_instruction.line,
                                  self.filename) from None
        rootfs = Rootfs(root)
        where = (f"pull of {ref} (FROM on {self.filename}:{stage.from_instruction.line})"
                 if stage is not None else f"pull of {ref} (--from)")
        # Each layer is unpacked as soon as it has arrived, while later ones download.
        with _unreachable_hint(where):
            pulled = self.client.pull_image(
                ref, platform, store, on_progress=self._progress("pull"),
                on_layer=lambda desc: self._unpack(rootfs, [desc], store))
        config = ImageConfig.parse(pulled.config_raw)
        image_format = "docker" if pulled.manifest_media_type == mediatypes.DOCKER_MANIFEST \
            else "oci"
        sources = {str(d.digest): (pulled.source.registry, pulled.source.repository)
                   for d in pulled.layers}
        return BuiltStage(stage.index if stage else -1, root, config, list(pulled.layers),
                          image_format, sources)

    def _unpack(self, rootfs: Rootfs, layers: Sequence[Descriptor], store: BlobStore) -> None:
        for desc in layers:
            with store.open(desc.digest) as fh:
                unpack_layer(rootfs, fh, compression=mediatypes.layer_compression(
                    desc.media_type), layer_name=str(desc.digest))

    def _progress(self, action: str) -> Callable[[ProgressEvent], None]:
        def report(event: ProgressEvent) -> None:
            self.reporter.transfer(event)
        return report

    def _ctx_factory(self, plan: BuildPlan, stage: Stage, context: BuildContext,
                     build_dir: Path, store: BlobStore
                     ) -> Callable[..., StageContext]:
        def image_root(text: str) -> Path:
            if text not in self._image_roots:
                root = Path(tempfile.mkdtemp(prefix="from-image-", dir=build_dir))
                self._pull_into(text, self.options.target_platform, root, store, None)
                self._image_roots[text] = root
            return self._image_roots[text]

        def make(scope: StageScope, rootfs: Rootfs, on_output: Callable[[bytes], None]
                 ) -> StageContext:
            return StageContext(
                plan=plan, stage=stage, scope=scope, rootfs=rootfs, context=context,
                runner=self.runner, options=self.options,
                stage_roots={i: s.root for i, s in self.stages.items()},
                image_root=image_root, on_output=on_output, secrets=self.secrets,
                scratch_dir=build_dir,
            )
        return make

    # -- outputs -----------------------------------------------------------------------

    def _write_outputs(self, image: StoredImage, destinations: list[Reference],
                       final: BuiltStage, result: BuildResult) -> None:
        options = self.options
        digest = image.digest
        manifest = image.manifest()
        if not options.no_push:
            blobs = [manifest.config, *manifest.layers]
            for ref in destinations:
                mounts = {}
                for desc in manifest.layers:
                    source = final.layer_sources.get(str(desc.digest))
                    if source and source[0] == ref.registry and source[1] != ref.repository:
                        mounts[desc.digest] = source[1]
                pushed = self.client.push_image(
                    ref, manifest.raw, manifest.media_type, blobs, image.store,
                    mount_sources=mounts, on_progress=self._progress("push"))
                self.reporter.pushed(str(ref), str(pushed))
                result.pushed.append(f"{ref.name}@{pushed}")
                result.stdout_lines.append(f"{ref.name}@{pushed}")
        # Kaniko names an image built with --no-push and no destination this way,
        # so its --tar-path archive still loads under a name.
        named = destinations or [Reference.parse(UNSET_DESTINATION)]
        if options.tar_path:
            from kanipy.oci.dockerarchive import write_docker_archive
            options.tar_path.parent.mkdir(parents=True, exist_ok=True)
            write_docker_archive(options.tar_path, image,
                                 [f"{r.name}:{r.tag or 'latest'}" for r in named])
        if options.oci_layout_path:
            from kanipy.oci.layout import write_layout
            # The image goes in as built, Docker media types included (Kaniko's
            # layout.AppendImage does the same), so the layout, the registry and
            # the digest file agree on one digest. skopeo and umoci read only OCI
            # manifests from a layout: --image-format oci gives them one.
            tags = [r.tag for r in destinations if r.tag] or ["latest"]
            write_layout(options.oci_layout_path, image, tags, oci_media_types=False)
        # The formats of Kaniko's pkg/executor/push.go, which Tekton Tasks turn into
        # results: the digest alone with no newline; one line per destination,
        # NAME@DIGEST or NAME:TAG@DIGEST (a destination without a tag is :latest).
        if options.digest_file:
            _write_text(options.digest_file, str(digest))
        if options.image_name_with_digest_file:
            _write_text(options.image_name_with_digest_file,
                        "".join(f"{_kaniko_name(r)}@{digest}\n" for r in destinations))
        if options.image_name_tag_with_digest_file:
            _write_text(options.image_name_tag_with_digest_file,
                        "".join(f"{_kaniko_name(r)}:{r.tag or 'latest'}@{digest}\n"
                                for r in destinations))
        if options.no_push and not result.stdout_lines:
            result.stdout_lines.append(str(digest))


def _layer_for_format(desc: Descriptor, image_format: str) -> Descriptor:
    """The same blob under the media type the manifest format uses for it."""
    wanted = mediatypes.layer_media_type(image_format,
                                         mediatypes.layer_compression(desc.media_type))
    if desc.media_type in (mediatypes.DOCKER_FOREIGN_LAYER_GZIP,
                           mediatypes.OCI_LAYER_NONDIST_GZIP) or wanted == desc.media_type:
        return desc
    return Descriptor(wanted, desc.digest, desc.size, desc.annotations, desc.platform, desc.urls)


def _kaniko_name(ref: Reference) -> str:
    """``registry/repository`` as Kaniko writes it: Docker Hub as ``index.docker.io``.

    Kaniko prints go-containerregistry's ``Repository.Name()``, which spells
    Docker Hub ``index.docker.io``; scripts that compare against it expect that.
    """
    if ref.registry == DOCKER_HUB:
        return f"index.docker.io/{ref.repository}"
    return ref.name


@contextmanager
def _unreachable_hint(doing: str) -> Iterator[None]:
    """Say what was being done when a registry could not be reached, and what to try.

    The registry client's connection errors name the host and the reason; only
    the engine knows whether it was the push check or which FROM's pull.
    """
    try:
        yield
    except ConnectionFailed as exc:
        hint = ""
        if not exc.tls_untrusted:
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


def _write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


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


def run_build(options: BuildOptions, reporter: BuildReporter) -> BuildResult:
    """Build as ``options`` say, reporting progress to ``reporter``."""
    return Build(options, reporter).run()


def _remove_trees(paths: list[Path]) -> None:
    for path in paths:
        shutil.rmtree(path, ignore_errors=True)
