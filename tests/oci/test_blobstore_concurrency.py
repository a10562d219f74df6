"""One blob store shared by many processes (``--cache-dir`` in a CI fleet, issue 13).

Real processes, not threads: each opens the store itself, as concurrent builds
do. A reader never sees a partial blob, writers of one blob all succeed, and a
writer killed halfway leaves nothing a later build trusts.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import signal
import time
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Barrier, Event
from pathlib import Path

import pytest

from kanipy.oci.blobstore import STALE_INGEST_SECONDS, BlobStore
from kanipy.oci.digest import Digest

BLOB_SIZE = 4 << 20
WRITERS = 6

_CTX = multiprocessing.get_context("spawn")


def _blob_bytes() -> bytes:
    # The same 4 MiB in every process, written in pieces so writers overlap.
    return hashlib.sha256(b"seed").digest() * (BLOB_SIZE // 32)


def _write(root: str, start: Barrier, results: Queue[str]) -> None:
    data = _blob_bytes()
    store = BlobStore(root)
    start.wait()
    with store.writer(expected=Digest.of_bytes(data), size=len(data)) as out:
        for i in range(0, len(data), 64 << 10):
            out.write(data[i:i + (64 << 10)])
    results.put(str(out.digest))


def _watch(root: str, digest: str, stop: Event, results: Queue[list[int]]) -> None:
    """Open the blob whenever its name exists; the sizes seen (each must be whole)."""
    store = BlobStore(root, readonly=True)
    target = Digest.parse(digest)
    seen: list[int] = []
    while not stop.is_set() or not seen:
        if store.has(target):
            with store.open(target) as f:
                data = f.read()
            seen.append(len(data) if Digest.of_bytes(data) == target else -len(data))
        else:
            time.sleep(0.0005)
    results.put(seen)


def _write_then_hang(root: str, ready: Event) -> None:
    store = BlobStore(root)
    with store.writer() as out:
        out.write(b"x" * (1 << 20))
        out.flush()
        ready.set()
        time.sleep(60)  # killed here


def _run_writers(root: Path) -> tuple[list[str], list[int]]:
    digest = str(Digest.of_bytes(_blob_bytes()))
    BlobStore(root)
    start = _CTX.Barrier(WRITERS)
    stop = _CTX.Event()
    written: Queue[str] = _CTX.Queue()
    watched: Queue[list[int]] = _CTX.Queue()
    watcher = _CTX.Process(target=_watch, args=(str(root), digest, stop, watched))
    writers = [_CTX.Process(target=_write, args=(str(root), start, written))
               for _ in range(WRITERS)]
    for process in [watcher, *writers]:
        process.start()
    try:
        digests = [written.get(timeout=60) for _ in writers]
        stop.set()
        seen = watched.get(timeout=60)
    finally:
        for process in [watcher, *writers]:
            process.join(10)
            if process.is_alive():
                process.kill()
    return digests, seen


def test_concurrent_writers_of_one_blob_all_succeed_and_readers_see_it_whole(
    tmp_path: Path,
) -> None:
    root = tmp_path / "cache"
    digests, seen = _run_writers(root)
    expected = str(Digest.of_bytes(_blob_bytes()))
    assert digests == [expected] * WRITERS
    assert seen and all(size == BLOB_SIZE for size in seen), "a reader saw a partial blob"
    store = BlobStore(root)
    assert store.read_bytes(Digest.parse(expected)) == _blob_bytes()
    assert list((root / "blobs" / ".tmp").iterdir()) == []
    # Readable by builds running as other users of a shared volume.
    assert store.path(Digest.parse(expected)).stat().st_mode & 0o777 == 0o644


def test_a_killed_writer_leaves_nothing_trusted_and_its_file_is_removed_when_old(
    tmp_path: Path,
) -> None:
    root = tmp_path / "cache"
    BlobStore(root)
    ready = _CTX.Event()
    writer = _CTX.Process(target=_write_then_hang, args=(str(root), ready))
    writer.start()
    try:
        assert ready.wait(30)
    finally:
        assert writer.pid is not None
        os.kill(writer.pid, signal.SIGKILL)
        writer.join(10)
    leftovers = list((root / "blobs" / ".tmp").iterdir())
    assert len(leftovers) == 1
    assert [p.name for p in (root / "blobs" / "sha256").iterdir()] == []
    # A later build ignores it while it might still be a live writer's ...
    later = BlobStore(root)
    assert leftovers[0].exists()
    assert not later.has(Digest.of_bytes(b"x" * (1 << 20)))
    # ... and removes it once no live writer can own it.
    old = time.time() - STALE_INGEST_SECONDS - 60
    os.utime(leftovers[0], (old, old))
    BlobStore(root)
    assert not leftovers[0].exists()


def test_a_store_whose_ingest_directory_was_removed_still_writes(tmp_path: Path) -> None:
    store = BlobStore(tmp_path / "layout")
    (tmp_path / "layout" / "blobs" / ".tmp").rmdir()  # as a layout writer tidies up
    digest = store.put_bytes(b"config")
    assert store.read_bytes(digest) == b"config"


@pytest.mark.parametrize("processes", [8], ids=["8-processes"])
def test_many_processes_create_one_store_at_once(tmp_path: Path, processes: int) -> None:
    root = tmp_path / "new-store"
    with _CTX.Pool(processes) as pool:
        pool.map(BlobStore, [str(root)] * processes)
    assert (root / "oci-layout").read_text() == '{"imageLayoutVersion": "1.0.0"}'
    assert [p.name for p in root.iterdir() if p.name.startswith(".")] == []
