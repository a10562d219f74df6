"""RUN: execute a command in the stage's root through the runner.

``RUN [--mount=...] [--network=default|none|host] command``. Shell form goes
through SHELL; exec form runs as given; heredocs as BuildKit runs them (see
``kanipy.dockerfile.Run``). The environment is the image Env plus the ARGs in
scope; ARG values never reach the image. A non-zero exit fails the build
with the step's line and status.
"""

from __future__ import annotations

import logging
import os
import posixpath
import shutil
import tempfile
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

from kanipy.dockerfile import Mount, Run
from kanipy.errors import BuildError, DockerfileError
from kanipy.executor.cachemount import CacheMountRequest, open_cache_dirs
from kanipy.executor.handlers.copy import source_root_for
from kanipy.executor.handlers.users import step_user
from kanipy.executor.runner import Mount as RunnerMount
from kanipy.executor.runner import RunSpec
from kanipy.executor.step import StageContext, StageState, StepError, StepResult
from kanipy.fs.rootfs import Rootfs

log = logging.getLogger(__name__)


def handle_run(ins: Run, state: StageState, ctx: StageContext) -> StepResult:
    """``RUN command`` / ``RUN ["exe", "arg"]``: anything in the tree may change."""
    if ins.security and ins.security != "sandbox":
        raise StepError(
            f"RUN --security={ins.security} is not supported by kanipy (steps always run "
            "with the default confinement)", DockerfileError,
        )
    network = ins.network or "default"
    if network not in ("default", "none", "host"):
        raise StepError(f"RUN --network={network}: expected default, none or host",
                        DockerfileError)
    user = step_user(ctx.rootfs, state.user)
    workdir = state.workdir
    ctx.rootfs.mkdirs(workdir)  # Docker creates a missing WORKDIR for the step
    args_env = state.run_args()
    env: dict[str, str] = dict(args_env)
    for item in state.config.env:
        key, _, value = item.partition("=")
        env[key] = value
    # Taken before secret mounts add their env= values: a cache keeps its key's inputs.
    visible_env = [f"{k}={v}" for k, v in env.items()]

    scratch = Path(tempfile.mkdtemp(prefix="step-", dir=ctx.scratch_dir))
    held = ExitStack()  # cache mount locks, released when the step ends
    try:
        mounts: list[RunnerMount] = []
        argv = _argv(ins, state, scratch, mounts)
        caches = [i for i, m in enumerate(ins.mounts) if m.type == "cache"]
        # All of the step's caches at once: one lock order across builds (cachemount.py).
        opened = open_cache_dirs([_cache_request(ins.mounts[i], workdir) for i in caches],
                                 ctx.run_cache_dir, held)
        cache_dirs = dict(zip(caches, opened, strict=True))
        for i, m in enumerate(ins.mounts):
            mount = _mount(m, ctx, scratch, env, cache_dirs.get(i), workdir, ins.line)
            if mount is not None:
                mounts.append(mount)
        spec = RunSpec(
            root=ctx.rootfs.path,
            argv=argv,
            env=env,
            uid=user.uid,
            gid=user.gid,
            groups=user.additional_gids,
            workdir=workdir,
            network=network,  # type: ignore[arg-type]
            extra_mounts=mounts,
        )
        try:
            outcome = ctx.runner.run(spec, ctx.on_output)
        except BuildError as exc:
            # The runner knows no Dockerfile; the stage loop says which step could not start.
            raise StepError(exc.message) from exc
    finally:
        held.close()
        shutil.rmtree(scratch, ignore_errors=True)
    if outcome.status != 0:
        raise StepError(
            f"RUN {_shown(argv)} did not complete successfully: exit code {outcome.status}",
            exit_status=outcome.status)
    inputs = {
        "argv": argv, "env": visible_env, "user": state.user, "workdir": workdir,
        "shell": state.shell, "network": network, "mounts": [m.spec for m in ins.mounts],
        "heredocs": [[doc.name, doc.stripped_content] for doc in ins.heredocs],
    }
    return StepResult(state=state, changed=None, created_by=_created_by(argv, args_env),
                      cache_inputs=inputs, excluded=outcome.excluded)


