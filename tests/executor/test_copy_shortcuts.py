"""The COPY fast path's shortcuts, attacked (issue 14: per-file costs).

A copied regular file is created with its final mode and its metadata set on the open
descriptor; ``fchown`` is left out when the new file's owner is already right, ``fchmod``
when creation already gave the right bits, and ``.dockerignore``/``--exclude`` checks stop
below a directory no pattern can reach. Each test sets up what would make one of those
shortcuts wrong (a setgid directory, a umask, a default ACL, special bits, a link in the
way, a file that grew, patterns whose classes match "/") and checks what the user sees.
"""

from __future__ import annotations

import errno
import os
import stat
import struct
from pathlib import Path

import pytest

from kanipy.dockerfile.ignore import DockerIgnore
from kanipy.executor.handlers.copy_tree import Ownership, TreeWriter
from kanipy.fs.rootfs import Rootfs
from tests.executor.recording import image_root
from tests.executor.test_handlers import needs_root, owner_mode, steps


def _context_file(tmp_path: Path, rel: str, data: bytes, mode: int = 0o644) -> Path:
    path = tmp_path / "context" / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    os.chmod(path, mode)
    return path


def _root_with_dir(tmp_path: Path, rel: str, mode: int, gid: int = 0) -> Path:
    root = tmp_path / "root"
    image_root(root)
    directory = root / rel
    directory.mkdir(parents=True)
    os.chown(directory, 0, gid)
    os.chmod(directory, mode)
    return directory


def test_copy_into_a_setgid_directory_still_gives_the_copys_group(tmp_path: Path) -> None:
    """A new file in a setgid directory takes the directory's group, not the creator's:
    the copy must still chown it to 0:0 (from the context) or the --chown group."""
    needs_root()
    _context_file(tmp_path, "one.txt", b"1")
    _context_file(tmp_path, "tree/sub/two.txt", b"2")
    _root_with_dir(tmp_path, "shared", 0o2775, gid=4321)
    steps("FROM scratch\nCOPY one.txt tree/ /shared/\nCOPY --chown=0:0 one.txt /shared/b/\n",
          tmp_path)
    shared = tmp_path / "root" / "shared"
    assert owner_mode(shared / "one.txt") == (0, 0, 0o644)
    assert owner_mode(shared / "sub" / "two.txt") == (0, 0, 0o644)  # in a new subdirectory
    assert owner_mode(shared / "b" / "one.txt")[:2] == (0, 0)


@pytest.mark.parametrize("mode", [0o644, 0o666, 0o755, 0o777, 0o600, 0o000],
                         ids=["0644", "0666", "0755", "0777", "0600", "0000"])
def test_copy_keeps_modes_whatever_the_umask(tmp_path: Path, mode: int) -> None:
    _context_file(tmp_path, "tree/f", b"x", mode)
    _context_file(tmp_path, "g", b"y", mode)
    old = os.umask(0o077)
    try:
        steps("FROM scratch\nCOPY tree/ g /dst/\n", tmp_path)
    finally:
        os.umask(old)
    dst = tmp_path / "root" / "dst"
    assert stat.S_IMODE(os.lstat(dst / "f").st_mode) == mode
    assert stat.S_IMODE(os.lstat(dst / "g").st_mode) == mode


def _acl_xattr(entries: list[tuple[int, int]]) -> bytes:
    """A POSIX ACL as Linux stores it in an xattr: version 2, then (tag, perm, id)."""
    undefined_id = 0xFFFFFFFF
    return struct.pack("<I", 2) + b"".join(struct.pack("<HHI", tag, perm, undefined_id)
                                           for tag, perm in entries)


