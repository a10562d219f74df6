"""USER values resolved in the image's own user database (never the host's)."""

from __future__ import annotations

from kanipy.errors import BuildError
from kanipy.executor.step import StageContext
from kanipy.executor.userdb import ExecUser, resolve_user


def exec_user(ctx: StageContext, user: str, *, line: int | None = None) -> ExecUser:
    """uid, gid and groups for ``user`` from the rootfs's /etc/passwd and /etc/group.

    With ``line`` (the instruction that needs the user), a user the image does
    not know is reported as ``Dockerfile:LINE: USER name: ...``, like every other
    step failure, so the message leads to the USER that caused it.
    """
    passwd = ctx.rootfs.resolve("/etc/passwd")
    group = ctx.rootfs.resolve("/etc/group")
    try:
        return resolve_user(
            user,
            passwd if passwd.is_file() else None,
            group if group.is_file() else None,
        )
    except BuildError as exc:
        if line is None:
            raise
        raise BuildError(f"{ctx.plan.filename}:{line}: USER {user}: {exc.message}") from None
