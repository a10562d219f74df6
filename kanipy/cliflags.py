"""The flags of ``kanipy build``: one table of every flag, its kind, group and status.

Flag names follow Kaniko's executor (``cmd/executor/cmd/root.go``) and its
maintained fork, so a CI step switches by changing the image and the command
name. The table drives three things that must agree: the click options, the
grouped ``--help``, and the README's table of Kaniko flags (a test keeps the
README in step with it).

Booleans parse as Kaniko's do (Go's ``strconv.ParseBool``): ``--flag``,
``--flag=true``, ``--flag=false``, and ``1 t T TRUE True 0 f F FALSE False``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from kanipy.fieldwise import Fieldwise

# Help groups, in the order --help shows them.
CONTEXT = "Context and Dockerfile"
OUTPUT = "Destinations and outputs"
REGISTRY = "Registries and TLS"
CACHE = "Caching"
LAYERS = "Snapshots and layers"
WORKDIR = "Work directory"
LOGGING = "Logging"
DEPRECATED = "Deprecated Kaniko spellings"
GROUPS = (CONTEXT, OUTPUT, REGISTRY, CACHE, LAYERS, WORKDIR, LOGGING, DEPRECATED)

# How a flag relates to Kaniko's flag of the same name (the README's table).
WORKS = "works"  # Kaniko's meaning
DIFFERS = "differs"  # Kaniko's purpose, reached another way: ``note`` says how
NOOP = "noop"  # accepted, changes nothing here: ``note`` says why (logged when given)
OWN = "own"  # kanipy's own flag (or the fork's, where named)
DEPRECATED_ALIAS = "alias"  # Kaniko's deprecated spelling of ``alias_of``

_GO_TRUE = ("1", "t", "T", "TRUE", "true", "True")
_GO_FALSE = ("0", "f", "F", "FALSE", "false", "False")


class GoBool(click.ParamType):
    """A boolean as Go's ``strconv.ParseBool`` reads it, which is what Kaniko accepts."""

    name = "boolean"

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> bool:
        if isinstance(value, bool):
            return value
        if value in _GO_TRUE:
            return True
        if value in _GO_FALSE:
            return False
        self.fail(f"{value!r} is not a boolean (true or false)", param, ctx)


@dataclass(frozen=True, repr=False, eq=False)
class Flag(Fieldwise):
    """One flag of ``kanipy build``.

    ``kind``: ``bool`` (``--flag[=true|false]``), ``text``, ``int``, ``path``,
    ``choice`` (one of ``choices``) or ``multi`` (repeatable text).
    ``kaniko_default`` is a no-op boolean's default in Kaniko: setting it to
    anything else gets the info line, setting it to its default says nothing.
    """

    names: tuple[str, ...]
    dest: str
    kind: str
    group: str
    help: str
    status: str = WORKS
    note: str = ""
    default: Any = None
    choices: tuple[str, ...] = ()
    metavar: str | None = None
    kaniko_default: bool = False
    alias_of: str | None = None  # the flag a deprecated spelling stands for

    @property
    def name(self) -> str:
        """The long name, as the README and messages spell it."""
        return next(n for n in self.names if n.startswith("--"))


def _f(names: str, dest: str, kind: str, group: str, help: str, **kw: Any) -> Flag:
    return Flag(tuple(names.split()), dest, kind, group, help, **kw)


