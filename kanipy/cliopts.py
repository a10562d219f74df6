"""Flag values of ``kanipy build`` into BuildOptions, with Kaniko's environment variables.

Everything malformed is a UsageError (exit 2) before any work starts. Flags
that are accepted for Kaniko's sake and change nothing get one log line each
saying why; Kaniko's deprecated spellings are read as the current flag.
"""

from __future__ import annotations

import logging
import os
import posixpath
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from kanipy.cliflags import BY_DEST, DEPRECATED_ALIAS, FLAGS, NOOP, parse_go_bool
from kanipy.errors import UsageError
from kanipy.executor.options import BuildOptions, parse_key_value, parse_secret
from kanipy.oci.descriptor import Platform

log = logging.getLogger(__name__)

# Registries Kaniko's --registry-map and --registry-mirror treat as Docker Hub.
_DOCKER_HUB_NAMES = ("docker.io", "index.docker.io", "registry-1.docker.io")


def _flag_given(kw: dict[str, Any], dest: str) -> bool:
    value = kw.get(dest)
    return value is not None and value != ()


def note_compat_flags(kw: dict[str, Any], env: Mapping[str, str]) -> None:
    """One log line per flag that is accepted for Kaniko's sake and changes nothing.

    A boolean set to Kaniko's own default changes nothing even in Kaniko, so it
    goes unremarked; any other value, or any value of a valued flag, is noted.
    Kaniko's deprecated spellings are read as the current flag, with a warning.
    """
    fork_env = {"cleanup": "KANIKO_CLEANUP", "pre_cleanup": "KANIKO_PRE_CLEANUP",
                "preserve_context": "KANIKO_PRESERVE_CONTEXT"}
    for dest, var in fork_env.items():
        if kw[dest] is None and env.get(var):
            try:
                kw[dest] = parse_go_bool(env[var], var)
            except ValueError as exc:
                raise UsageError(str(exc)) from None
    for flag in FLAGS:
        if flag.status == DEPRECATED_ALIAS and _flag_given(kw, flag.dest):
            target = BY_DEST[flag.alias_of or ""]
            log.warning("%s is deprecated in Kaniko; read as %s", flag.name, target.name)
            if not _flag_given(kw, target.dest):
                kw[target.dest] = kw[flag.dest]
    for flag in FLAGS:
        if flag.status != NOOP or not _flag_given(kw, flag.dest):
            continue
        value = kw[flag.dest]
        if flag.kind == "bool" and value == flag.kaniko_default:
            continue
        log.info("%s has no effect in kanipy: %s", flag.name, _plain(flag.note))


def _plain(note: str) -> str:
    """A README note as a log line: without Markdown's backquotes."""
    return note.replace("`", "")


def options_from_flags(kw: dict[str, Any], env: Mapping[str, str] | None = None
                       ) -> BuildOptions:
    """Validate flag values (and Kaniko's environment variables) into BuildOptions.

    Anything malformed is a UsageError (exit 2) before any work starts.
    """
    env = dict(os.environ if env is None else env)
    if kw["bucket"]:
        raise UsageError(f"--bucket {kw['bucket']}: kanipy reads no cloud buckets; give the "
                         "tarball's https:// URL as --context")
    platform = None
    if kw["custom_platform"]:
        try:
            platform = Platform.parse(kw["custom_platform"])
        except ValueError as exc:
            raise UsageError(f"--custom-platform: {exc}") from None
    certs = []
    for text in kw["registry_certificates"]:
        host, value = parse_key_value(text, "--registry-certificate")
        certs.append((host, value or ""))
    no_push = bool(kw["no_push"])
    if env.get("KANIKO_NO_PUSH"):
        # Kaniko reads the variable after the flags, so it wins over --no-push.
        try:
            no_push = parse_go_bool(env["KANIKO_NO_PUSH"], "KANIKO_NO_PUSH")
        except ValueError as exc:
            raise UsageError(str(exc)) from None
    maps = _registry_maps(kw["registry_maps"], env.get("KANIKO_REGISTRY_MAP"))
    mirrors = list(kw["registry_mirrors"])
    if env.get("KANIKO_REGISTRY_MIRROR"):
        mirrors.append(env["KANIKO_REGISTRY_MIRROR"])
    # Kaniko folds --registry-mirror into the Docker Hub entries of its registry
    # map; the other way round, a Docker Hub map entry is a mirror here.
    mirrors += [new for orig, new in maps if orig in _DOCKER_HUB_NAMES and new not in mirrors]
    context, git_env = _git_options(kw["context"], kw["git"])
    env.update(git_env)
    kanipy_dir = kw["kanipy_dir"]
    if kanipy_dir is None and env.get("KANIKO_DIR"):
        kanipy_dir = Path(env["KANIKO_DIR"])
    level = kw["compression_level"]
    download_retry = kw["image_download_retry"]
    return BuildOptions(
        dockerfile=kw["dockerfile"],
        context=context,
        context_sub_path=kw["context_sub_path"],
        destinations=tuple(kw["destinations"]),
        build_args=tuple(
            parse_key_value(a, "--build-arg", value_optional=True) for a in kw["build_args"]
        ),
        target=kw["target"],
        labels=_pairs(kw["labels"], "--label"),
        no_push=no_push,
        dry_run=bool(kw["dry_run"]),
        insecure=bool(kw["insecure"]),
        insecure_pull=bool(kw["insecure_pull"]),
        insecure_registries=tuple(kw["insecure_registries"]),
        skip_tls_verify=bool(kw["skip_tls_verify"]),
        skip_tls_verify_pull=bool(kw["skip_tls_verify_pull"]),
        skip_tls_verify_registries=tuple(kw["skip_tls_verify_registries"]),
        registry_certificates=tuple(certs),
        registry_mirrors=tuple(mirrors),
        push_retry=max(0, kw["push_retry"]),
        cache_dir=kw["cache_dir"],
        kanipy_dir=kanipy_dir,
        cleanup=bool(kw["cleanup"]),
        custom_platform=platform,
        image_format=kw["image_format"],
        compression=kw["compression"],
        # Kaniko's default is -1, and it applies a level only when it is positive.
        compression_level=level if level is not None and level > 0 else None,
        reproducible=bool(kw["reproducible"]),
        single_snapshot=bool(kw["single_snapshot"]),
        jobs=kw["jobs"],
        tar_path=kw["tar_path"],
        oci_layout_path=kw["oci_layout_path"],
        digest_file=kw["digest_file"],
        image_name_with_digest_file=kw["image_name_with_digest_file"],
        image_name_tag_with_digest_file=kw["image_name_tag_with_digest_file"],
        secrets=tuple(parse_secret(s) for s in kw["secrets"]),
        env=env,
        annotations=_pairs(kw["annotations"], "--annotation"),
        skip_push_permission_check=bool(kw["skip_push_permission_check"]),
        push_ignore_immutable_tag_errors=bool(kw["push_ignore_immutable_tag_errors"]),
        image_download_retry=max(0, download_retry) if download_retry is not None else None,
        registry_maps=maps,
        skip_default_registry_fallback=bool(kw["skip_default_registry_fallback"]),
        registry_client_certs=tuple(_client_cert(t) for t in kw["registry_client_certs"]),
        ignore_paths=tuple(_ignore_path(p) for p in kw["ignore_paths"]),
        builder_output=Path(env["BUILDER_OUTPUT"]) if env.get("BUILDER_OUTPUT") else None,
        cache=bool(kw["cache"]),
        cache_repo=kw["cache_repo"] or None,
        cache_ttl=kw["cache_ttl"] or None,
        cache_run_layers=kw["cache_run_layers"] is not False,
        cache_copy_layers=bool(kw["cache_copy_layers"]),
        no_push_cache=bool(kw["no_push_cache"]),
    )


