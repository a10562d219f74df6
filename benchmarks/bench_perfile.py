"""Benchmark: kanipy's per-file costs (issue 14) on one tree, checkouts interleaved.

The phases of the ``many-files`` build without the registry, the RUN sandbox or the
compressor: a COPY of N small files (``TreeWriter.copy_contents`` with a
``.dockerignore`` like the benchmark context's), the COPY's own snapshot
(``changes_for_paths``) and its tar, then, as for each RUN, a snapshot of the whole root,
one file written and a second snapshot and ``diff``; the copy is removed at the end.
Beside them, the floors on the same tree: an ``os.scandir`` walk with an ``lstat`` per
entry, and ``cp -a``.

Each checkout runs in its own process (``PYTHONPATH`` set to it), round by round, so
before and after see the same disk state; CPU seconds (user + system) are what to
compare on a shared machine, wall seconds are printed too. The layer's sha256 is printed
per checkout: a change to the copy, the snapshot or the tar writer must leave it alone.

    .venv/bin/python benchmarks/bench_perfile.py --files 100000 --dir /dev/shm/perfile \\
        --checkout /tmp/before . --rounds 3
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path


def make_tree(src: Path, files: int) -> None:
    """The many-files context's layout: 100 x 10 directories of 16-512 byte files."""
    rng = random.Random(100_000)
    for i in range(files):
        d = src / "small" / f"d{i % 100:02d}" / f"e{(i // 100) % 10}"
        if i < 1000:
            d.mkdir(parents=True, exist_ok=True)
        (d / f"f{i:06d}.txt").write_bytes(rng.randbytes(rng.randrange(16, 512)))
    (src / ".dockerignore").write_text("Dockerfile.body\n.complete\n")
    # Fixed times: the layer's bytes then depend only on the files.
    for dirpath, _dirs, names in os.walk(src):
        for name in names:
            os.utime(os.path.join(dirpath, name), ns=(10**18, 10**18))
        os.utime(dirpath, ns=(10**18, 10**18))


class _Sha:
    def __init__(self) -> None:
        self.hash = hashlib.sha256()

    def write(self, data: bytes | bytearray | memoryview, /) -> int:
        self.hash.update(data)
        return len(data)


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run_phases(src: Path, work: Path, runs: int) -> dict[str, object]:
    """One checkout's pass (in a child whose ``kanipy`` is that checkout)."""
    from pathlib import PurePosixPath

    from kanipy.dockerfile.ignore import load_ignore
    from kanipy.executor.handlers.copy_tree import Ownership, TreeWriter
    from kanipy.fs.layer import write_tar
    from kanipy.fs.rootfs import Rootfs
    from kanipy.fs.snapshot import changes_for_paths, diff, take_snapshot

    figures: dict[str, list[float]] = {}
    digests: dict[str, str] = {}

    def timed(name: str, work_fn: Callable[[], object]) -> object:
        cpu, wall = _cpu(), time.perf_counter()
        result = work_fn()
        figures.setdefault(name, []).extend((_cpu() - cpu, time.perf_counter() - wall))
        return result

    root = work / "root"
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    rootfs = Rootfs(root)
    ignore = load_ignore(src)

    class Skip:
        """As COPY small/ applies the context's .dockerignore (a plain function for
        checkouts before SkipRule.applies_below)."""

        def __call__(self, rel: str, is_dir: bool) -> bool:
            path = "small/" + rel
            return ignore.excludes(path) and not (is_dir and ignore.must_walk(path))

        def applies_below(self, rel: str) -> bool:
            return ignore.may_match_below(("small/" + rel).rstrip("/"))

    skip = Skip()

    writer = TreeWriter(rootfs, Ownership(0, 0), None)
    os.mkdir(root / "small")
    written = timed("copy", lambda: writer.copy_contents(src / "small", root / "small",
                                                         skip))
    os.utime(root / "small", ns=(10**18, 10**18))  # made now: its time would vary
    touched = [PurePosixPath("/small")] + [rootfs.to_image_path(p) for p in written]  # type: ignore[attr-defined]
    changes = timed("changes_for_paths", lambda: changes_for_paths(root, touched))
    sink = _Sha()
    timed("tar", lambda: write_tar(root, changes, sink))  # type: ignore[arg-type]
    digests["copy layer"] = sink.hash.hexdigest()
    before = timed("snapshot", lambda: take_snapshot(root))
    for step in range(runs):
        (root / f"step{step}").write_bytes(b"step%d\n" % step)
        os.utime(root / f"step{step}", ns=(10**18, 10**18))
        after = timed("snapshot", lambda: take_snapshot(root))
        run_changes = timed("diff", lambda: diff(before, after))  # noqa: B023
        sink = _Sha()
        timed("tar", lambda: write_tar(root, run_changes, sink))  # type: ignore[arg-type]  # noqa: B023
        digests[f"run {step} layer"] = sink.hash.hexdigest()
        before = after

    def floor_walk() -> int:
        count = 0
        stack = [str(root)]
        while stack:
            with os.scandir(stack.pop()) as it:
                for entry in it:
                    count += 1
                    if entry.stat(follow_symlinks=False) and entry.is_dir(follow_symlinks=False):
                        stack.append(entry.path)
        return count

    timed("floor: scandir+lstat walk", floor_walk)
    timed("rm -rf", lambda: shutil.rmtree(root))
    return {"figures": figures, "digests": digests}


