"""Every crafted layer (tests/fs/crafted_layers.py) through unpack_layer: each is refused
with a named error or stays confined to the root, and nothing outside the root changes."""

from __future__ import annotations

import io
import os
import re
from pathlib import Path

import pytest

from kanipy.fs import unpack
from kanipy.fs.rootfs import Rootfs
from kanipy.fs.tarreader import TarReader
from kanipy.fs.unpack import unpack_layer
from tests.fs.crafted_layers import Crafted, crafted_layers
from tests.tools import require_root

LAYERS = {layer.name: layer for layer in crafted_layers()}


def snapshot_outside(top: Path, root: Path) -> dict[str, tuple[int, int, int, bytes]]:
    """Every path under ``top`` except the root's contents: mode, links, size, contents."""
    seen: dict[str, tuple[int, int, int, bytes]] = {}
    for dirpath, dirnames, filenames in os.walk(top):
        if Path(dirpath) == root:
            dirnames[:] = []
            continue
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            if path == root:
                continue  # its link count and size change with what is unpacked into it
            st = os.lstat(path)
            body = path.read_bytes() if path.is_file() and not path.is_symlink() else b""
            seen[str(path.relative_to(top))] = (st.st_mode, st.st_nlink, st.st_size, body)
    return seen


class CountingReader(TarReader):
    """A TarReader that counts the content bytes it hands out (the unpacker's work)."""

    handed_out = 0

    def read(self, n: int = 1 << 20) -> memoryview:
        view = super().read(n)
        CountingReader.handed_out += len(view)
        return view

    def read_stored(self, n: int = 1 << 20) -> tuple[int, memoryview]:
        offset, view = super().read_stored(n)
        CountingReader.handed_out += len(view)
        return offset, view


@pytest.mark.parametrize("name", list(LAYERS))
def test_crafted_layer_is_refused_or_confined(tmp_path: Path, name: str,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    require_root()
    layer: Crafted = LAYERS[name]
    # tmp/sentinel (above), tmp/a/sentinel (beside), tmp/a/root: the root.
    root = tmp_path / "a" / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc/passwd").write_text("root:x:0:0::/root:/bin/sh\n")
    (root / "up").symlink_to("../..")
    (tmp_path / "sentinel").write_text("above\n")
    (tmp_path / "a" / "sentinel").write_text("beside\n")
    before = snapshot_outside(tmp_path, root)
    monkeypatch.setattr(unpack, "TarReader", CountingReader)
    CountingReader.handed_out = 0

    if layer.error is not None:
        with pytest.raises(layer.error) as caught:
            unpack_layer(Rootfs(root), io.BytesIO(layer.data), layer_name=f"sha256:{name}")
        assert type(caught.value) is layer.error
        message = str(caught.value)
        assert message.startswith(f"layer sha256:{name}: "), message
        assert layer.match and re.search(layer.match, message), message
        assert len(message) < 600, "a long name is shortened in the message"
    else:
        unpack_layer(Rootfs(root), io.BytesIO(layer.data), layer_name=f"sha256:{name}")
        assert layer.check is not None
        layer.check(root)

    assert root.is_dir()
    assert snapshot_outside(tmp_path, root) == before
    # The work is bounded by the bytes the layer holds, not by the sizes it declares.
    assert CountingReader.handed_out <= len(layer.data)


def test_repeated_opaque_markers_clear_a_directory_once(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each marker used to scan the directory again: quadratic in a layer of markers."""
    require_root()
    from tests.fs.crafted_layers import entry, tar_of

    root = tmp_path / "root"
    (root / "d").mkdir(parents=True)
    (root / "d/lower").write_text("from a lower layer\n")
    layer = tar_of([entry(f"d/f{i}", data=b"x") for i in range(300)]
                   + [entry("d/.wh..wh..opq") for _ in range(300)])
    scans: list[str] = []
    real_scandir = os.scandir

    def counting_scandir(path: str) -> object:
        scans.append(str(path))
        return real_scandir(path)

    monkeypatch.setattr(unpack.os, "scandir", counting_scandir)
    unpack_layer(Rootfs(root), io.BytesIO(layer), layer_name="opaque")
    monkeypatch.undo()
    assert sorted(p.name for p in (root / "d").iterdir()) == sorted(f"f{i}" for i in range(300))
    assert scans == [str(root / "d")]
