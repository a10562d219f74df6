"""Benchmark: unpack, snapshot and layer writing against GNU tar + gzip.

Prints wall time and peak RSS per phase for two workloads built in a scratch
directory: many small files, and a half-compressible tree of large files.
Each phase runs in a forked child so its peak RSS is its own. No assertions.

    /work/venv/bin/python benchmarks/bench_layers.py                 # modest sizes
    /work/venv/bin/python benchmarks/bench_layers.py --files 100000 --big-mb 300
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from kanipy.fs.layer import write_layer  # noqa: E402
from kanipy.fs.rootfs import Rootfs  # noqa: E402
from kanipy.fs.snapshot import Snapshot, diff, take_snapshot  # noqa: E402
from kanipy.fs.unpack import unpack_layer  # noqa: E402
from kanipy.oci import mediatypes  # noqa: E402
from kanipy.oci.blobstore import BlobStore  # noqa: E402


def make_small_files(root: Path, count: int) -> None:
    for i in range(count):
        directory = root / f"d{i // 100:04d}"
        if i % 100 == 0:
            directory.mkdir(parents=True)
        (directory / f"f{i:06d}.txt").write_bytes(b"small file %d\n" % i * 8)


def make_half_compressible(root: Path, megabytes: int) -> None:
    root.mkdir(parents=True)
    text = (b"the quick brown fox jumps over the lazy dog %d\n" * 11000)[: 1 << 19]
    for i in range(megabytes):
        # Each MiB: half random bytes, half text -> gzip roughly halves it.
        (root / f"blob{i:04d}.bin").write_bytes(os.urandom(1 << 19) + text)


def measure(label: str, work: Callable[[], str]) -> None:
    """Run ``work`` in a forked child; print its wall time, peak RSS and note."""
    read_end, write_end = os.pipe()
    start = time.perf_counter()
    pid = os.fork()
    if pid == 0:
        os.close(read_end)
        try:
            note = work()
        except BaseException as exc:  # report and leave the child, never the parent
            note = f"FAILED: {exc!r}"
        os.write(write_end, note.encode())
        os._exit(0)
    os.close(write_end)
    note = b""
    while chunk := os.read(read_end, 65536):
        note += chunk
    os.close(read_end)
    _, _, usage = os.wait4(pid, 0)
    elapsed = time.perf_counter() - start
    cpu = usage.ru_utime + usage.ru_stime  # steadier than wall time on a shared machine
    # User and system CPU apart: creating 100,000 files is kernel time that
    # swings with the machine's other I/O, while user time is our own code.
    print(f"  {label:<44} {elapsed:7.2f} s wall {cpu:7.2f} s cpu "
          f"({usage.ru_utime:6.2f} usr {usage.ru_stime:6.2f} sys) "
          f"{usage.ru_maxrss / 1024:6.1f} MB peak  {note.decode()}", flush=True)


def shell(command: str) -> Callable[[], str]:
    def run() -> str:
        subprocess.run(command, shell=True, check=True)
        return ""
    return run


def workload(label: str, tree: Path, scratch: Path, level: int) -> None:
    print(f"{label}:", flush=True)
    name = tree.name
    store = BlobStore(scratch / "store")
    layer_file = scratch / f"{name}.layer"
    compressor = "pigz -p2" if shutil.which("pigz") else "gzip"
    gnu_out = scratch / f"{name}.gnu.tar.gz"

    def snapshot() -> str:
        snap = take_snapshot(tree)
        return f"{len(snap)} paths"

    def write(compression: str, lvl: int | None) -> Callable[[], str]:
        def run() -> str:
            changes = diff(Snapshot(tree, {}), take_snapshot(tree))
            layer = write_layer(tree, changes, store, compression=compression, level=lvl,
                                media_type=mediatypes.layer_media_type("oci", compression))
            assert layer is not None
            if compression == "gzip" and lvl == level:
                shutil.copy(store.path(layer.descriptor.digest), layer_file)
            return (f"{layer.entries} entries, {layer.uncompressed_size >> 20} MB tar -> "
                    f"{layer.descriptor.size / (1 << 20):.1f} MB")
        return run

    def unpack() -> str:
        target = scratch / f"{name}.unpacked"
        target.mkdir()
        with open(layer_file, "rb") as f:
            stats = unpack_layer(Rootfs(target), f, layer_name=name)
        return f"{stats.entries} entries"

    measure("kanipy snapshot (scandir + lstat)", snapshot)
    measure(f"kanipy snapshot + write layer (gzip -{level})", write("gzip", level))
    measure("kanipy snapshot + write layer (gzip -6)", write("gzip", 6))
    measure("kanipy snapshot + write layer (zstd -3)", write("zstd", 3))
    measure(f"GNU tar -c | {compressor} -{level}",
            shell(f"tar -C {tree} --sort=name -cf - . | {compressor} -{level} > {gnu_out}"))
    measure("kanipy unpack_layer (gzip)", unpack)
    extract = scratch / f"{name}.gnu-x"
    extract.mkdir()
    measure("GNU tar -xzf (same layer)", shell(f"tar -C {extract} -xpzf {layer_file}"))
    print(f"  gzip sizes: kanipy {layer_file.stat().st_size / (1 << 20):.1f} MB, "
          f"GNU tar|{compressor.split()[0]} {gnu_out.stat().st_size / (1 << 20):.1f} MB",
          flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=20000, help="small files (0 skips)")
    parser.add_argument("--big-mb", type=int, default=50, help="MB of big files (0 skips)")
    parser.add_argument("--level", type=int, default=1, help="gzip level compared (default 1)")
    parser.add_argument("--workdir", default=None, help="scratch directory (default: $TMPDIR)")
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="kanipy-bench-", dir=args.workdir))
    try:
        if args.files:
            small = scratch / "small"
            make_small_files(small, args.files)
            workload(f"{args.files} small files", small, scratch, args.level)
        if args.big_mb:
            big = scratch / "big"
            make_half_compressible(big, args.big_mb)
            workload(f"{args.big_mb} MB half-compressible", big, scratch, args.level)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