def _child(checkout: Path, src: Path, work: Path, runs: int) -> dict[str, object]:
    env = dict(os.environ, PYTHONPATH=str(checkout.resolve()))
    out = subprocess.run(
        [sys.executable, __file__, "--child", str(src), str(work), str(runs)],
        env=env, check=True, capture_output=True, text=True, cwd=str(checkout))
    return json.loads(out.stdout)  # type: ignore[no-any-return]


def _cp_floor(src: Path, work: Path) -> tuple[float, float]:
    target = work / "cp"
    shutil.rmtree(target, ignore_errors=True)
    started = time.perf_counter()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run(["cp", "-a", str(src / "small"), str(target)], check=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    wall = time.perf_counter() - started
    shutil.rmtree(target)
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    return cpu, wall


def main() -> None:
    if len(sys.argv) == 5 and sys.argv[1] == "--child":
        print(json.dumps(run_phases(Path(sys.argv[2]), Path(sys.argv[3]), int(sys.argv[4]))))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=100_000)
    parser.add_argument("--dir", type=Path, default=Path("/dev/shm/kanipy-perfile"),
                        help="where the source tree and the copies go (tmpfs or a disk)")
    parser.add_argument("--checkout", type=Path, nargs="+", default=[Path(".")],
                        help="kanipy checkouts to compare (each gets its own column)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--runs", type=int, default=5, help="RUN-like snapshots per round")
    args = parser.parse_args()
    src = args.dir / f"src-{args.files}"
    if not (src / ".complete").exists():
        shutil.rmtree(src, ignore_errors=True)
        make_tree(src, args.files)
        (src / ".complete").touch()
    work = args.dir / "work"
    results: dict[str, list[dict[str, object]]] = {str(c): [] for c in args.checkout}
    cp_runs: list[tuple[float, float]] = []
    for _ in range(args.rounds):
        for checkout in args.checkout:
            results[str(checkout)].append(_child(checkout, src, work, args.runs))
        cp_runs.append(_cp_floor(src, work))
    shutil.rmtree(work, ignore_errors=True)
    names = list(results)
    phases = list(results[names[0]][0]["figures"])  # type: ignore[call-overload]
    print(f"{args.files} files under {args.dir}; {args.rounds} rounds, medians; "
          "CPU s (wall s); per phase summed over its calls in one pass")
    print("| phase | " + " | ".join(names) + " |")
    print("|---|" + "---:|" * len(names))
    for phase in phases:
        cells = []
        for name in names:
            cpus, walls = [], []
            for run in results[name]:
                values = run["figures"][phase]  # type: ignore[index]
                cpus.append(sum(values[0::2]))
                walls.append(sum(values[1::2]))
            cells.append(f"{statistics.median(cpus):.3f} ({statistics.median(walls):.3f})")
        print(f"| {phase} | " + " | ".join(cells) + " |")
    cpu = statistics.median(c for c, _ in cp_runs)
    wall = statistics.median(w for _, w in cp_runs)
    print(f"| floor: cp -a | {cpu:.3f} ({wall:.3f}) |" + " |" * (len(names) - 1))
    for name in names:
        digests = {json.dumps(r["digests"], sort_keys=True) for r in results[name]}
        print(f"layers of {name}: " + ("same in every round" if len(digests) == 1
                                      else "DIFFER between rounds"))
    all_digests = {json.dumps(results[n][0]["digests"], sort_keys=True) for n in names}
    print("layers across checkouts: " + ("identical" if len(all_digests) == 1 else "DIFFERENT"))
    if len(all_digests) > 1:
        for name in names:
            print(name, results[name][0]["digests"])


if __name__ == "__main__":
    main()
