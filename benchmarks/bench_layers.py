"""Benchmark: unpack, snapshot and layer writing against GNU tar + gzip.

Prints wall time and peak RSS per phase for two workloads built in a scratch
directory: many small files, and a half-compressible tree of large files.
Each phase runs in a forked child so its peak RSS is its own. No assertions.

    /work/venv/bin/python benchmarks/bench_layers.py                 # modest sizes
    /work/venv/bin/python benchmarks/bench_layers.py --files 100000 --big-mb 300

``--bases`` measures only the unpack of real base layers (busybox from
tests/fixtures/images.py, the Debian minbase of scripts/make_debian_base.sh if
cached) for this tree, GNU ``tar -xpf`` and, with ``--kanipy-before PATH``, a
checkout of an earlier commit, interleaved round by round (medians):

    .venv/bin/python benchmarks/bench_layers.py --bases --rounds 5 \
        --kanipy-before /tmp/kanipy-before
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tarfile
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


# A child interpreter unpacks one layer with the kanipy tree at argv[1] and
# prints the seconds the unpack alone took (interpreter start and imports left out).
_UNPACK_CHILD = """
import sys, time
sys.path.insert(0, sys.argv[1])
from kanipy.fs.rootfs import Rootfs
from kanipy.fs.unpack import unpack_layer
with open(sys.argv[2], "rb") as f:
    start = time.perf_counter()
    stats = unpack_layer(Rootfs(sys.argv[3]), f, layer_name="bench")
    print(time.perf_counter() - start, stats.entries)
"""


def base_layers(scratch: Path) -> dict[str, Path]:
    """Uncompressed layer tars of the busybox base and, when cached, Debian's minbase."""
    from tests.fixtures.images import make_busybox_rootfs, tar_layer
    layers = {}
    busybox = scratch / "busybox.tar"
    busybox.write_bytes(tar_layer(make_busybox_rootfs(scratch / "busybox-root")))
    layers["busybox"] = busybox
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "kanipy-bench"
    debian = cache / "debian-bookworm-minbase.tar"
    if debian.exists():
        layers["debian"] = debian
    else:
        print(f"(no {debian}: run benchmarks/bench_build.py once to make it)", flush=True)
    return layers


def unpack_once(tree: str | None, layer: Path, target: Path,
                threads: str | None = None) -> tuple[float, tuple[float, float]]:
    """(wall seconds of the unpack, (user, system) CPU seconds of the child) for one
    tool on one layer;
    ``tree`` is a kanipy checkout, None for GNU tar; ``threads`` its file threads
    (``KANIPY_FILE_THREADS``; None: its default)."""
    env = dict(os.environ)
    if threads is not None:
        env["KANIPY_FILE_THREADS"] = threads
    target.mkdir()
    try:
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        if tree is None:
            argv = ["tar", "-C", str(target), "-xpf", str(layer)]
        else:
            argv = [sys.executable, "-c", _UNPACK_CHILD, tree, str(layer), str(target)]
        out = subprocess.run(argv, check=True, stdout=subprocess.PIPE, text=True,
                             env=env).stdout
        wall = time.perf_counter() - start if tree is None else float(out.split()[0])
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        return wall, (after.ru_utime - before.ru_utime, after.ru_stime - before.ru_stime)
    finally:
        shutil.rmtree(target)


def bench_bases(scratch: Path, rounds: int, before: str | None,
                threads: list[str] | None = None) -> None:
    """Interleaved unpack of each base: every tool once per round, order rotated;
    with ``threads``, this tree once per file-thread count."""
    here = str(Path(__file__).resolve().parent.parent)
    tools: list[tuple[str, str | None]] = [("kanipy", here), ("GNU tar -xpf", None)]
    counts: dict[str, str] = {}
    for count in threads or []:
        counts[f"kanipy t={count}"] = count
        tools.insert(1, (f"kanipy t={count}", here))
    if before:
        tools.insert(1, ("kanipy-before", str(Path(before).resolve())))
    for base, layer in base_layers(scratch).items():
        with tarfile.open(layer) as archive:
            entries = sum(1 for _ in archive)
        times: dict[str, list[float]] = {tool: [] for tool, _ in tools}
        cpus: dict[str, list[tuple[float, float]]] = {tool: [] for tool, _ in tools}
        for round_ in range(rounds):
            shift = round_ % len(tools)
            for tool, tree in tools[shift:] + tools[:shift]:
                wall, cpu = unpack_once(tree, layer, scratch / "target", counts.get(tool))
                times[tool].append(wall)
                cpus[tool].append(cpu)
        print(f"{base} ({entries} entries, {layer.stat().st_size >> 20} MB tar), "
              f"median of {rounds}:", flush=True)
        floor = statistics.median(times["GNU tar -xpf"])
        for tool, _ in tools:
            median = statistics.median(times[tool])
            # The ratio to GNU tar within each round, then its median: steadier than
            # the ratio of medians while other work on the machine comes and goes.
            paired = statistics.median(
                t / g for t, g in zip(times[tool], times["GNU tar -xpf"], strict=True))
            # CPU: the whole child, kanipy's interpreter start and imports (about
            # 0.05 s of user time) included.
            print(f"  {tool:<14} {median:7.3f} s  {entries / median:9.0f} entries/s  "
                  f"{median / floor:5.2f} x GNU tar (paired {paired:4.2f})  "
                  f"{statistics.median(u for u, _ in cpus[tool]):6.3f} usr "
                  f"{statistics.median(s for _, s in cpus[tool]):6.3f} sys  "
                  f"(runs: {' '.join(f'{t:.3f}' for t in times[tool])})", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=20000, help="small files (0 skips)")
    parser.add_argument("--big-mb", type=int, default=50, help="MB of big files (0 skips)")
    parser.add_argument("--level", type=int, default=1, help="gzip level compared (default 1)")
    parser.add_argument("--workdir", default=None, help="scratch directory (default: $TMPDIR)")
    parser.add_argument("--bases", action="store_true",
                        help="only the unpack of the busybox and Debian base layers")
    parser.add_argument("--rounds", type=int, default=5, help="rounds for --bases")
    parser.add_argument("--kanipy-before", default=None, metavar="PATH",
                        help="a checkout of an earlier commit, measured with --bases")
    parser.add_argument("--file-threads", default=None, metavar="N,N",
                        help="with --bases: also this tree with each number of file "
                             "threads (KANIPY_FILE_THREADS; 1: none)")
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="kanipy-bench-", dir=args.workdir))
    try:
        if args.bases:
            bench_bases(scratch, args.rounds, args.kanipy_before,
                        args.file_threads.split(",") if args.file_threads else None)
            return
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