def _argv(ins: Run, state: StageState, scratch: Path, mounts: list[RunnerMount]) -> list[str]:
    if ins.command.exec_form:
        return list(ins.command.args)
    doc = ins.heredoc_executable()
    if doc is not None:
        # BuildKit writes a lone ``#!`` heredoc to a file and executes it.
        script = scratch / f"heredoc-{doc.name}"
        script.write_text(doc.stripped_content)
        script.chmod(0o755)
        target = f"/dev/pipes/{doc.name}"
        mounts.append(RunnerMount(target=target, type="bind", source=script, readonly=True))
        return [target]
    return [*state.shell, ins.shell_script()]


def _mount(
    m: Mount, ctx: StageContext, scratch: Path, env: dict[str, str], cache_dir: Path | None,
    workdir: str, line: int,
) -> RunnerMount | None:
    """One ``RUN --mount`` as a runner mount (BuildKit's mount types).

    Nothing mounted ever reaches a layer: the runner reports its mount points
    and the snapshot leaves them out. ``cache_dir`` is a cache mount's directory,
    opened (and locked) with the step's other caches. Relative targets are under
    the step's WORKDIR, as BuildKit joins them.
    """
    if m.type == "tmpfs":
        return RunnerMount(target=_abs(m.target, workdir), type="tmpfs")
    if m.type == "bind":
        return _bind_mount(m, ctx, scratch, workdir)
    if m.type == "cache":
        assert cache_dir is not None
        return RunnerMount(target=_abs(m.target, workdir), type="bind", source=cache_dir,
                           readonly=m.readonly)
    if m.type == "secret":
        return _secret_mount(m, ctx, env, workdir, line)
    if m.type == "ssh":
        raise StepError(
            "RUN --mount=type=ssh is not supported by kanipy (there is no SSH agent "
            "forwarding); fetch private sources before the build or pass a key with "
            "--secret and RUN --mount=type=secret", DockerfileError)
    raise StepError(f"RUN --mount=type={m.type} is not supported", DockerfileError)


def _bind_mount(m: Mount, ctx: StageContext, scratch: Path, workdir: str) -> RunnerMount:
    """``type=bind``: a context path, or a path in a stage or image (``from=``).

    Read-only unless ``rw``; an ``rw`` mount gets a private copy, so the step's
    writes are discarded with it, as BuildKit discards them.
    """
    source_root = _mount_source_root(m, ctx)
    rel = (m.source or ".").lstrip("/") or "."
    if m.from_ is None:
        source = (source_root / rel).resolve()
        if not source.is_relative_to(source_root.resolve()):
            raise StepError(f"RUN --mount source {m.source!r} leaves the context",
                            DockerfileError)
    else:
        source = Rootfs(source_root).resolve(rel)
    if not source.exists():
        raise StepError(f"RUN --mount=type=bind: source {m.source or '/'} not found")
    target = _abs(m.target, workdir)
    if m.from_ is None and ctx.context.ignore.patterns:
        # BuildKit mounts the context as sent, so .dockerignore'd files are absent.
        context_root = ctx.context.root.resolve()
        rel_source = source.relative_to(context_root).as_posix()
        if ctx.context.excluded(rel_source):
            raise StepError(f"RUN --mount=type=bind: source {m.source} is excluded by "
                            ".dockerignore")
        if source.is_dir() and _has_excluded(source, context_root, ctx):
            copy = Path(tempfile.mkdtemp(prefix="bind-", dir=scratch)) / "data"
            shutil.copytree(source, copy, symlinks=True, ignore=_ignore_for(context_root, ctx))
            return RunnerMount(target=target, type="bind", source=copy, readonly=m.readonly)
    if m.readonly:
        return RunnerMount(target=target, type="bind", source=source, readonly=True)
    copy = Path(tempfile.mkdtemp(prefix="bind-rw-", dir=scratch)) / "data"
    if source.is_dir():
        shutil.copytree(source, copy, symlinks=True)
    else:
        shutil.copy2(source, copy)
    return RunnerMount(target=target, type="bind", source=copy)