FLAGS: tuple[Flag, ...] = (
    # -- context and Dockerfile ------------------------------------------------------
    _f("-f --dockerfile", "dockerfile", "text", CONTEXT,
       "Path to the Dockerfile: absolute, or relative to the context.", default="Dockerfile"),
    _f("-c --context", "context", "text", CONTEXT,
       "Build context: a directory, a .tar/.tar.gz file, tar://- (stdin), git://…, "
       "https://….git or an https:// tarball.", default=".", status=DIFFERS,
       note="the default is the working directory, not `/workspace/`. A directory (or "
            "`dir://DIR`); a tarball, plain, gzip, bzip2 or xz, recognised by content (or "
            "`tar://FILE`; `tar://-` reads it from stdin); a git repository "
            "(`git://HOST/REPO[#REF[#COMMIT]]` as Kaniko spells it, fetched over HTTPS unless "
            "`GIT_PULL_METHOD` says `http` or `git`; `https://HOST/REPO.git[#REF][:SUBDIR]` and "
            "`git@HOST:REPO.git` as BuildKit spells them; credentials from "
            "`GIT_USERNAME`/`GIT_PASSWORD`); an `https://`/`http://` URL of a tarball"),
    _f("--context-sub-path", "context_sub_path", "text", CONTEXT,
       "Subdirectory of the context to build in."),
    _f("--git", "git", "multi", CONTEXT,
       "For a git context: branch=NAME, single-branch=BOOL, recurse-submodules=BOOL, "
       "insecure-skip-tls=BOOL (repeatable, or comma-separated).", metavar="KEY=VALUE",
       status=DIFFERS,
       note="`branch` picks the ref when the context URL names none; `insecure-skip-tls` sets "
            "`GIT_SSL_NO_VERIFY` for the fetch; kanipy always fetches only the ref asked for "
            "and always checks out submodules, so the other two change nothing"),
    _f("-b --bucket", "bucket", "text", CONTEXT,
       "Kaniko's GCS/S3 bucket context: refused; pass the tarball's URL as --context.",
       status=DIFFERS,
       note="refused with exit 2: kanipy reads no cloud buckets; give the tarball's "
            "`https://` URL as `--context`"),
    _f("--build-arg", "build_args", "multi", CONTEXT,
       "Set a declared ARG (repeatable); KEY alone takes the value from the environment.",
       metavar="KEY[=VALUE]"),
    _f("--target", "target", "text", CONTEXT, "Build up to this stage (name or index)."),
    _f("--secret", "secrets", "multi", CONTEXT,
       "A build secret for RUN --mount=type=secret (repeatable).",
       metavar="id=NAME,src=FILE|env=VAR", status=OWN,
       note="as in `docker build --secret` (also in Kaniko's maintained fork)"),
    _f("--preserve-context", "preserve_context", "bool", CONTEXT,
       "Kaniko's fork: keep the context across stages (always the case here).",
       status=NOOP,
       note="kanipy never builds over `/`, so a stage can never touch the build context"),
    # -- destinations and outputs -----------------------------------------------------
    _f("-d --destination", "destinations", "multi", OUTPUT,
       "Image reference to push to (repeatable).", metavar="REF"),
    _f("--no-push", "no_push", "bool", OUTPUT,
       "Build but push nothing (also KANIKO_NO_PUSH=true)."),
    _f("--dry-run --dryrun", "dry_run", "bool", OUTPUT,
       "Print the build plan (stages and expanded instructions) and exit.", status=OWN,
       note="kanipy's; `--dryrun` is the maintained fork's spelling"),
    _f("--tar-path", "tar_path", "path", OUTPUT,
       "Also write the image as a `docker load` tarball here.", status=DIFFERS,
       note="needs no `--destination`: the archive then names the image "
            "`unset-repo/unset-image-name`, as Kaniko does with `--no-push`"),
    _f("--oci-layout-path", "oci_layout_path", "path", OUTPUT,
       "Also write the image into this OCI image layout directory."),
    _f("--digest-file", "digest_file", "path", OUTPUT, "Write the image digest here."),
    _f("--image-name-with-digest-file", "image_name_with_digest_file", "path", OUTPUT,
       "Write NAME@DIGEST for each destination here."),
    _f("--image-name-tag-with-digest-file", "image_name_tag_with_digest_file", "path", OUTPUT,
       "Write NAME:TAG@DIGEST for each destination here."),
    _f("--label", "labels", "multi", OUTPUT,
       "Add a label to the image (repeatable).", metavar="KEY=VALUE"),
    _f("--annotation", "annotations", "multi", OUTPUT,
       "Add an annotation to the image manifest (repeatable).", metavar="KEY=VALUE"),
    _f("--custom-platform", "custom_platform", "text", OUTPUT,
       "Platform of the image to build (default: this machine's).",
       metavar="OS/ARCH[/VARIANT]"),
    _f("--image-format", "image_format", "choice", OUTPUT,
       "Manifest format (default: the base image's; OCI for FROM scratch).",
       choices=("oci", "docker"), status=OWN, note="also in Kaniko's maintained fork"),
    _f("--push-retry", "push_retry", "int", OUTPUT,
       "Retries for a failed registry request.", default=3, status=DIFFERS,
       note="default 3, not 0; pulls are retried as often unless `--image-download-retry` "
            "is given (an upload restarts from its file)"),
    _f("--push-ignore-immutable-tag-errors", "push_ignore_immutable_tag_errors", "bool",
       OUTPUT, "A push refused because the tag is immutable counts as a success."),
    _f("--skip-push-permission-check", "skip_push_permission_check", "bool", OUTPUT,
       "Do not check that every destination accepts a push before building."),
    # -- registries and TLS -----------------------------------------------------------
    _f("--insecure", "insecure", "bool", REGISTRY, "Push to registries over plain HTTP."),
    _f("--insecure-pull", "insecure_pull", "bool", REGISTRY,
       "Pull from registries over plain HTTP."),
    _f("--insecure-registry", "insecure_registries", "multi", REGISTRY,
       "Use plain HTTP for this registry (repeatable).", metavar="HOST[:PORT]",
       status=DIFFERS, note="loopback registries fall back to plain HTTP without it"),
    _f("--skip-tls-verify", "skip_tls_verify", "bool", REGISTRY,
       "Do not verify TLS certificates on push (pulls: --skip-tls-verify-pull).",
       status=DIFFERS,
       note="pushes only, as Kaniko documents it; Kaniko's transport lets it reach pulls "
            "too, kanipy does not: add `--skip-tls-verify-pull` or "
            "`--skip-tls-verify-registry HOST`"),
    _f("--skip-tls-verify-pull", "skip_tls_verify_pull", "bool", REGISTRY,
       "Do not verify TLS certificates on pull."),
    _f("--skip-tls-verify-registry", "skip_tls_verify_registries", "multi", REGISTRY,
       "Do not verify TLS certificates of this registry (repeatable).", metavar="HOST[:PORT]"),
    _f("--registry-certificate", "registry_certificates", "multi", REGISTRY,
       "Trust this CA certificate for a registry (repeatable).", metavar="HOST=CA.pem"),
    _f("--registry-client-cert", "registry_client_certs", "multi", REGISTRY,
       "Client certificate and key for mutual TLS with a registry (repeatable).",
       metavar="HOST=CERT,KEY"),
    _f("--registry-mirror", "registry_mirrors", "multi", REGISTRY,
       "Mirror for docker.io images, tried in order before docker.io (repeatable; also "
       "KANIKO_REGISTRY_MIRROR).", metavar="HOST"),
    _f("--registry-map", "registry_maps", "multi", REGISTRY,
       "Pull ORIG's images from NEW first (repeatable, ';'-separated; also "
       "KANIKO_REGISTRY_MAP).", metavar="ORIG=NEW[;ORIG=NEW]"),
    _f("--skip-default-registry-fallback", "skip_default_registry_fallback", "bool",
       REGISTRY, "With mirrors or maps: fail instead of pulling from the original registry."),
    _f("--credential-helpers", "credential_helpers", "multi", REGISTRY,
       "Kaniko's fork: built-in credential helpers (google, ecr, acr, gitlab, env).",
       metavar="NAME", status=NOOP,
       note="kanipy has no built-in helpers: it runs the `docker-credential-*` helpers "
            "that `config.json` names (`credHelpers`, `credsStore`)"),
    _f("--image-download-retry", "image_download_retry", "int", REGISTRY,
       "Retries for pulling a base image (default: --push-retry's)."),
    # -- caching ------------------------------------------------------------------------
    _f("--cache", "cache", "bool", CACHE,
       "Layer cache: reuse the layers of steps whose inputs are unchanged.", status=DIFFERS,
       note="keys are digests of the expanded instruction, the environment and user it runs "
            "with and the content of its sources (never mtimes), chained from the base "
            "image's digest; a miss says which input changed; cache problems are warnings"),
    _f("--cache-dir", "cache_dir", "path", CACHE,
       "Blob store for pulled base layers and RUN --mount=type=cache, reused across builds.",
       status=DIFFERS,
       note="an OCI layout that keeps pulled base layers and `RUN --mount=type=cache` "
            "directories; used without `--cache` and without the warmer"),
    _f("--cache-repo", "cache_repo", "text", CACHE,
       "Layer cache repository (default: <first destination>/cache); oci:PATH for an OCI "
       "layout.", status=DIFFERS,
       note="also `oci:PATH`, an OCI image layout on disk; entries are tagged by key and "
            "pushed in the background while the build goes on"),
    _f("--cache-ttl", "cache_ttl", "text", CACHE,
       "Layer cache entries older than this are not used (Go duration; default 336h)."),
    _f("--cache-copy-layers", "cache_copy_layers", "bool", CACHE,
       "Cache the layers of COPY and ADD too."),
    _f("--cache-run-layers", "cache_run_layers", "bool", CACHE,
       "Cache the layers of RUN (default true).", kaniko_default=True),
    _f("--compressed-caching", "compressed_caching", "bool", CACHE,
       "Kaniko's compression of cached layers.", status=NOOP,
       note="kanipy streams every layer to disk as it compresses it, so memory never grows "
            "with a layer's size", kaniko_default=True),
    _f("--no-push-cache", "no_push_cache", "bool", CACHE,
       "Use the layer cache but write no new entries to it."),
    # -- snapshots and layers ---------------------------------------------------------
    _f("--single-snapshot", "single_snapshot", "bool", LAYERS,
       "One layer for the whole final stage."),
    _f("--jobs", "jobs", "int", LAYERS,
       "Stages built at the same time, at most (default: the CPUs kanipy may use, at least "
       "2; 1 builds them one after another).", status=OWN,
       note="as `buildah bud --jobs`: a stage starts once the stage it is built `FROM` is "
            "built, and a `COPY --from` or `RUN --mount from=` step waits for the stage it "
            "reads, so independent stages are built at once; the image is the same as with "
            "`--jobs 1`"),
    _f("--reproducible", "reproducible", "bool", LAYERS,
       "Strip timestamps (SOURCE_DATE_EPOCH, else the epoch) for identical digests.",
       status=DIFFERS, note="honours `SOURCE_DATE_EPOCH` when it is set"),
    _f("--compression", "compression", "choice", LAYERS, "Layer compression.",
       choices=("gzip", "zstd"), default="gzip", status=DIFFERS,
       note="zstd compresses on every CPU, on one under `--reproducible` or "
       "`SOURCE_DATE_EPOCH` (multi-threaded zstd writes other bytes)"),
    _f("--compression-level", "compression_level", "int", LAYERS,
       "gzip 1-9 (mapped onto ISA-L's 0-3), zstd 1-22; 0 or less: the default.",
       status=DIFFERS, note="gzip levels map onto ISA-L's four levels"),
    _f("--snapshot-mode", "snapshot_mode", "text", LAYERS, "Kaniko's snapshot strategy.",
       status=NOOP,
       note="kanipy always compares full lstat metadata (ctime included), which finds every "
            "change `full` finds without reading file contents"),
    _f("--use-new-run", "use_new_run", "bool", LAYERS, "Kaniko's experimental RUN snapshots.",
       status=NOOP, note="kanipy's snapshots already find changes without hashing contents"),
    _f("--ignore-path", "ignore_paths", "multi", LAYERS,
       "Leave this image path, and everything under it, out of every layer (repeatable).",
       metavar="PATH"),
    _f("--ignore-var-run", "ignore_var_run", "bool", LAYERS,
       "Kaniko's: leave /var/run out of snapshots.", status=NOOP, kaniko_default=True,
       note="kanipy never builds over `/`, so the build container's `/var/run` can never "
            "reach an image; what steps write there is kept, as `docker build` keeps it"),
    _f("--skip-unused-stages", "skip_unused_stages", "bool", LAYERS,
       "Kaniko's: build only the stages the target needs (always the case here).",
       status=NOOP, note="kanipy always builds only the stages the target needs"),
    _f("--force-build-metadata", "force_build_metadata", "bool", LAYERS,
       "Kaniko's: history entries for metadata-only steps.", status=NOOP,
       note="kanipy records every instruction in the image history, as `docker build` does"),
    _f("--image-fs-extract-retry", "image_fs_extract_retry", "int", LAYERS,
       "Kaniko's retries for unpacking a base image.", status=NOOP,
       note="kanipy unpacks from blobs already verified on disk; a failure there would not "
            "pass on a retry"),
    _f("--materialize", "materialize", "bool", LAYERS,
       "Kaniko's fork: unpack the final filesystem even on a full cache hit.", status=NOOP,
       note="kanipy always builds the full filesystem"),
    # -- work directory -----------------------------------------------------------------
    _f("--kanipy-dir --kaniko-dir", "kanipy_dir", "path", WORKDIR,
       "Work directory; the root filesystem is unpacked under it (also KANIKO_DIR).",
       status=DIFFERS,
       note="`--kaniko-dir` and `KANIKO_DIR` name kanipy's work directory (default: a "
            "temporary one, removed afterwards)"),
    _f("--cleanup", "cleanup", "bool", WORKDIR,
       "Remove the work directory before exiting, not in a process left to do it "
       "(also KANIKO_CLEANUP).",
       status=DIFFERS,
       note="kanipy always removes its work directory: after a successful build a detached "
            "process removes it while kanipy exits; with `--cleanup` (or `KANIKO_CLEANUP`) "
            "kanipy removes it before it exits, for several builds in one container that "
            "need the space back at once"),
    _f("--pre-cleanup", "pre_cleanup", "bool", WORKDIR,
       "Kaniko's fork: clean the filesystem before the build.", status=NOOP,
       note="every kanipy build starts in a new directory"),
    _f("--force", "force", "bool", WORKDIR, "Kaniko's: build outside a container.",
       status=NOOP, note="kanipy builds in its own directory, inside a container or not"),
    # -- logging ------------------------------------------------------------------------
    _f("-v --verbosity", "verbosity", "choice", LOGGING, "Log level.", default="info",
       choices=("panic", "fatal", "error", "warn", "warning", "info", "debug", "trace")),
    _f("--log-format", "log_format", "choice", LOGGING,
       "color: coloured level names, even in a log file; text: never coloured; json: one "
       "JSON object per line. Not given: coloured on a terminal only. NO_COLOR wins.",
       choices=("color", "text", "json"), status=DIFFERS,
       note="not given, lines are coloured on a terminal only (Kaniko's default, `color`, "
            "colours CI logs too); `color` given colours even a log file, as Kaniko's "
            "does; `NO_COLOR` turns colour off in every case"),
    _f("--progress", "progress", "choice", LOGGING,
       "auto: a live view on a terminal, plain lines elsewhere; tty: the live view always; "
       "plain: plain lines always.", default="auto", choices=("auto", "plain", "tty"),
       status=OWN,
       note="`docker build`'s flag: the live view shows the running step with its elapsed "
            "time and last output lines, and pull and push bars; `--log-format json` is "
            "always plain JSON"),
    _f("--log-timestamp", "log_timestamp", "bool", LOGGING,
       "Start every text log line with its UTC time."),
    _f("--debug", "debug", "bool", LOGGING, "Show tracebacks for internal errors.",
       status=OWN),
    # -- Kaniko's deprecated spellings --------------------------------------------------
    _f("--customPlatform", "custom_platform_deprecated", "text", DEPRECATED,
       "Use --custom-platform.", status=DEPRECATED_ALIAS, alias_of="custom_platform"),
    _f("--tarPath", "tar_path_deprecated", "path", DEPRECATED, "Use --tar-path.",
       status=DEPRECATED_ALIAS, alias_of="tar_path"),
    _f("--snapshotMode", "snapshot_mode_deprecated", "text", DEPRECATED,
       "Use --snapshot-mode.", status=DEPRECATED_ALIAS, alias_of="snapshot_mode"),
    _f("--whitelist-var-run", "whitelist_var_run", "bool", DEPRECATED,
       "Use --ignore-var-run.", status=DEPRECATED_ALIAS, alias_of="ignore_var_run",
       kaniko_default=True),
)

