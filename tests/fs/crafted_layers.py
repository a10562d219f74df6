"""Crafted layers: hostile or malformed tar streams that unpack must survive (issue 11).

Each one is built here at test time with ``tarfile`` and, where ``tarfile``
will not write the bytes an attacker would, by patching a header by hand; no
binary blobs are kept. Every layer comes with what unpacking it must give:
either a refusal (the error class and the entry named in the message) or a
result confined to the root (a check on the root). The tests run every one
through ``unpack_layer`` with sentinel files beside and above the root.

As a script, it writes the layers out for trying other tools on them:

    python -m tests.fs.crafted_layers OUTDIR    # OUTDIR/NAME.tar for each layer
"""

from __future__ import annotations

import io
import os
import sys
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from kanipy.errors import BuildError, ConfinementError, IntegrityError, KanipyError

MTIME = 1_600_000_000
BLOCK = 512
GIB = 1 << 30


@dataclass(frozen=True)
class Crafted:
    """A crafted layer and what unpacking it must give, onto a root that holds
    ``etc/passwd`` and ``up -> ../..`` (as a lower layer left them)."""

    name: str
    data: bytes  # the uncompressed tar
    error: type[KanipyError] | None  # None: it unpacks, and ``check`` holds
    match: str = ""  # a regex the error message must contain (it names the entry)
    check: Callable[[Path], None] | None = None  # on the root, for layers that unpack


def entry(name: str, kind: bytes = tarfile.REGTYPE, data: bytes = b"",
          **fields: object) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mtime = MTIME
    info.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
    info.size = len(data)
    for key, value in fields.items():
        setattr(info, key, value)
    return info, data


def tar_of(entries: list[tuple[tarfile.TarInfo, bytes]],
           fmt: int = tarfile.PAX_FORMAT, global_headers: dict[str, str] | None = None) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=fmt, pax_headers=global_headers) as tar:
        for info, data in entries:
            tar.addfile(info, io.BytesIO(data) if data else None)
    return out.getvalue()


def patch_header(data: bytes, index: int, start: int, value: bytes) -> bytes:
    """Put ``value`` at byte ``start`` of the ``index``-th header block (of the
    blocks that are headers in a tar of data-less entries) and fix its checksum."""
    buf = bytearray(data)
    at = index * BLOCK
    buf[at + start : at + start + len(value)] = value
    buf[at + 148 : at + 156] = b" " * 8
    buf[at + 148 : at + 156] = b"%06o\0 " % sum(buf[at : at + BLOCK])
    return bytes(buf)


def sparse_entry(name: str, realsize: int, segments: list[tuple[int, bytes]]
                 ) -> tuple[tarfile.TarInfo, bytes]:
    """A GNU sparse 1.0 file (as ``tar --format=posix --sparse`` writes it): the
    map's decimal lines padded to a block, then the data of each segment."""
    lines = [str(len(segments))]
    for offset, chunk in segments:
        lines += [str(offset), str(len(chunk))]
    sparse_map = ("\n".join(lines) + "\n").encode()
    body = sparse_map + bytes(-len(sparse_map) % BLOCK) + b"".join(c for _, c in segments)
    return entry(f"GNUSparseFile.0/{name}", data=body, pax_headers={
        "GNU.sparse.major": "1", "GNU.sparse.minor": "0", "GNU.sparse.name": name,
        "GNU.sparse.realsize": str(realsize)})


# -- checks for the layers that unpack -------------------------------------------------


def _sparse_bomb_is_holes(root: Path) -> None:
    st = os.lstat(root / "bomb")
    assert st.st_size == 4 * GIB
    assert st.st_blocks * 512 <= 1 << 20, "the holes were written"
    with open(root / "bomb", "rb") as f:
        f.seek(4 * GIB - 5)
        assert f.read() == b"tail!"


def _many_segments(root: Path) -> None:
    st = os.lstat(root / "segments")
    assert st.st_size == MANY * 4096
    with open(root / "segments", "rb") as f:
        f.seek((MANY - 1) * 4096)
        assert f.read(1) == b"x"


def _symlink_replaced_not_followed(root: Path) -> None:
    assert (root / "link").read_bytes() == b"replaced"
    assert not (root / "link").is_symlink()


def _hardlink_to_symlink(root: Path) -> None:
    assert os.readlink(root / "hard") == "../../../sentinel"
    assert os.lstat(root / "hard").st_ino == os.lstat(root / "soft").st_ino


def _nested_500(root: Path) -> None:
    assert (root / ("a/" * 499 + "f")).read_bytes() == b"x"


def _two_hundred_files(root: Path) -> None:
    assert all((root / f"f{i}").read_bytes() == b"x" for i in range(200))


def _file_x_unpacked(root: Path) -> None:
    assert (root / "x").read_bytes() == b"a"  # the xattr is reported, not set