def _has_excluded(directory: Path, context_root: Path, ctx: StageContext) -> bool:
    for dirpath, dirnames, filenames in os.walk(directory):
        for name in dirnames + filenames:
            rel = (Path(dirpath) / name).relative_to(context_root).as_posix()
            if ctx.context.excluded(rel):
                return True
    return False


def _ignore_for(context_root: Path, ctx: StageContext) -> Callable[[str, list[str]], set[str]]:
    # With "!" exceptions an excluded directory may hold re-included files, so
    # directories are then walked, not pruned.
    keep_dirs = ctx.context.ignore.has_exceptions

    def ignored(dirpath: str, names: list[str]) -> set[str]:
        base = Path(dirpath).relative_to(context_root)
        return {n for n in names if ctx.context.excluded((base / n).as_posix())
                and not (keep_dirs and (Path(dirpath) / n).is_dir())}
    return ignored


def run_cache_root(cache_dir: Path | None, kanipy_dir: Path | None, scratch_dir: Path
                   ) -> Path:
    """Where ``RUN --mount=type=cache`` directories live.

    Kaniko has no RUN cache, so kanipy chooses: ``<--cache-dir>/run-cache`` when
    ``--cache-dir`` is given (kept between builds with the layer cache), else
    ``<--kanipy-dir>/run-cache`` (kept as long as that work dir is), else a
    directory of this build's scratch space, gone when the build ends.
    """
    if cache_dir is not None:
        return Path(cache_dir) / "run-cache"
    if kanipy_dir is not None:
        return Path(kanipy_dir) / "run-cache"
    return Path(scratch_dir) / "run-cache"


def _cache_request(m: Mount, workdir: str) -> CacheMountRequest:
    """``type=cache``: keyed by ``id`` (default: the target); a new one gets uid, gid, mode."""
    return CacheMountRequest(key=m.id or _abs(m.target, workdir), sharing=m.sharing or "shared",
                             uid=m.uid or 0, gid=m.gid or 0,
                             mode=m.mode if m.mode is not None else 0o755)


def _secret_mount(m: Mount, ctx: StageContext, env: dict[str, str], workdir: str,
                  line: int) -> RunnerMount | None:
    """``type=secret``: a ``--secret`` as a file (and/or an env variable) for one step.

    The value goes to the runner in memory, never into a file of kanipy's: the
    step sees it at the target, owned by ``uid``/``gid`` with ``mode`` (0400),
    read-only; the snapshot leaves it out, and the value is never logged.
    """
    secret_id = m.id
    if not secret_id:
        raise StepError("RUN --mount=type=secret needs id= or target=", DockerfileError)
    value = ctx.secrets.get(secret_id)
    if value is None:
        if m.required:
            raise StepError(
                f"secret {secret_id!r} is required but was not given; pass "
                f"--secret id={secret_id},src=FILE or --secret id={secret_id},env=VARIABLE"
            )
        log.info("secret %s was not given; RUN on line %d runs without it",
                 secret_id, line)
        return None
    if m.env:
        env[m.env] = value.decode("utf-8", "replace")
    if not m.target:
        return None  # env= alone: BuildKit mounts no file
    return RunnerMount(target=_abs(m.target, workdir), type="secret", data=value,
                       uid=m.uid or 0, gid=m.gid or 0,
                       mode=m.mode if m.mode is not None else 0o400, readonly=True)


def _mount_source_root(m: Mount, ctx: StageContext) -> Path:
    if m.from_ is None:
        return ctx.context.root
    return source_root_for(m.from_, ctx)


def _abs(target: str | None, workdir: str) -> str:
    if not target:
        raise StepError("RUN --mount needs target=", DockerfileError)
    return posixpath.normpath(posixpath.join("/", workdir, target))


def _shown(argv: list[str]) -> str:
    text = " ".join(argv)
    return text if len(text) < 200 else text[:197] + "..."


def _created_by(argv: list[str], args_env: dict[str, str]) -> str:
    """Docker's history text: ``RUN |2 A=1 B=2 /bin/sh -c make # buildkit``."""
    prefix = ""
    if args_env:
        pairs = " ".join(f"{k}={v}" for k, v in sorted(args_env.items()))
        prefix = f"|{len(args_env)} {pairs} "
    return f"RUN {prefix}{' '.join(argv)} # buildkit"