def test_copy_keeps_modes_in_a_directory_with_a_default_acl(tmp_path: Path) -> None:
    """A default ACL, not the umask, masks a new file's mode: here group and others get
    nothing, so a file created 0644 would be 0600 without a chmod."""
    needs_root()
    _context_file(tmp_path, "tree/f", b"x", 0o644)
    directory = _root_with_dir(tmp_path, "acl", 0o755)
    user_obj, group_obj, other = 0x01, 0x04, 0x20
    try:
        os.setxattr(directory, "system.posix_acl_default",
                    _acl_xattr([(user_obj, 7), (group_obj, 0), (other, 0)]))
    except OSError as exc:
        if exc.errno in (errno.EOPNOTSUPP, errno.ENOTSUP):
            pytest.skip("this filesystem has no POSIX ACLs")
        raise
    probe = directory / "probe"
    os.close(os.open(probe, os.O_CREAT | os.O_WRONLY, 0o644))
    assert stat.S_IMODE(os.lstat(probe).st_mode) == 0o600, "the ACL does not mask modes"
    probe.unlink()
    steps("FROM scratch\nCOPY tree/ /acl/\n", tmp_path)
    assert stat.S_IMODE(os.lstat(directory / "f").st_mode) == 0o644


def test_copy_keeps_special_bits_when_it_changes_the_owner(tmp_path: Path) -> None:
    """chown clears setuid and setgid: the mode has to be set after the owner."""
    needs_root()
    for name, mode in (("suid", 0o4755), ("sgid", 0o2755), ("sticky", 0o1777)):
        _context_file(tmp_path, f"tree/{name}", b"x", mode)
    steps("FROM scratch\nCOPY --chown=1000:1000 tree/ /dst/\nCOPY tree/ /root0/\n", tmp_path)
    for top, ids in (("dst", (1000, 1000)), ("root0", (0, 0))):
        dst = tmp_path / "root" / top
        assert owner_mode(dst / "suid") == (*ids, 0o4755)
        assert owner_mode(dst / "sgid") == (*ids, 0o2755)
        assert owner_mode(dst / "sticky") == (*ids, 0o1777)


def test_copy_replaces_links_in_its_way_without_following_them(tmp_path: Path) -> None:
    _context_file(tmp_path, "tree/f", b"new")
    _context_file(tmp_path, "tree/dangling", b"new too")
    outside = tmp_path / "outside.txt"
    outside.write_bytes(b"keep")
    dst = _root_with_dir(tmp_path, "dst", 0o755)
    os.symlink(outside, dst / "f")
    os.symlink("/nowhere/at/all", dst / "dangling")
    (dst / "dir").mkdir()
    steps("FROM scratch\nCOPY tree/ /dst/\n", tmp_path)
    assert outside.read_bytes() == b"keep"
    assert not os.path.islink(dst / "f") and (dst / "f").read_bytes() == b"new"
    assert not os.path.islink(dst / "dangling")
    assert (dst / "dangling").read_bytes() == b"new too"
    assert not Path("/nowhere/at/all").exists()


def test_copy_of_a_file_that_grew_since_its_lstat_copies_all_of_it(tmp_path: Path) -> None:
    """The small-file read takes one byte more than the lstat said, so a file that grew
    in between is copied whole; the same for a large file (sendfile) and for sizes at
    the edge between the two."""
    src, dest = tmp_path / "src", tmp_path / "root"
    src.mkdir()
    dest.mkdir()
    writer = TreeWriter(Rootfs(dest), Ownership(0, 0), None)
    for size in (0, 1, 511, 1 << 16, (1 << 16) + 1, 3 << 20):
        path = src / f"f{size}"
        path.write_bytes(os.urandom(size))
        st = os.lstat(path)
        with open(path, "ab") as fh:
            fh.write(b"grown")
        writer.copy_entry(path, dest / path.name, st=st)
        assert (dest / path.name).read_bytes() == path.read_bytes()
        assert os.lstat(dest / path.name).st_mtime_ns == st.st_mtime_ns


# --- .dockerignore and --exclude: checks that stop below a directory ---------------------

