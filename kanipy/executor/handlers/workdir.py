"""WORKDIR: set the working directory, creating it (and its parents) when missing."""

from __future__ import annotations

import dataclasses
import posixpath
from pathlib import PurePosixPath

from kanipy.dockerfile import Workdir
from kanipy.executor.handlers.users import file_owner
from kanipy.executor.step import StageContext, StageState, StepError, StepResult


def handle_workdir(ins: Workdir, state: StageState, ctx: StageContext) -> StepResult:
    """``WORKDIR /path``: relative paths are against the previous WORKDIR.

    BuildKit creates missing directories owned by the current USER (mode 0755),
    resolved as its file operations resolve it (``file_owner``: ``USER 4242``
    gives 4242:4242); a step that creates nothing adds no layer.
    """
    path = ins.path
    if not posixpath.isabs(path):
        path = posixpath.join(state.workdir, path)
    path = posixpath.normpath(path)
    if path.startswith("//"):
        path = path[1:]
    uid, gid = file_owner(ctx.rootfs, state.user) if state.user else (0, 0)
    try:
        created = ctx.rootfs.mkdirs(path, uid, gid)
    except NotADirectoryError as exc:
        raise StepError(f"WORKDIR {path}: {exc.strerror}") from None
    return StepResult(
        state=dataclasses.replace(state, config=state.config.with_config(working_dir=path)),
        changed=frozenset(PurePosixPath(p) for p in created),
        created_by=f"WORKDIR {path}",
        cache_inputs={"path": path, "user": state.user},
    )
