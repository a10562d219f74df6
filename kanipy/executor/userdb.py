"""Resolving a Dockerfile USER against an image's own /etc/passwd and /etc/group.

The rules are runc's ``GetExecUser`` (libcontainer/user), which BuildKit and
Docker use for RUN and for the container's first process:

- ``USER name`` or ``USER uid``: the first passwd entry with that name (or, when
  the value is numeric, that uid) gives uid, primary gid and home; the
  supplementary groups are the groups of /etc/group that list the user's *name*
  as a member. A numeric uid missing from passwd is accepted as is, with gid 0,
  home ``/`` and no supplementary groups; a name missing from passwd is an error.
- ``USER user:group``: the group (a name, or a gid: numeric means gid) replaces
  the primary gid and, as in runc (moby/sys/user today), no supplementary groups
  are added, for a named user too.

A RUN process gets the primary gid and then the supplementary groups as its
groups (``ExecUser.additional_gids``), as BuildKit sets them since containerd's
fix for CVE-2023-25173: ``USER uid:gid`` runs with ``groups=gid``.
- An empty USER is root: the passwd entry of uid 0, if any.

The files are read from the host paths the caller resolved inside the image
root (never the host's own /etc); a missing file reads as empty, as in runc.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from kanipy.errors import BuildError
from kanipy.executor.passwdfile import entry_lines, fields, home_of_uid, to_id
from kanipy.fieldwise import Fieldwise

__all__ = ["ExecUser", "GroupEntry", "PasswdEntry", "home_of_uid", "parse_group",
           "parse_passwd", "resolve_exec_user", "resolve_user"]

# runc accepts ids in [0, 2^31 - 1]; larger ones are ErrRange.
MAX_ID = 2**31 - 1


@dataclass(frozen=True, repr=False, eq=False)
class PasswdEntry(Fieldwise):
    """One line of /etc/passwd."""

    name: str
    uid: int
    gid: int
    home: str
    shell: str


@dataclass(frozen=True, repr=False, eq=False)
class GroupEntry(Fieldwise):
    """One line of /etc/group."""

    name: str
    gid: int
    members: tuple[str, ...]


@dataclass(frozen=True, repr=False, eq=False)
class ExecUser(Fieldwise):
    """The identity a RUN step runs as."""

    uid: int
    gid: int
    groups: tuple[int, ...]
    """Supplementary groups, in /etc/group order, without duplicates."""
    home: str
    name: str | None
    """The passwd name matched, or None for a numeric uid missing from passwd."""

    @property
    def additional_gids(self) -> tuple[int, ...]:
        """The groups a RUN process gets (``setgroups``), as BuildKit gives them: the
        primary gid first, then the supplementary groups (executor/oci/user.go,
        ``ensureAdditionalGids``, from containerd's fix for CVE-2023-25173), so that
        ``id`` prints ``groups=GID,...`` as under Docker, also for ``USER uid:gid``."""
        return (self.gid, *(g for g in self.groups if g != self.gid))


def parse_passwd(text: str) -> list[PasswdEntry]:
    """The entries of a passwd file's text, in file order."""
    entries = []
    for line in entry_lines(text):
        name, _pw, uid, gid, _gecos, home, shell = fields(line, 7)
        entries.append(PasswdEntry(name, to_id(uid), to_id(gid), home, shell))
    return entries


def parse_group(text: str) -> list[GroupEntry]:
    """The entries of a group file's text, in file order."""
    entries = []
    for line in entry_lines(text):
        name, _pw, gid, members = fields(line, 4)
        listed = tuple(m.strip() for m in members.split(",") if m.strip())
        entries.append(GroupEntry(name, to_id(gid), listed))
    return entries


def _read(path: Path | None) -> str:
    if path is None:
        return ""
    try:
        return path.read_text(encoding="utf-8", errors="surrogateescape")
    except FileNotFoundError:
        return ""


def _numeric(text: str) -> int | None:
    if text.isascii() and text.isdigit():
        value = int(text)
        if value > MAX_ID:
            raise BuildError(f"user or group id {text} is out of range (0..{MAX_ID})")
        return value
    return None


def resolve_exec_user(
    user: str, passwd: list[PasswdEntry], groups: list[GroupEntry]
) -> ExecUser:
    """The uid, gid, supplementary groups and home for a USER value (runc's rules)."""
    user_arg, _, group_arg = user.partition(":")
    uid_arg = _numeric(user_arg)
    gid_arg = _numeric(group_arg) if group_arg else None

    if user_arg == "":
        matches = [e for e in passwd if e.uid == 0]
    elif uid_arg is not None:
        matches = [e for e in passwd if e.uid == uid_arg]
    else:
        matches = [e for e in passwd if e.name == user_arg]

    name: str | None = None
    if matches:
        # First match wins, as in runc.
        entry = matches[0]
        name, uid, gid, home = entry.name, entry.uid, entry.gid, entry.home or "/"
    elif uid_arg is not None:
        uid, gid, home = uid_arg, 0, "/"
    elif user_arg == "":
        uid, gid, home = 0, 0, "/"
    else:
        raise BuildError(f"unable to find user {user_arg}: no matching entries in passwd file")

    supplementary: list[int] = []
    if group_arg:
        if gid_arg is not None:
            found = [g for g in groups if g.gid == gid_arg]
        else:
            found = [g for g in groups if g.name == group_arg]
        if found:
            gid = found[0].gid
        elif gid_arg is not None:
            gid = gid_arg
        else:
            raise BuildError(
                f"unable to find group {group_arg}: no matching entries in group file"
            )
    elif name is not None:
        # Supplementary groups only in the implicit form, by member *name*.
        for g in groups:
            if name in g.members and g.gid not in supplementary:
                supplementary.append(g.gid)
    return ExecUser(uid=uid, gid=gid, groups=tuple(supplementary), home=home, name=name)


def resolve_user(user: str, passwd_file: Path | None, group_file: Path | None) -> ExecUser:
    """Resolve a USER value against the image's passwd and group files.

    ``passwd_file`` and ``group_file`` are host paths already resolved inside
    the image root (or None when the image has none); a missing file reads as
    empty. Raises BuildError for a user or group name that is not found.
    """
    return resolve_exec_user(
        user, parse_passwd(_read(passwd_file)), parse_group(_read(group_file))
    )
