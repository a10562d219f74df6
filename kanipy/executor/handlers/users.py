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


def _file_op_id(text: str) -> int | None:
    """BuildKit's ``parseUID`` (client/llb): ``root`` is 0, a decimal uint32 is itself,
    anything else is a name."""
    if text == "root":
        return 0
    if text.isascii() and text.isdigit() and int(text) < 2**32:
        return int(text)
    return None


def file_owner(rootfs: Rootfs, user: str) -> tuple[int, int]:
    """The owner of what a file operation creates under ``USER user`` (WORKDIR).

    BuildKit's file operations (``llb.WithUser``, then solver/llbsolver/ops
    ``readUser``) resolve USER differently from RUN: a numeric uid gives gid = uid,
    whether or not passwd has it (``USER 4242`` makes 4242:4242, where RUN runs as
    4242:0); a name gives its passwd uid and primary gid; a group, numeric or named,
    replaces the gid. A name the image does not know is an error at the step here
    (BuildKit would use 0), so the message leads to the USER.
    """
    name, _, group = user.partition(":")
    try:
        uid = _file_op_id(name)
        if uid is not None:
            gid = uid
        else:
            resolved = exec_user(rootfs, name)
            uid, gid = resolved.uid, resolved.gid
        if group:
            numeric = _file_op_id(group)
            gid = numeric if numeric is not None else exec_user(rootfs, f"0:{group}").gid
    except BuildError as exc:
        raise StepError(f"USER {user}: {exc.message}") from None
    return uid, gid
