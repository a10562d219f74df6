"""The lines of an image's /etc/passwd and /etc/group, read as runc reads them.

Split from ``userdb`` so that the RUN step's helper, which only needs a uid's
home (``home_of_uid``), loads nothing beyond the standard library's core: each
RUN step starts a fresh helper interpreter and pays for every import it makes
(issue 14). ``userdb`` resolves a Dockerfile USER with these primitives.
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing at run time
if TYPE_CHECKING:
    from collections.abc import Iterator


def fields(line: str, count: int) -> list[str]:
    """The first ``count`` colon-separated fields of ``line``, missing ones empty."""
    parts = line.split(":")
    return (parts + [""] * count)[:count]


def to_id(text: str) -> int:
    """A uid or gid field; runc's parseLine leaves one that does not parse at 0."""
    try:
        return int(text)
    except ValueError:
        return 0


def entry_lines(text: str) -> Iterator[str]:
    """The lines of a passwd or group file that are entries, stripped."""
    for raw in text.splitlines():
        line = raw.strip()
        # Comments and NIS compat lines (+/-) are not entries.
        if not line or line.startswith(("#", "+", "-")):
            continue
        yield line


def home_of_uid(passwd_text: str, uid: int) -> str:
    """The home of the first passwd entry with ``uid``, else ``/`` (runc's HOME default)."""
    for line in entry_lines(passwd_text):
        _name, _pw, entry_uid, _gid, _gecos, home, _shell = fields(line, 7)
        if to_id(entry_uid) == uid:
            return home or "/"
    return "/"