def _pairs(values: tuple[str, ...], flag: str) -> tuple[tuple[str, str], ...]:
    return tuple((k, v or "") for k, v in (parse_key_value(a, flag) for a in values))


def _registry_maps(values: tuple[str, ...], from_env: str | None
                   ) -> tuple[tuple[str, str], ...]:
    """``ORIG=NEW[;ORIG=NEW…]`` from every --registry-map, then KANIKO_REGISTRY_MAP."""
    pairs: list[tuple[str, str]] = []
    sources = [("--registry-map", v) for v in values]
    if from_env:
        sources.append(("KANIKO_REGISTRY_MAP", from_env))
    for where, value in sources:
        for part in value.split(";"):
            if not part.strip():
                continue
            orig, sep, new = part.strip().partition("=")
            if not sep or not orig or not new:
                raise UsageError(f"{where} {value!r}: expected ORIG=NEW[;ORIG=NEW…]")
            pairs.append((orig, new))
    return tuple(pairs)


def _client_cert(text: str) -> tuple[str, str, str]:
    host, sep, files = text.partition("=")
    cert, comma, key = files.partition(",")
    if not sep or not host or not comma or not cert or not key:
        raise UsageError(f"--registry-client-cert {text!r}: expected HOST=CERT,KEY")
    return host, cert, key


def _ignore_path(text: str) -> str:
    if not text.startswith("/"):
        raise UsageError(f"--ignore-path {text!r}: expected an absolute path in the image")
    return posixpath.normpath(text)


_GIT_KEYS = ("branch", "single-branch", "recurse-submodules", "insecure-skip-tls")


def _git_options(context: str, values: tuple[str, ...]) -> tuple[str, dict[str, str]]:
    """Kaniko's ``--git KEY=VALUE`` as kanipy's context spelling and git's environment.

    ``branch`` becomes the context's ``#REF`` unless the URL already names one;
    ``insecure-skip-tls`` becomes git's ``GIT_SSL_NO_VERIFY``. kanipy fetches
    only the ref it needs and always checks out submodules, so
    ``single-branch`` and ``recurse-submodules`` need nothing.
    """
    settings: dict[str, str] = {}
    for value in values:
        for part in value.split(","):
            key, sep, setting = part.strip().partition("=")
            if not sep or key not in _GIT_KEYS:
                raise UsageError(f"--git {value!r}: expected KEY=VALUE with KEY one of "
                                 f"{', '.join(_GIT_KEYS)}")
            if key != "branch":
                try:
                    parse_go_bool(setting, f"--git {key}")
                except ValueError as exc:
                    raise UsageError(str(exc)) from None
            settings[key] = setting
    if not settings:
        return context, {}
    # Only here: the git context module brings the HTTP stack with it, which a
    # build without --git would otherwise load before it needs it (issue 14).
    from kanipy.context.git import is_git_source

    if not is_git_source(context):
        log.info("--git has no effect: the context %s is not a git repository", context)
        return context, {}
    env: dict[str, str] = {}
    if settings.get("branch") and "#" not in context:
        context = f"{context}#{settings['branch']}"
    if parse_go_bool(settings.get("insecure-skip-tls", "false"), "--git insecure-skip-tls"):
        env["GIT_SSL_NO_VERIFY"] = "true"
    return context, env
