"""USER values resolved in the image's own user database (never the host's)."""

from __future__ import annotations

from kanipy.errors import BuildError
from kanipy.executor.step import StepError
from kanipy.executor.userdb import ExecUser, resolve_user
from kanipy.fs.rootfs import Rootfs


def exec_user(rootfs: Rootfs, user: str) -> ExecUser:
    """uid, gid and groups for ``user`` from the rootfs's /etc/passwd and /etc/group."""
    passwd = rootfs.resolve("/etc/passwd")
    group = rootfs.resolve("/etc/group")
    return resolve_user(
        user,
        passwd if passwd.is_file() else None,
        group if group.is_file() else None,
    )


def step_user(rootfs: Rootfs, user: str) -> ExecUser:
    """``exec_user`` for the USER a step runs as: a user the image does not know is
    reported as ``USER name: ...`` at the step, so the message leads to the USER."""
    try:
        return exec_user(rootfs, user)
    except BuildError as exc:
        raise StepError(f"USER {user}: {exc.message}") from None
