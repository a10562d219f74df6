"""Unpack with file threads (issue 14): the same tree as one thread gives, never outside
the root, errors named as before.

Each crafted layer is applied three ways onto the same lower layer: on one thread
(``KANIPY_FILE_THREADS=1``, the reference), with real file threads, and with a
pool that runs a job only when its result is asked for, newest job first (the
latest and most reordered any scheduler could run them). A missing wait before a
removal, a replacement, a repeated path or a hardlink shows in the third way on
every run: a file written through a symlink planted after it was queued, a
replaced entry that comes back, a hardlink whose target is not there yet.
"""

from __future__ import annotations

import errno
import io
import os
import stat
import tarfile
import threading
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import pytest

from kanipy.errors import BuildError
from kanipy.fs import workers
from kanipy.fs.diskspace import disk_full_cause
from kanipy.fs.rootfs import Rootfs
from kanipy.fs.unpack import unpack_layer
from tests.fs.crafted_layers import entry, tar_of
from tests.tools import require_root, small_tmpfs

DIR, LNK, SYM = tarfile.DIRTYPE, tarfile.LNKTYPE, tarfile.SYMTYPE


class LatestFirstPool:
    """A stand-in for ThreadPoolExecutor: jobs run only when a result is waited for,
    then every job not run yet, newest first."""

    submitted = 0

    def __init__(self, *args: object, **kwargs: object) -> None:
        self._queued: list[tuple[Future[Any], Callable[..., Any], tuple[Any, ...]]] = []

    def submit(self, work: Callable[..., Any], *args: Any) -> Future[Any]:
        LatestFirstPool.submitted += 1
        future: Future[Any] = _Deferred(self)
        self._queued.append((future, work, args))
        return future

    def run_all(self) -> None:
        while self._queued:
            future, work, args = self._queued.pop()
            try:
                future.set_result(work(*args))
            except BaseException as exc:
                future.set_exception(exc)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        self._queued.clear()


class _Deferred(Future[Any]):
    def __init__(self, pool: LatestFirstPool) -> None:
        super().__init__()
        self._pool = pool

    def result(self, timeout: float | None = None) -> Any:
        if not self.done():
            self._pool.run_all()
        return super().result(timeout)


def layer(*entries: tuple[tarfile.TarInfo, bytes]) -> bytes:
    return tar_of(list(entries))


