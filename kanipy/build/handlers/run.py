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
import shutil
import tempfile
from pathlib import Path, PurePosixPath

from kanipy.build.handlers.users import exec_user
from kanipy.build.runner import Mount as RunnerMount
from kanipy.build.runner import RunSpec
from kanipy.build.step import StageContext, StageState, StepResult
from kanipy.dockerfile import Mount, Run
from kanipy.errors import BuildError, DockerfileError

log = logging.getLogger(__name__)


def handle_run(ins: Run, state: StageState, ctx: StageContext) -> StepResult:
    """``RUN command`` / ``RUN ["exe", "arg"]``: anything in the tree may change."""
    if ins.security and ins.security != "sandbox":
        raise DockerfileError(
            f"RUN --security={ins.security} is not supported by kanipy (steps always run "
            "with the default confinement)", ins.line, ctx.plan.filename,
        )
    network = ins.network or "default"
    if network not in ("default", "none", "host"):
        raise DockerfileError(f"RUN --network={network}: expected default, none or host",
                              ins.line, ctx.plan.filename)
    user = exec_user(ctx, state.user, line=ins.line)
    workdir = state.workdir
    ctx.rootfs.mkdirs(workdir)  # Docker creates a missing WORKDIR for the step
    args_env = ctx.scope.run_environment()
    env: dict[str, str] = dict(args_env)
    for item in state.config.env:
        key, _, value = item.partition("=")
        env[key] = value

    scratch = Path(tempfile.mkdtemp(prefix="step-", dir=ctx.scratch_dir))
    try:
        mounts: list[RunnerMount] = []
        argv = _argv(ins, state, scratch, mounts)
        for m in ins.mounts:
            mount = _mount(m, ins, ctx, scratch, user.uid, user.gid, env)
            if mount is not None:
                mounts.append(mount)
        spec = RunSpec(
            root=ctx.rootfs.path,
            argv=argv,
            env=env,
            uid=user.uid,
            gid=user.gid,
            groups=user.groups,
            workdir=workdir,
            network=network,  # type: ignore[arg-type]
            extra_mounts=mounts,
        )
        status = ctx.runner.run(spec, ctx.on_output)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    if status != 0:
        raise BuildError(
            f"{ctx.plan.filename}:{ins.line}: RUN {_shown(argv)} did not complete "
            f"successfully: exit code {status}"
        )
    return StepResult(config=state.config, changed=None,
                      created_by=_created_by(argv, args_env))


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
    m: Mount, ins: Run, ctx: StageContext, scratch: Path, uid: int, gid: int,
    env: dict[str, str],
) -> RunnerMount | None:
    """One ``RUN --mount`` as a runner mount (BuildKit's mount types)."""
    where = (ins.line, ctx.plan.filename)
    target = m.target
    if m.type == "tmpfs":
        return RunnerMount(target=_abs(target, ctx), type="tmpfs")
    if m.type == "bind":
        source_root = _mount_source_root(m, ctx)
        rel = (m.source or ".").lstrip("/")
        if m.from_ is None:
            source = (source_root / rel).resolve()
            if not source.is_relative_to(source_root.resolve()):
                raise DockerfileError(f"RUN --mount source {m.source!r} leaves the context",
                                      *where)
        else:
            from kanipy.fs.rootfs import Rootfs
            source = Rootfs(source_root).resolve(rel or "/")
        if not source.exists():
            raise BuildError(f"{ctx.plan.filename}:{ins.line}: RUN --mount=type=bind: "
                             f"source {m.source or '/'} not found")
        if not m.readonly:
            # BuildKit: writes to an rw bind mount are discarded after the step.
            copy = scratch / "bind-rw"
            if source.is_dir():
                shutil.copytree(source, copy, symlinks=True)
            else:
                shutil.copy2(source, copy)
            return RunnerMount(target=_abs(target, ctx), type="bind", source=copy)
        return RunnerMount(target=_abs(target, ctx), type="bind", source=source, readonly=True)
    if m.type == "cache":
        cache_root = ctx.options.cache_dir or (
            ctx.options.kanipy_dir or Path(tempfile.gettempdir()) / "kanipy")
        key = m.id or _abs(target, ctx)
        safe = key.strip("/").replace("/", "_") or "root"
        directory = Path(cache_root) / "run-cache" / safe
        if not directory.exists():
            directory.mkdir(parents=True)
            os.chown(directory, m.uid or 0, m.gid or 0)
            directory.chmod(m.mode if m.mode is not None else 0o755)
        return RunnerMount(target=_abs(target, ctx), type="bind", source=directory,
                           readonly=m.readonly)
    if m.type == "secret":
        secret_id = m.id or (PurePosixPath(target).name if target else None)
        if not secret_id:
            raise DockerfileError("RUN --mount=type=secret needs id= or target=", *where)
        value = ctx.secrets.get(secret_id)
        if value is None:
            if m.required:
                raise BuildError(
                    f"{ctx.plan.filename}:{ins.line}: secret {secret_id!r} is required but "
                    f"was not given; pass --secret id={secret_id},src=FILE"
                )
            log.info("secret %s not given; RUN on line %d runs without it", secret_id, ins.line)
            return None
        if m.env:
            env[m.env] = value.decode("utf-8", "replace")
            if not target or "target=" not in m.spec and "dst=" not in m.spec:
                return None
        path = scratch / f"secret-{len(list(scratch.iterdir()))}"
        path.write_bytes(value)
        os.chown(path, m.uid or 0, m.gid or 0)
        path.chmod(m.mode if m.mode is not None else 0o400)
        return RunnerMount(target=target or f"/run/secrets/{secret_id}", type="bind",
                           source=path, readonly=True)
    if m.type == "ssh":
        raise DockerfileError(
            "RUN --mount=type=ssh is not supported by kanipy yet (there is no SSH agent "
            "forwarding); fetch private sources before the build or use a secret", *where)
    raise DockerfileError(f"RUN --mount=type={m.type} is not supported", *where)


def _mount_source_root(m: Mount, ctx: StageContext) -> Path:
    if m.from_ is None:
        return ctx.context.root
    from kanipy.build.handlers.copy import source_root_for
    return source_root_for(m.from_, ctx)


def _abs(target: str | None, ctx: StageContext) -> str:
    if not target:
        raise DockerfileError("RUN --mount needs target=", None, ctx.plan.filename)
    return target


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
