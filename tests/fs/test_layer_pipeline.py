"""The layer writer's two threads (issue 14): the same bytes as one thread wrote them.

A layer past its first MiB is compressed on a second thread. ISA-L's deflate
output depends on where its input is cut, so the handing over must keep the tar
writer's writes as they were: these tests compare blob digests with the
single-threaded path and with a digest pinned at the commit before the change.
"""

from __future__ import annotations

import hashlib
import os
import random
from pathlib import Path

import pytest
import zstandard

from kanipy.fs import layer as layer_module
from kanipy.fs.layer import write_layer
from kanipy.fs.snapshot import changes_for_paths
from kanipy.oci import mediatypes
from kanipy.oci.blobstore import BlobStore
from tests.tools import require_root

MEDIA = {"gzip": mediatypes.OCI_LAYER_GZIP,
         "zstd": "application/vnd.oci.image.layer.v1.tar+zstd"}
# write_layer's gzip blob of seeded_tree() before the second thread existed (079d427).
PINNED_GZIP = "sha256:ebc6a3c0a8475d42dbdc17917418063c227e28e077a4b489f3d37a2be87a593f"


def seeded_tree(root: Path) -> Path:
    """18 MB in six files, half random and half text, and one small file; owned by root."""
    data = root / "data"
    data.mkdir(parents=True)
    rng = random.Random(1)
    for i in range(6):
        (data / f"f{i}.bin").write_bytes(rng.randbytes(1_500_000) + b"text line\n" * 150_000)
    (data / "small").write_text("x")
    for path in [data, *data.iterdir()]:
        os.chmod(path, 0o755 if path.is_dir() else 0o644)
        os.chown(path, 0, 0)
    return root


def _layer(root: Path, store: BlobStore, compression: str, zstd_threads: int = 0):
    changes = changes_for_paths(str(root), ["/data"], frozenset())
    blob = write_layer(root, changes, store, compression=compression,
                       media_type=MEDIA[compression], mtime_clamp=0, zstd_threads=zstd_threads)
    assert blob is not None
    return blob


@pytest.mark.parametrize("compression", ["gzip", "zstd"])
def test_the_second_thread_writes_the_bytes_one_thread_writes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, compression: str) -> None:
    require_root()
    root = seeded_tree(tmp_path / "root")
    store = BlobStore(tmp_path / "store")
    threaded = _layer(root, store, compression)
    monkeypatch.setattr(layer_module, "_HANDOFF", 1 << 40)  # never start the thread
    direct = _layer(root, store, compression)
    assert threaded.descriptor == direct.descriptor
    assert threaded.diff_id == direct.diff_id
    assert threaded.uncompressed_size > 8 << 20  # the thread did run


def test_gzip_layer_digest_is_the_one_before_the_change(tmp_path: Path) -> None:
    require_root()
    root = seeded_tree(tmp_path / "root")
    blob = _layer(root, BlobStore(tmp_path / "store"), "gzip")
    assert str(blob.descriptor.digest) == PINNED_GZIP


def test_multithreaded_zstd_holds_the_same_tar(tmp_path: Path) -> None:
    require_root()
    root = seeded_tree(tmp_path / "root")
    store = BlobStore(tmp_path / "store")
    single = _layer(root, store, "zstd", zstd_threads=0)
    multi = _layer(root, store, "zstd", zstd_threads=-1)
    assert multi.diff_id == single.diff_id
    # Decompressed by zstandard itself, the blob is the tar its diff_id names.
    hasher = hashlib.sha256()
    with store.open(multi.descriptor.digest) as raw:
        reader = zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True)
        while piece := reader.read(1 << 20):
            hasher.update(piece)
    assert f"sha256:{hasher.hexdigest()}" == str(multi.diff_id)
