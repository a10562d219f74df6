"""BuildOptions: everything one ``kanipy build`` was asked to do, as plain values.

The CLI fills it from Kaniko-named flags; the engine reads it. Values are
already validated here (references parsed, platforms parsed, key=value pairs
split), so a bad flag fails before any work starts, with exit 2.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from kanipy.errors import UsageError
from kanipy.fieldwise import Fieldwise
from kanipy.oci.descriptor import Platform


@dataclass(frozen=True, repr=False, eq=False)
class BuildOptions(Fieldwise):
    dockerfile: str = "Dockerfile"
    context: str = "."
    context_sub_path: str | None = None
    destinations: tuple[str, ...] = ()
    build_args: tuple[tuple[str, str | None], ...] = ()
    target: str | None = None
    labels: tuple[tuple[str, str], ...] = ()
    no_push: bool = False
    dry_run: bool = False
    # Transport (see kanipy.registry): Kaniko's flags, same meanings.
    insecure: bool = False
    insecure_pull: bool = False
    insecure_registries: tuple[str, ...] = ()
    skip_tls_verify: bool = False
    skip_tls_verify_pull: bool = False
    skip_tls_verify_registries: tuple[str, ...] = ()
    registry_certificates: tuple[tuple[str, str], ...] = ()
    registry_mirrors: tuple[str, ...] = ()
    push_retry: int = 3
    # Where kanipy keeps its files.
    cache_dir: Path | None = None
    kanipy_dir: Path | None = None
    # --cleanup: remove the work directory before returning, even after a success
    # (default: a detached process removes it, workdirs.WorkdirLock.hand_over).
    cleanup: bool = False
    # Output image.
    custom_platform: Platform | None = None
    image_format: str | None = None  # "oci" | "docker" | None (follow the base image)
    compression: str = "gzip"
    compression_level: int | None = None
    reproducible: bool = False
    single_snapshot: bool = False
    # --jobs N: at most N stages built at the same time; None: the CPUs this
    # process may use, at least 2 (``stage_jobs``).
    jobs: int | None = None
    tar_path: Path | None = None
    oci_layout_path: Path | None = None
    digest_file: Path | None = None
    image_name_with_digest_file: Path | None = None
    image_name_tag_with_digest_file: Path | None = None
    secrets: tuple[tuple[str, str, str], ...] = ()  # (id, "src"|"env", value)
    # --annotation KEY=VALUE (Kaniko's maintained fork): annotations of the final
    # image's manifest (OCI image spec, "Annotations"), in the order given.
    annotations: tuple[tuple[str, str], ...] = ()
    # --skip-push-permission-check: do not check, before the build, that every
    # destination accepts a push (Kaniko's CheckPushPermissions).
    skip_push_permission_check: bool = False
    # --push-ignore-immutable-tag-errors: a push refused because the tag is
    # immutable (ECR's and Artifact Registry's messages) counts as a success.
    push_ignore_immutable_tag_errors: bool = False
    # --image-download-retry N: retries for pulling base images; None leaves the
    # registry client's own count (push_retry) for pulls too.
    image_download_retry: int | None = None
    # --registry-map ORIG=NEW (and KANIKO_REGISTRY_MAP): pull images of registry
    # ORIG from NEW first, in order, then from ORIG itself. Docker Hub entries are
    # also folded into registry_mirrors, which the puller already uses.
    registry_maps: tuple[tuple[str, str], ...] = ()
    # --skip-default-registry-fallback: when mirrors or maps are set, an image
    # none of them has is an error instead of a pull from the original registry.
    skip_default_registry_fallback: bool = False
    # --registry-client-cert HOST=CERT,KEY: a client certificate (mTLS) per registry.
    registry_client_certs: tuple[tuple[str, str, str], ...] = ()  # (host, cert, key)
    # --ignore-path PATH (repeatable): image paths, and everything under them,
    # left out of every layer this build writes (Kaniko's ignore list).
    ignore_paths: tuple[str, ...] = ()
    # $BUILDER_OUTPUT (Kaniko, as Cloud Build sets it): after a push, write
    # BUILDER_OUTPUT/images with one JSON line {"name": REF, "digest": DIGEST}
    # per destination.
    builder_output: Path | None = None
    # The layer cache (issue 10), Kaniko's flags with Kaniko's defaults: --cache,
    # --cache-repo (REPO or oci:PATH; default <first destination>/cache),
    # --cache-ttl (a Go duration), --cache-run-layers, --cache-copy-layers,
    # --no-push-cache.
    cache: bool = False
    cache_repo: str | None = None
    cache_ttl: str | None = None
    cache_run_layers: bool = True
    cache_copy_layers: bool = False
    no_push_cache: bool = False
    env: dict[str, str] = field(default_factory=lambda: dict(os.environ), compare=False)

    @property
    def build_args_dict(self) -> dict[str, str | None]:
        """--build-arg values; ``None`` means "take it from the environment" (``--build-arg K``)."""
        return dict(self.build_args)

    @property
    def target_platform(self) -> Platform:
        return self.custom_platform or host_platform()


def host_platform() -> Platform:
    machine = os.uname().machine
    return Platform("linux", machine).normalized()


def parse_key_value(
    text: str, flag: str, *, value_optional: bool = False
) -> tuple[str, str | None]:
    """``KEY=VALUE`` from a flag; ``KEY`` alone allowed when ``value_optional``."""
    key, sep, value = text.partition("=")
    if not key:
        raise UsageError(f"{flag} {text!r}: expected KEY=VALUE")
    if not sep:
        if value_optional:
            return key, None
        raise UsageError(f"{flag} {text!r}: expected KEY=VALUE")
    return key, value


def parse_secret(text: str) -> tuple[str, str, str]:
    """``--secret id=NAME,src=FILE`` or ``id=NAME,env=VAR`` (BuildKit's syntax)."""
    fields: dict[str, str] = {}
    for part in text.split(","):
        key, sep, value = part.partition("=")
        if not sep:
            raise UsageError(f"--secret {text!r}: expected id=NAME,src=FILE or id=NAME,env=VAR")
        fields[key.strip().lower()] = value.strip()
    secret_id = fields.pop("id", "")
    if "source" in fields:
        fields["src"] = fields.pop("source")
    if not secret_id:
        raise UsageError(f"--secret {text!r}: id=NAME is required")
    if "src" in fields:
        return secret_id, "src", fields["src"]
    if "env" in fields:
        return secret_id, "env", fields["env"]
    # BuildKit: with neither, the secret comes from the environment variable of
    # the same name.
    return secret_id, "env", secret_id
