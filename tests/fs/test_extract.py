"""extract_tar with ADD's and a context's rules: confinement, and where they differ from a layer."""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path, PurePosixPath

import pytest

from kanipy.errors import BuildError, ConfinementError
from kanipy.fs.rootfs import Rootfs
from kanipy.fs.unpack import CONTEXT_RULES, ExtractRules, add_archive_rules, extract_tar
from tests.tools import require_root

MTIME = 1_600_000_000
DEST = PurePosixPath("/x")


def entry(name: str, kind: bytes = tarfile.REGTYPE, data: bytes = b"", **kw: object
          ) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mtime = MTIME
    info.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
    for key, value in kw.items():
        setattr(info, key, value)
    return info, data


def archive(entries: list[tuple[tarfile.TarInfo, bytes]]) -> io.BytesIO:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in entries:
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data else None)
    out.seek(0)
    return out


@pytest.fixture()
def jail(tmp_path: Path) -> Rootfs:
    """A root at tmp/a/b/root holding /x, with a sentinel beside it that must never change."""
    root = tmp_path / "a" / "b" / "root"
    (root / "x").mkdir(parents=True)
    (tmp_path / "a" / "sentinel").write_text("untouched")
    return Rootfs(root)


def outside(rootfs: Rootfs) -> set[str]:
    top = rootfs.path.parents[2]
    return {str(p.relative_to(top)) for p in top.rglob("*")
            if not p.is_relative_to(rootfs.path)}


ADD = add_archive_rules(None, None)
RULES = {"add": ADD, "context": CONTEXT_RULES}
REFUSED = "refused"
# case -> the archive, and where its file lands (an image path) or REFUSED, per rules.
ESCAPES: dict[str, tuple[list[tuple[tarfile.TarInfo, bytes]], dict[str, str]]] = {
    "dotdot": ([entry("../../sentinel", data=b"pwned")],
               {"add": REFUSED, "context": REFUSED}),
    "dotdot-inside": ([entry("y/../../../sentinel", data=b"pwned")],
                      {"add": REFUSED, "context": REFUSED}),
    "absolute": ([entry("/sentinel", data=b"pwned")],
                 {"add": "/x/sentinel", "context": "/x/sentinel"}),
    "symlink-then-file": ([entry("evil", tarfile.SYMTYPE, linkname="../../.."),
                           entry("evil/sentinel", data=b"pwned")],
                          {"add": "/sentinel", "context": REFUSED}),
    "absolute-symlink-then-file": ([entry("evil", tarfile.SYMTYPE, linkname="/"),
                                    entry("evil/sentinel", data=b"pwned")],
                                   {"add": "/sentinel", "context": REFUSED}),
    "hardlink-outside": ([entry("link", tarfile.LNKTYPE, linkname="../../sentinel")],
                         {"add": REFUSED, "context": REFUSED}),
}


@pytest.mark.parametrize("rules_name", list(RULES), ids=list(RULES))
@pytest.mark.parametrize("case", list(ESCAPES), ids=list(ESCAPES))
def test_escapes_land_inside_the_root_or_are_refused(jail: Rootfs, case: str,
                                                     rules_name: str) -> None:
    entries, expected = ESCAPES[case]
    before = outside(jail)
    rules = RULES[rules_name]
    if expected[rules_name] == REFUSED:
        with pytest.raises(ConfinementError, match="evil archive: entry"):
            extract_tar(jail, archive(entries), what="evil archive", rules=rules, dest=DEST)
    else:
        extract_tar(jail, archive(entries), what="evil archive", rules=rules, dest=DEST)
        landed = jail.path / expected[rules_name].lstrip("/")
        assert landed.read_bytes() == b"pwned"
    assert (jail.path.parents[1] / "sentinel").read_text() == "untouched"
    assert os.lstat(jail.path.parents[1] / "sentinel").st_nlink == 1
    assert outside(jail) == before


def test_add_rules_merge_directories_and_keep_whiteout_names(jail: Rootfs) -> None:
    require_root()
    (jail.path / "x/keep").mkdir()
    (jail.path / "x/keep/old").write_text("old")
    stats = extract_tar(jail, archive([
        entry("./", tarfile.DIRTYPE, mode=0o700),         # the destination is left alone
        entry("keep/", tarfile.DIRTYPE, mode=0o750, uid=5, gid=6),
        entry("keep/new", data=b"new", uid=5, gid=6),
        entry("keep/.wh.old", data=b"not a whiteout"),
        entry("keep/link", tarfile.LNKTYPE, linkname="/keep/new"),
        entry("top.txt", data=b"top"),
    ]), what="a.tar", rules=ADD, dest=DEST)
    root = jail.path
    assert (root / "x/keep/old").read_text() == "old"
    assert (root / "x/keep/.wh.old").read_text() == "not a whiteout"
    assert os.lstat(root / "x/keep/link").st_ino == os.lstat(root / "x/keep/new").st_ino
    st = os.lstat(root / "x/keep")
    assert (oct(st.st_mode & 0o7777), st.st_uid, st.st_gid, int(st.st_mtime)) == \
        ("0o750", 5, 6, MTIME)
    assert os.lstat(root / "x").st_mode & 0o7777 == 0o755
    assert stats.top == frozenset({"keep", "top.txt"})


def test_add_rules_chown_overrides_the_archive_owner(jail: Rootfs) -> None:
    require_root()
    extract_tar(jail, archive([entry("f", data=b"f", uid=5, gid=6)]), what="a.tar",
                rules=add_archive_rules(7, None), dest=DEST)
    st = os.lstat(jail.path / "x/f")
    assert (st.st_uid, st.st_gid) == (7, 6)


def test_add_rules_never_replace_a_directory_with_a_file(jail: Rootfs) -> None:
    (jail.path / "x/d").mkdir()
    with pytest.raises(BuildError, match="'d' would replace the directory /x/d"):
        extract_tar(jail, archive([entry("d", data=b"file")]), what="a.tar", rules=ADD,
                    dest=DEST)
    assert (jail.path / "x/d").is_dir()


def test_layer_rules_replace_a_directory_with_a_file(jail: Rootfs) -> None:
    (jail.path / "x/d").mkdir()
    extract_tar(jail, archive([entry("x/d", data=b"file")]), what="layer",
                rules=ExtractRules(chown=False))
    assert (jail.path / "x/d").read_bytes() == b"file"


def test_context_rules_leave_owners_and_keep_inside_links(jail: Rootfs) -> None:
    extract_tar(jail, archive([
        entry("f", data=b"f", uid=12345, gid=12345, mode=0o775),
        entry("sub/", tarfile.DIRTYPE),
        entry("sub/up", tarfile.SYMTYPE, linkname="../f"),
    ]), what="context", rules=CONTEXT_RULES, dest=DEST)
    st = os.lstat(jail.path / "x/f")
    assert (st.st_uid, st.st_mode & 0o7777) == (os.geteuid(), 0o775)
    assert os.readlink(jail.path / "x/sub/up") == "../f"