PATTERN_SETS = [
    ("top-level only", ["Dockerfile.body", ".complete"]),
    ("a class matching /", ["small/d00[!x]e0"]),
    ("a class matching / higher up", ["small[!a]d01/e1"]),
    ("an escape", ["small/d\\00/e0"]),
    ("double star", ["**/f.txt"]),
    ("double star inside", ["small/**/e1"]),
    ("star segments", ["small/*/e0/*"]),
    ("question marks", ["small/d0?/e?/f.txt"]),
    ("exception below an excluded directory", ["small/d00", "!small/d00/e1/f.txt"]),
    ("exception with a star", ["small", "!small/*/e0"]),
    ("leading slash", ["/small/d01"]),
    ("dot segments", ["small/./d00/../d01/e0"]),
    ("deeper than the tree", ["small/d00/e0/f.txt/more"]),
]

TREE = [f"small/d0{d}/e{e}/{name}" for d in range(3) for e in range(2)
        for name in ("f.txt", "g.txt")] + ["small/Dockerfile.body", "Dockerfile.body"]


def _directories(paths: list[str]) -> list[str]:
    found = {""}
    for path in paths:
        parts = path.split("/")
        found.update("/".join(parts[:n]) for n in range(1, len(parts)))
    return sorted(found)


@pytest.mark.parametrize("patterns", [p for _, p in PATTERN_SETS],
                         ids=[name for name, _ in PATTERN_SETS])
def test_no_pattern_can_match_below_means_nothing_below_changes(patterns: list[str]) -> None:
    """Where ``may_match_below`` says no, every path below is excluded exactly as its
    directory is: the walk may stop asking there."""
    ignore = DockerIgnore(patterns)
    for directory in _directories(TREE):
        if ignore.may_match_below(directory):
            continue
        for path in TREE:
            if path.startswith(directory + "/"):
                assert ignore.excludes(path) == ignore.excludes(directory), (directory, path)


def _expected_copy(rules: DockerIgnore, source: str, from_source: bool) -> set[str]:
    """What COPY source/ copies, asking the rules about every entry (the rule without
    the shortcut: a directory is entered when not excluded or when it must be walked).
    Paths are matched from the context root, or from the source (``--exclude``)."""
    kept: set[str] = set()
    for path in TREE:
        if not path.startswith(source + "/"):
            continue
        rel = path[len(source) + 1:]
        parts = rel.split("/")

        def name(upto: int, parts: list[str] = parts) -> str:
            below = "/".join(parts[:upto])
            return below if from_source else source + "/" + below

        entered = all(not rules.excludes(name(depth)) or rules.must_walk(name(depth))
                      for depth in range(1, len(parts)))
        if entered and not rules.excludes(name(len(parts))):
            kept.add(rel)
    return kept


def _copied(tmp_path: Path) -> set[str]:
    top = tmp_path / "root" / "small"
    return {str(p.relative_to(top)) for p in top.rglob("*") if p.is_file()}


@pytest.mark.parametrize("patterns", [p for _, p in PATTERN_SETS],
                         ids=[name for name, _ in PATTERN_SETS])
def test_copy_leaves_out_what_the_ignore_file_says(tmp_path: Path, patterns: list[str]) -> None:
    for path in TREE:
        _context_file(tmp_path, path, path.encode())
    steps("FROM scratch\nCOPY small/ /small/\n", tmp_path, ignore=patterns)
    assert _copied(tmp_path) == _expected_copy(DockerIgnore(patterns), "small", False)


@pytest.mark.parametrize("exclude", ["d00[!x]e0", "*/e1", "**/g.txt", "d01", "d0?/e0/f.txt",
                                     "Dockerfile.body"])
def test_copy_exclude_leaves_out_what_it_names(tmp_path: Path, exclude: str) -> None:
    for path in TREE:
        _context_file(tmp_path, path, path.encode())
    steps(f"FROM scratch\nCOPY --exclude={exclude} small/ /small/\n", tmp_path)
    assert _copied(tmp_path) == _expected_copy(DockerIgnore([exclude]), "small", True)