def _opaque_at_root(root: Path) -> None:
    assert sorted(p.name for p in root.iterdir()) == ["new"]


def _whiteout_of_symlink(root: Path) -> None:
    assert not os.path.lexists(root / "up")
    assert (root / "etc/passwd").exists()


def _chain_of_40_followed(root: Path) -> None:
    assert (root / "d/f").read_bytes() == b"x"


def _link_to_queued_dir_followed(root: Path) -> None:
    assert (root / "usr/lib/x").read_bytes() == b"through"
    assert os.readlink(root / "lib") == "usr/lib"


def _second_write_wins(root: Path) -> None:
    assert (root / "f").read_bytes() == b"second"
    assert (root / "s").read_bytes() == b"file now"


def _hardlink_to_queued_file(root: Path) -> None:
    assert os.lstat(root / "h").st_ino == os.lstat(root / "d/f299").st_ino
    assert (root / "h").read_bytes() == b"299"


def _dir_replaced_by_link_keeps_its_target(root: Path) -> None:
    assert os.readlink(root / "d") == "../../sentinel"


def _dir_entry_replaces_symlink(root: Path) -> None:
    assert not (root / "up").is_symlink() and (root / "up").is_dir()
    assert (root / "up/sentinel").read_bytes() == b"inside"


def _links_replace_what_is_there(root: Path) -> None:
    assert os.readlink(root / "up") == "etc"
    assert os.readlink(root / "etc") == "nowhere"
    assert not os.path.lexists(root / "etc/passwd")


def _queued_files(count: int) -> list[tuple[tarfile.TarInfo, bytes]]:
    """A directory of ``count`` files ahead of the entries under test."""
    return [entry("d/", tarfile.DIRTYPE),
            *[entry(f"d/f{i}", data=str(i).encode()) for i in range(count)]]


MANY = 20_000  # sparse segments; the map alone is about 200 KB


