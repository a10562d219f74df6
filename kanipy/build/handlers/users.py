"""USER values resolved in the image's own user database (never the host's)."""

from __future__ import annotations

from kanipy.build.step import StageContext
from kanipy.build.userdb import ExecUser, resolve_user


def exec_user(ctx: StageContext, user: str) -> ExecUser:
    """uid, gid and groups for ``user`` from the rootfs's /etc/passwd and /etc/group."""
    passwd = ctx.rootfs.resolve("/etc/passwd")
    group = ctx.rootfs.resolve("/etc/group")
    return resolve_user(
        user,
        passwd if passwd.is_file() else None,
        group if group.is_file() else None,
    )