BY_DEST = {f.dest: f for f in FLAGS}

# Environment variables Kaniko (or its fork) reads in place of flags.
ENVIRONMENT: tuple[tuple[str, str], ...] = (
    ("KANIKO_NO_PUSH", "`--no-push` when true (Go booleans); wins over the flag, as in Kaniko"),
    ("KANIKO_REGISTRY_MIRROR", "one more `--registry-mirror`, after those given as flags"),
    ("KANIKO_REGISTRY_MAP", "more `--registry-map` entries (`ORIG=NEW;ORIG=NEW`)"),
    ("KANIKO_DIR", "`--kaniko-dir` when the flag is not given"),
    ("BUILDER_OUTPUT", "after a push, `BUILDER_OUTPUT/images` gets one JSON line "
                       "`{\"name\", \"digest\"}` per destination"),
    ("KANIKO_CLEANUP", "`--cleanup` when the flag is not given (Go booleans)"),
    ("KANIKO_PRE_CLEANUP, KANIKO_PRESERVE_CONTEXT",
     "the fork's defaults for those flags: accepted, no effect (see the flags)"),
)


class FlagOption(click.Option):
    """A click option that knows its help group."""

    def __init__(self, *args: Any, group: str = "", **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.group = group


def _option(flag: Flag) -> Callable[[Any], Any]:
    kw: dict[str, Any] = {"cls": FlagOption, "group": flag.group, "help": flag.help}
    if flag.metavar:
        kw["metavar"] = flag.metavar
    if flag.kind == "bool":
        # An optional value: ``--flag`` alone means true, ``--flag=VALUE`` is parsed.
        # None (not given) lets the caller tell "absent" from "false".
        kw.update(is_flag=False, flag_value="true", default=None, type=GoBool(),
                  metavar=flag.metavar or "[=BOOL]")
    elif flag.kind == "multi":
        kw.update(multiple=True)
    elif flag.kind == "int":
        kw.update(type=int, default=flag.default)
    elif flag.kind == "path":
        kw.update(type=click.Path(path_type=Path), default=flag.default)
    elif flag.kind == "choice":
        kw.update(type=click.Choice(list(flag.choices)), default=flag.default)
    else:
        kw.update(default=flag.default)
    if flag.default is not None and flag.kind != "bool":
        kw["show_default"] = True
    return click.option(*flag.names, flag.dest, **kw)


def add_flags(func: Any) -> Any:
    """Decorate a click command function with every flag of the table."""
    for flag in reversed(FLAGS):
        func = _option(flag)(func)
    return func


class GroupedCommand(click.Command):
    """A command whose ``--help`` lists its options under the table's groups."""

    def format_options(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows: dict[str, list[tuple[str, str]]] = {group: [] for group in GROUPS}
        other: list[tuple[str, str]] = []
        for param in self.get_params(ctx):
            record = param.get_help_record(ctx)
            if record is None:
                continue
            group = getattr(param, "group", "")
            (rows[group] if group in rows else other).append(record)
        for group in GROUPS:
            if rows[group]:
                with formatter.section(group):
                    formatter.write_dl(rows[group])
        if other:
            with formatter.section("Other"):
                formatter.write_dl(other)


def parse_go_bool(text: str, where: str) -> bool:
    """A Go boolean from an environment variable; ValueError names ``where``."""
    if text in _GO_TRUE:
        return True
    if text in _GO_FALSE:
        return False
    raise ValueError(f"{where}={text!r} is not a boolean (true or false)")


def readme_table(flags: Sequence[Flag] = FLAGS) -> str:
    """The README's table of Kaniko flags and their status in kanipy, as Markdown."""
    lines = ["| flag | group | status in kanipy |", "|---|---|---|"]
    for flag in flags:
        names = ", ".join(f"`{n}`" for n in flag.names)
        if flag.status == WORKS:
            status = "works"
        elif flag.status == DIFFERS:
            status = f"works differently: {flag.note}"
        elif flag.status == NOOP:
            status = f"accepted, no effect: {flag.note}"
        elif flag.status == OWN:
            status = f"kanipy's own{': ' + flag.note if flag.note else ''}"
        else:
            alias = BY_DEST[flag.alias_of or ""].name
            status = f"deprecated in Kaniko; read as `{alias}`, with a warning"
        lines.append(f"| {names} | {flag.group} | {status} |")
    return "\n".join(lines) + "\n"