def crafted_layers() -> list[Crafted]:
    """Every crafted layer, built now (the sparse ones cost a few hundred KB)."""
    long_path = "/".join(["d" * 200] * 21)  # 4220 bytes, every component legal
    dev = entry("dev", tarfile.CHRTYPE, devmajor=1, devminor=3)
    return [
        # 1. Whiteouts naming the directory itself or its parent.
        Crafted("whiteout-dotdot", tar_of([entry(".wh...")]), ConfinementError,
                r"entry '\.wh\.\.\.' is a whiteout of '\.\.'"),
        Crafted("whiteout-dot", tar_of([entry(".wh..")]), ConfinementError,
                r"entry '\.wh\.\.' is a whiteout of '\.'"),
        Crafted("whiteout-empty", tar_of([entry(".wh.")]), ConfinementError,
                r"entry '\.wh\.' is a whiteout of ''"),
        Crafted("whiteout-dotdot-nested", tar_of([entry("etc/.wh...")]), ConfinementError,
                r"entry 'etc/\.wh\.\.\.'"),
        Crafted("whiteout-dot-nested", tar_of([entry("etc/.wh..")]), ConfinementError,
                r"entry 'etc/\.wh\.\.'"),
        Crafted("whiteout-dotdot-after-dir", tar_of([
            entry("sub/", tarfile.DIRTYPE), entry("sub/.wh...")]), ConfinementError,
            r"entry 'sub/\.wh\.\.\.'"),
        # 2. Work bounded by what the layer holds.
        Crafted("sparse-bomb-4gib", tar_of([sparse_entry(
            "bomb", 4 * GIB, [(4 * GIB - 5, b"tail!")])]), None,
            check=_sparse_bomb_is_holes),
        Crafted("sparse-many-segments", tar_of([sparse_entry(
            "segments", MANY * 4096, [(i * 4096, b"x") for i in range(MANY)])]), None,
            check=_many_segments),
        # Nesting: the root is made and cleaned by walkers that recurse per level.
        Crafted("nesting-1500", tar_of([entry("a/" * 1500 + "f", data=b"x")]), BuildError,
                r"entry 'a/a/.*/f' is nested more than 512 directories deep"),
        Crafted("nesting-through-symlink", tar_of([
            entry("s", tarfile.SYMTYPE, linkname="a/" * 400),
            entry("s/" + "b/" * 400 + "f", data=b"x")]), BuildError,
            r"entry 's/b/.*/f' is nested more than 512"),
        Crafted("nesting-dirs-1000", tar_of([
            entry("a/" * i, tarfile.DIRTYPE) for i in range(1, 1001)]), BuildError,
            r"entry 'a/a/.*' is nested more than 512"),
        Crafted("nesting-500", tar_of([entry("a/" * 499 + "f", data=b"x")]), None,
                check=_nested_500),
        # Global pax records apply to every entry: junk is dropped, a flood refused.
        Crafted("pax-global-junk", tar_of(
            [entry(f"f{i}", data=b"x") for i in range(200)],
            global_headers={f"junk.{i}": "x" for i in range(20_000)}), None,
            check=_two_hundred_files),
        Crafted("pax-global-xattr-flood", tar_of(
            [entry("f", data=b"x")],
            global_headers={f"SCHILY.xattr.user.{i}": "x" for i in range(100)}),
            IntegrityError, r"pax global headers carry 100 records for every entry"),
        # 3. Entries no Linux filesystem can hold.
        Crafted("name-component-300", tar_of([entry("x" * 300, data=b"a")]), BuildError,
                r"entry 'x+\.\.\.x+' has a name component of 300 bytes, over the 255"),
        Crafted("path-over-4096", tar_of([entry(long_path, data=b"a")]), BuildError,
                r"entry 'd+\.\.\.d+' has a path of 4220 bytes, over the 4095"),
        Crafted("symlink-target-5000", tar_of([entry("sym", tarfile.SYMTYPE,
                                                      linkname="t" * 5000)]), BuildError,
                r"entry 'sym' cannot be applied: File name too long"),
        Crafted("hardlink-to-directory", tar_of([
            entry("dir/", tarfile.DIRTYPE),
            entry("hl", tarfile.LNKTYPE, linkname="dir")]), BuildError,
            r"entry 'hl' is a hardlink to a directory"),
        Crafted("hardlink-to-missing", tar_of([
            entry("hl", tarfile.LNKTYPE, linkname="etc/nothing")]), BuildError,
            r"hardlink 'hl' -> 'etc/nothing': the target does not exist"),
        Crafted("pax-path-nul", tar_of([entry("ok", data=b"a", pax_headers={
            "path": "etc/a\0b"})]), BuildError, r"entry 'etc/a\\x00b' has a NUL byte"),
        Crafted("pax-linkpath-nul", tar_of([entry("sym", tarfile.SYMTYPE, pax_headers={
            "linkpath": "/etc/passwd\0x"})]), BuildError,
            r"entry 'sym' has a NUL byte in its link target"),
        Crafted("pax-mtime-huge", tar_of([entry("m", data=b"a", pax_headers={
            "mtime": str(10**30)})]), BuildError, r"entry 'm' has mtime 10{30}, out of"),
        Crafted("pax-mtime-huge-dir", tar_of([entry("d/", tarfile.DIRTYPE, pax_headers={
            "mtime": str(10**30)})]), BuildError, r"entry 'd' has mtime"),
        Crafted("pax-uid-huge", tar_of([entry("u", data=b"a", pax_headers={
            "uid": str(10**30)})]), BuildError, r"entry 'u' has uid 10{30}, out of range"),
        Crafted("pax-gid-huge", tar_of([entry("g", tarfile.SYMTYPE, linkname="x",
                                              pax_headers={"gid": str(2**32)})]),
                BuildError, r"entry 'g' has gid 4294967296"),
        Crafted("negative-uid-base256", patch_header(
            tar_of([entry("neg", tarfile.DIRTYPE)], tarfile.GNU_FORMAT), 0, 108,
            b"\xff" * 8), BuildError, r"entry 'neg' has uid -1, out of range"),
        Crafted("pax-devmajor-huge", tar_of([entry("dev", tarfile.CHRTYPE, pax_headers={
            "SCHILY.devmajor": str(10**30)})]), BuildError,
            r"entry 'dev' has device number 10{30}:0"),
        Crafted("devmajor-4096", patch_header(tar_of([dev], tarfile.USTAR_FORMAT), 0, 329,
                                              b"0010000\0"), BuildError,
                r"entry 'dev' has device number 4096:3"),
        Crafted("devminor-2-to-20", patch_header(tar_of([dev], tarfile.USTAR_FORMAT), 0, 337,
                                                 b"4000000\0"), BuildError,
                r"entry 'dev' has device number 1:1048576"),
        Crafted("pax-xattr-name-nul", tar_of([entry("x", data=b"a", pax_headers={
            "SCHILY.xattr.user.a\0b": "v"})]), None, check=_file_x_unpacked),
        # Symlink expansion is capped as the kernel caps it (40 links per lookup),
        # which bounds the work of resolving one entry's parent.
        Crafted("symlink-loop-through-dotdot", tar_of([
            entry("d/", tarfile.DIRTYPE),
            entry("s", tarfile.SYMTYPE, linkname="d/../" * 800 + "s"),
            *[entry(f"s/f{i}", data=b"x") for i in range(10)]]), ConfinementError,
            r"entry 's/f0' .*too many levels of symbolic links resolving /s"),
        Crafted("symlink-chain-41", tar_of([
            entry("d/", tarfile.DIRTYPE), entry("c0", tarfile.SYMTYPE, linkname="d"),
            *[entry(f"c{i}", tarfile.SYMTYPE, linkname=f"c{i - 1}") for i in range(1, 41)],
            entry("c40/f", data=b"x")]), ConfinementError,
            r"entry 'c40/f' .*too many levels of symbolic links resolving /c40"),
        Crafted("symlink-chain-40", tar_of([
            entry("d/", tarfile.DIRTYPE), entry("c0", tarfile.SYMTYPE, linkname="d"),
            *[entry(f"c{i}", tarfile.SYMTYPE, linkname=f"c{i - 1}") for i in range(1, 40)],
            entry("c39/f", data=b"x")]), None, check=_chain_of_40_followed),
        # Confined: whatever is at a path is replaced, never followed.
        Crafted("symlink-out-then-file", tar_of([
            entry("link", tarfile.SYMTYPE, linkname="../../sentinel"),
            entry("link", data=b"replaced")]), None, check=_symlink_replaced_not_followed),
        Crafted("hardlink-to-symlink-out", tar_of([
            entry("soft", tarfile.SYMTYPE, linkname="../../../sentinel"),
            entry("hard", tarfile.LNKTYPE, linkname="soft")]), None,
            check=_hardlink_to_symlink),
        Crafted("opaque-at-root", tar_of([entry("new", data=b"n"), entry(".wh..wh..opq")]),
                None, check=_opaque_at_root),
        Crafted("whiteout-of-symlink-out", tar_of([entry(".wh.up")]), None,
                check=_whiteout_of_symlink),
        Crafted("whiteout-through-symlink-out", tar_of([entry("up/.wh.sentinel")]),
                ConfinementError, r"entry 'up/\.wh\.sentinel' has a parent path that leads"),
        Crafted("file-through-symlink-out", tar_of([entry("up/sentinel", data=b"pwned")]),
                ConfinementError, r"entry 'up/sentinel' has a parent path that leads"),
        # 4. A path written earlier in the same layer is what later entries meet: a
        # directory replaced by a symlink leaving the root, a symlink resolved, a
        # name given twice, a hardlink to a file just written (issue 14 tried
        # writing files on threads; these are the orders that must hold).
        Crafted("queued-dir-replaced-by-symlink-out", tar_of([
            *_queued_files(300), entry("d", tarfile.SYMTYPE, linkname="../.."),
            entry("d/sentinel", data=b"pwned")]), ConfinementError,
            r"entry 'd/sentinel' has a parent path that leads"),
        Crafted("queued-symlink-resolved", tar_of([
            *_queued_files(300), entry("usr/", tarfile.DIRTYPE),
            entry("usr/lib/", tarfile.DIRTYPE),
            entry("lib", tarfile.SYMTYPE, linkname="usr/lib"),
            entry("lib/x", data=b"through")]), None, check=_link_to_queued_dir_followed),
        Crafted("queued-path-named-twice", tar_of([
            *_queued_files(300), entry("f", data=b"first"),
            entry("s", tarfile.SYMTYPE, linkname="../../sentinel"),
            entry("f", data=b"second"), entry("s", data=b"file now")]), None,
            check=_second_write_wins),
        # Directories and symlinks are created first and what is there looked at
        # only on EEXIST; a directory's mode and mtime are set after the layer.
        Crafted("dir-replaced-by-symlink-out-before-its-mode", tar_of([
            entry("d/", tarfile.DIRTYPE, mode=0o777), entry("d/f", data=b"x"),
            entry("d", tarfile.SYMTYPE, linkname="../../sentinel")]), None,
            check=_dir_replaced_by_link_keeps_its_target),
        Crafted("dir-entry-over-symlink-out", tar_of([
            entry("up/", tarfile.DIRTYPE, mode=0o777), entry("up/sentinel", data=b"inside")]),
            None, check=_dir_entry_replaces_symlink),
        Crafted("symlinks-over-symlink-and-dir", tar_of([
            entry("up", tarfile.SYMTYPE, linkname="etc"),
            entry("etc", tarfile.SYMTYPE, linkname="nowhere")]), None,
            check=_links_replace_what_is_there),
        Crafted("queued-file-hardlinked", tar_of([
            *_queued_files(300), entry("h", tarfile.LNKTYPE, linkname="d/f299")]), None,
            check=_hardlink_to_queued_file),
    ]


def _main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    out = Path(argv[0])
    out.mkdir(parents=True, exist_ok=True)
    for layer in crafted_layers():
        (out / f"{layer.name}.tar").write_bytes(layer.data)
        print(out / f"{layer.name}.tar")
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))

__all__ = ["Crafted", "crafted_layers", "entry", "patch_header", "sparse_entry", "tar_of"]