def tree(root: Path) -> dict[str, tuple[str, object]]:
    """What a user sees under ``root``: each path's type with its contents or target, mode."""
    seen: dict[str, tuple[str, object]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            st = os.lstat(path)
            rel = str(path.relative_to(root))
            if stat.S_ISLNK(st.st_mode):
                seen[rel] = ("link", os.readlink(path))
            elif stat.S_ISDIR(st.st_mode):
                seen[rel] = ("dir", oct(st.st_mode))
            else:
                seen[rel] = ("file", (path.read_bytes(), oct(st.st_mode), st.st_nlink))
    return seen


def apply(tmp_path: Path, how: str, layers: list[bytes],
          monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Exception | None]:
    """Unpack ``layers`` in order into a fresh root with file threads ``how``; the root
    and the error the last layer raised, if any."""
    top = tmp_path / how
    root = top / "root"
    root.mkdir(parents=True)
    (top / "outside").mkdir()
    with monkeypatch.context() as patch:
        patch.setenv("KANIPY_FILE_THREADS", "1" if how == "serial" else "4")
        if how == "latest-first":
            patch.setattr(workers, "ThreadPoolExecutor", LatestFirstPool)
        for data in layers[:-1]:
            unpack_layer(Rootfs(root), io.BytesIO(data), layer_name="lower")
        try:
            unpack_layer(Rootfs(root), io.BytesIO(layers[-1]), layer_name="upper")
        except BuildError as exc:
            return root, exc
    return root, None


LOWER = layer(entry("d/", DIR), entry("d/old", data=b"lower"), entry("d/sub/", DIR),
              entry("d/sub/old", data=b"lower"), entry("f", data=b"lower"),
              entry("s", SYM, linkname="d"))

# name -> (lower layer or None, upper layer), with "{outside}" in a link target
# standing for a directory beside the root.
CASES: dict[str, tuple[bytes | None, Callable[[str], bytes]]] = {
    # The attack: a directory made for a queued file becomes a symlink out, and a
    # later file goes through it. Nothing may land in ``outside``.
    "dir-replaced-by-symlink-out": (None, lambda out: layer(
        entry("a/x", data=b"x"), entry("a", SYM, linkname=out), entry("a/y", data=b"y"))),
    "dir-replaced-by-relative-symlink-up": (None, lambda out: layer(
        entry("a/", DIR), entry("a/x", data=b"x"), entry("a", SYM, linkname="../../outside"),
        entry("a/y", data=b"y"))),
    "file-then-whiteout-of-its-lower-dir": (LOWER, lambda out: layer(
        entry("d/new", data=b"new"), entry("d/sub/new", data=b"new"), entry(".wh.d"))),
    "file-then-whiteout-of-its-new-dir": (None, lambda out: layer(
        entry("n/", DIR), entry("n/x", data=b"x"), entry(".wh.n"))),
    "same-path-twice-last-wins": (None, lambda out: layer(
        entry("p", data=b"one"), entry("p", data=b"two", mode=0o600),
        entry("q", data=b"1"), entry("q", data=b"2"), entry("q", data=b"3"))),
    "same-path-over-lower-file": (LOWER, lambda out: layer(
        entry("f", data=b"upper", mode=0o640), entry("d/old", data=b"upper"))),
    "hardlink-to-queued-file": (None, lambda out: layer(
        entry("t", data=b"target"), entry("h", LNK, linkname="t"),
        entry("t2", data=b"second"), entry("sub/h2", LNK, linkname="t2"))),
    "file-then-dir-at-its-name": (None, lambda out: layer(
        entry("n", data=b"file"), entry("n/", DIR), entry("n/z", data=b"z"))),
    "dir-then-file-at-its-name": (None, lambda out: layer(
        entry("n/", DIR), entry("n/z", data=b"z"), entry("n", data=b"file"),
        entry("n/w", data=b"w"))),
    "file-over-lower-dir-then-below-it": (LOWER, lambda out: layer(
        entry("d", data=b"file now"), entry("d/again", data=b"again"))),
    "file-over-lower-symlink": (LOWER, lambda out: layer(
        entry("s/via", data=b"via"), entry("s", data=b"file now"), entry("s/y", data=b"y"))),
    "file-then-symlink-at-its-name": (None, lambda out: layer(
        entry("m", data=b"file"), entry("m", SYM, linkname=out))),
    "opaque-after-files": (LOWER, lambda out: layer(
        entry("d/new", data=b"new"), entry("d/sub/new", data=b"new"),
        entry("d/.wh..wh..opq"))),
    "opaque-after-files-explicit-dirs": (LOWER, lambda out: layer(
        entry("d/", DIR), entry("d/new", data=b"new"), entry("d/sub/", DIR),
        entry("d/sub/new", data=b"new"), entry("d/.wh..wh..opq"))),
    "symlink-then-file-through-it": (None, lambda out: layer(
        entry("real/", DIR), entry("l", SYM, linkname="real"), entry("l/x", data=b"x"))),
    "symlink-out-then-file-through-it": (None, lambda out: layer(
        entry("l", SYM, linkname=out), entry("l/x", data=b"x"))),
    "symlink-then-file-at-its-name": (None, lambda out: layer(
        entry("m", SYM, linkname="x"), entry("m", data=b"file"))),
    "symlink-then-hardlink-to-it": (None, lambda out: layer(
        entry("t", data=b"t"), entry("s", SYM, linkname="t"), entry("h", LNK, linkname="s"))),
    "symlinks-over-lower-entries": (LOWER, lambda out: layer(
        entry("d", SYM, linkname=out), entry("f", SYM, linkname="d"), entry("s", SYM,
                                                                        linkname="f"),
        entry("d/x", data=b"x"))),
    "many-files-then-parent-replaced": (None, lambda out: layer(
        *[entry(f"w/{i:03d}", data=b"%d" % i) for i in range(300)],
        entry("w", SYM, linkname=out), entry("w/after", data=b"after"))),
}


@pytest.mark.parametrize("name", list(CASES))
def test_threads_give_the_serial_tree_and_stay_inside(
        tmp_path: Path, name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    require_root()
    lower, upper = CASES[name]
    results = {}
    LatestFirstPool.submitted = 0
    for how in ("serial", "threads", "latest-first"):
        out = str(tmp_path / how / "outside")
        layers = ([lower] if lower else []) + [upper(out)]
        root, error = apply(tmp_path, how, layers, monkeypatch)
        assert os.listdir(tmp_path / how / "outside") == [], f"{how}: wrote outside the root"
        # Paths inside the root and link targets spell the outside directory's
        # name; compare them with it taken out.
        top = str(tmp_path / how)
        shown = {k.replace(top[1:], "TOP"): (kind, str(v).replace(top, "TOP"))
                 for k, (kind, v) in tree(root).items()}
        results[how] = (shown, str(error).replace(top, "TOP") if error else None)
    assert LatestFirstPool.submitted > 0, "the layer never reached the file threads"
    assert results["threads"] == results["serial"]
    assert results["latest-first"] == results["serial"]


def test_the_attack_lands_inside_the_root(tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """What the reference gives for the symlink attack: a/x gone with the directory,
    a/y under the root's own copy of the outside path."""
    require_root()
    out = str(tmp_path / "latest-first" / "outside")
    root, error = apply(tmp_path, "latest-first", [CASES["dir-replaced-by-symlink-out"][1](out)],
                        monkeypatch)
    assert error is None
    assert os.readlink(root / "a") == out
    assert (root / out.lstrip("/") / "y").read_bytes() == b"y"
    assert not (root / out.lstrip("/") / "x").exists()


def test_a_hardlink_to_a_queued_file_shares_it(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    require_root()
    root, error = apply(tmp_path, "latest-first", [CASES["hardlink-to-queued-file"][1]("")],
                        monkeypatch)
    assert error is None
    assert os.stat(root / "h").st_ino == os.stat(root / "t").st_ino
    assert (root / "sub/h2").read_bytes() == b"second"


def test_a_full_disk_in_a_file_thread_is_named_and_leaves_no_thread(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    require_root()
    monkeypatch.setenv("KANIPY_FILE_THREADS", "4")
    files = [entry(f"f{i:04d}", data=os.urandom(16 << 10)) for i in range(200)]
    with small_tmpfs(tmp_path / "tiny", "1m") as mount:
        with pytest.raises(BuildError) as caught:
            unpack_layer(Rootfs(mount), io.BytesIO(layer(*files)), layer_name="sha256:full")
        assert [t for t in threading.enumerate() if t.name.startswith("kanipy-files")] == []
        left = len(os.listdir(mount))
    message = str(caught.value)
    assert message.startswith("layer sha256:full: entry 'f0")
    assert message.endswith("cannot be applied: No space left on device")
    cause = disk_full_cause(caught.value)
    assert cause is not None and cause.errno == errno.ENOSPC
    assert 0 < left


def test_one_thread_uses_no_pool(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    require_root()
    LatestFirstPool.submitted = 0
    root, error = apply(tmp_path, "serial", [CASES["same-path-twice-last-wins"][1]("")],
                        monkeypatch)
    assert error is None and (root / "p").read_bytes() == b"two"
    monkeypatch.setattr(workers, "ThreadPoolExecutor", LatestFirstPool)
    monkeypatch.setenv("KANIPY_FILE_THREADS", "1")
    unpack_layer(Rootfs(root), io.BytesIO(layer(entry("r", data=b"r"))), layer_name="x")
    assert LatestFirstPool.submitted == 0


@pytest.mark.parametrize(("given", "expected"), [("1", 1), ("3", 3), ("0", 1), ("x", None)])
def test_file_threads_setting(monkeypatch: pytest.MonkeyPatch, given: str,
                              expected: int | None) -> None:
    monkeypatch.setenv("KANIPY_FILE_THREADS", given)
    count = workers.file_threads()
    if expected is None:
        assert 1 <= count <= 8
    else:
        assert count == expected


def test_without_a_setting_the_first_files_are_made_on_this_thread(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The probe: until the first files have shown that creation is slow here, nothing
    goes to the pool (on tmpfs, nothing ever does)."""
    require_root()
    monkeypatch.delenv("KANIPY_FILE_THREADS", raising=False)
    monkeypatch.setattr(workers, "ThreadPoolExecutor", LatestFirstPool)
    LatestFirstPool.submitted = 0
    root = tmp_path / "root"
    root.mkdir()
    files = [entry(f"f{i:02d}", data=b"%d" % i) for i in range(workers._PROBE_FILES)]
    unpack_layer(Rootfs(root), io.BytesIO(layer(*files)), layer_name="probe")
    assert LatestFirstPool.submitted == 0
    assert (root / "f07").read_bytes() == b"7"


@pytest.mark.parametrize("how", ["serial", "threads", "latest-first"])
def test_below_a_symlink_replaced_by_a_file_is_not_a_directory(
        tmp_path: Path, how: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """``usr/lib -> ../lib`` was looked up through (``usr/lib/a`` went to ``lib/a``), then
    replaced by a file: ``usr/lib/b`` has a file for a parent, as for Docker and GNU tar,
    and does not follow the removed link into ``lib``."""
    require_root()
    lower = layer(entry("lib/", DIR), entry("usr/", DIR), entry("usr/lib", SYM,
                                                                 linkname="../lib"))
    upper = layer(entry("usr/lib/a", data=b"a"), entry("usr/lib", data=b"a file now"),
                  entry("usr/lib/b", data=b"b"))
    root, error = apply(tmp_path, how, [lower, upper], monkeypatch)
    assert error is not None and str(error) == (
        "layer upper: entry 'usr/lib/b': a parent is not a directory")
    assert (root / "lib" / "a").read_bytes() == b"a"
    assert not (root / "lib" / "b").exists()
    assert (root / "usr" / "lib").read_bytes() == b"a file now"
