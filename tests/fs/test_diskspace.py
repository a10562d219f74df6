"""``no_space_left`` on a real full filesystem (a 1 MB tmpfs): the message names the mount,
its type, the work and the room it needs; the figure for work of unknown size is the room
it had taken when the disk filled (``room_taken_since``)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from kanipy.errors import BuildError
from kanipy.fs.diskspace import NoSpaceError, no_space_left, room_taken_since
from tests.tools import small_tmpfs


@pytest.fixture
def tiny_fs(tmp_path: Path) -> Iterator[Path]:
    with small_tmpfs(tmp_path / "tiny", "1m") as mount:
        yield mount


def fill(path: Path) -> None:
    with open(path, "wb") as f:
        for _ in range(64):
            f.write(os.urandom(64 * 1024))
            f.flush()
            os.fsync(f.fileno())


def test_work_of_unknown_size_reports_the_room_it_took(tiny_fs: Path) -> None:
    with pytest.raises(NoSpaceError) as info, \
            no_space_left([tiny_fs], "building stage 1", needs=room_taken_since([tiny_fs])):
        try:
            fill(tiny_fs / "root-file")
        except OSError as exc:
            # Wrapped as the build wraps it: the ENOSPC is found behind it.
            raise BuildError("COPY failed") from exc
    message = info.value.message
    assert info.value.exit_code == 1
    assert message.startswith(f"no space left on {tiny_fs} (tmpfs) while building stage 1 "
                              "(needs about 1 MB)"), message


def test_a_known_size_is_shown_and_other_errors_pass(tiny_fs: Path) -> None:
    with pytest.raises(NoSpaceError, match=r"while writing x \(needs about 5 MB\)"), \
            no_space_left(tiny_fs / "out", "writing x", needs=5_000_000):
        fill(tiny_fs / "out")
    with pytest.raises(PermissionError), no_space_left(tiny_fs, "writing y", needs=1):
        raise PermissionError("not a full disk")


def test_nothing_taken_gives_no_figure(tiny_fs: Path) -> None:
    taken = room_taken_since([tiny_fs])
    (tiny_fs / "small").write_bytes(b"x" * 100_000)
    assert (taken() or 0) >= 100_000
    (tiny_fs / "small").unlink()
    assert taken() is None
