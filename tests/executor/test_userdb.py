"""USER resolution against an image's passwd and group files (runc's GetExecUser rules)."""

from __future__ import annotations

from pathlib import Path

import pytest

from kanipy.errors import BuildError
from kanipy.executor.userdb import ExecUser, home_of_uid, resolve_user

PASSWD = """\
root:x:0:0:root:/root:/bin/sh
# a comment line is not an entry
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
app:x:1000:1000:App:/home/app:/bin/sh
nohome:x:1002:1002::
"""

GROUP = """\
root:x:0:
wheel:x:10:root
nogroup:x:65534:
app:x:1000:
extra:x:1001:app,other
tools:x:1003:other, app
"""


@pytest.fixture
def etc(tmp_path: Path) -> tuple[Path, Path]:
    (tmp_path / "passwd").write_text(PASSWD)
    (tmp_path / "group").write_text(GROUP)
    return tmp_path / "passwd", tmp_path / "group"


@pytest.mark.parametrize(
    ("user", "expected"),
    [
        ("", ExecUser(0, 0, (10,), "/root", "root")),
        ("root", ExecUser(0, 0, (10,), "/root", "root")),
        ("app", ExecUser(1000, 1000, (1001, 1003), "/home/app", "app")),
        ("1000", ExecUser(1000, 1000, (1001, 1003), "/home/app", "app")),
        # An explicit group replaces the primary gid and brings no supplementary groups.
        ("app:extra", ExecUser(1000, 1001, (), "/home/app", "app")),
        ("app:0", ExecUser(1000, 0, (), "/home/app", "app")),
        ("app:4242", ExecUser(1000, 4242, (), "/home/app", "app")),
        ("1000:1000", ExecUser(1000, 1000, (), "/home/app", "app")),
        # A numeric uid missing from passwd: gid 0, home /, no groups.
        ("4242", ExecUser(4242, 0, (), "/", None)),
        ("4242:4243", ExecUser(4242, 4243, (), "/", None)),
        ("4242:nogroup", ExecUser(4242, 65534, (), "/", None)),
        ("nobody", ExecUser(65534, 65534, (), "/nonexistent", "nobody")),
        ("nohome", ExecUser(1002, 1002, (), "/", "nohome")),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_resolve_user(etc: tuple[Path, Path], user: str, expected: ExecUser) -> None:
    assert resolve_user(user, *etc) == expected


@pytest.mark.parametrize(
    ("user", "message"),
    [
        ("ghost", "unable to find user ghost: no matching entries in passwd file"),
        ("app:ghosts", "unable to find group ghosts: no matching entries in group file"),
        ("99999999999", "out of range"),
    ],
    ids=["unknown-user", "unknown-group", "uid-out-of-range"],
)
def test_resolve_user_errors(etc: tuple[Path, Path], user: str, message: str) -> None:
    with pytest.raises(BuildError, match=message):
        resolve_user(user, *etc)


def test_missing_files_read_as_empty(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    assert resolve_user("1000:1000", missing, missing) == ExecUser(1000, 1000, (), "/", None)
    assert resolve_user("", None, None) == ExecUser(0, 0, (), "/", None)
    with pytest.raises(BuildError, match="unable to find user app"):
        resolve_user("app", missing, None)


def test_home_of_uid() -> None:
    assert home_of_uid(PASSWD, 1000) == "/home/app"
    assert home_of_uid(PASSWD, 7) == "/"


@pytest.mark.parametrize(
    ("user", "expected"),
    [("app", (1000, 1001, 1003)), ("app:extra", (1001,)), ("1234:1234", (1234,)),
     ("4242", (0,)), ("", (0, 10))],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_a_run_gets_the_primary_gid_first_in_its_groups(
        etc: tuple[Path, Path], user: str, expected: tuple[int, ...]) -> None:
    # BuildKit's ensureAdditionalGids (executor/oci/user.go): the primary gid is always
    # one of the process's groups, first, without a duplicate.
    assert resolve_user(user, *etc).additional_gids == expected
