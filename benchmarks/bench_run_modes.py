"""The cost of a RUN step in the runner's two modes, and of the /proc options without mounts.

Prints, on a busybox root made from Debian's busybox-static:

- the wall time of ``RUN true`` isolated (namespaces, pivot_root, mounts) and
  unprivileged (chroot, scaffolding put into the root and taken back);
- what the unprivileged mode's static ``/proc`` and ``/dev`` cost per step;
- a syscall-heavy loop (100,000 ``stat`` calls by busybox ``find``-like work)
  chrooted, and under proot's ptrace path translation when ``proot`` is
  installed (Debian's ``proot``; the alternative docs/architecture.md
  compares).

Run as root from the top of a checkout: ``.venv/bin/python benchmarks/bench_run_modes.py``.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kanipy.executor.runner import ChrootRunner, RunSpec  # noqa: E402
from kanipy.executor.sandbox_files import Provisioner  # noqa: E402
from kanipy.executor.sandbox_nomount import provide_without_mounts  # noqa: E402
from tests.fixtures.images import make_busybox_rootfs  # noqa: E402

# 100,000 lstat calls from one shell: `test -e` is a shell builtin in busybox.
STAT_LOOP = "i=0; while [ $i -lt 100000 ]; do test -e /bin/busybox; i=$((i+1)); done"


def per_step(root: Path, degraded: bool, repeat: int) -> float:
    runner = ChrootRunner(degraded=degraded)
    runner.run(RunSpec(root, ["/bin/true"]), lambda line: None)  # finds the mode
    started = time.monotonic()
    for _ in range(repeat):
        runner.run(RunSpec(root, ["/bin/true"]), lambda line: None)
    return (time.monotonic() - started) / repeat


def scaffolding(root: Path, repeat: int) -> float:
    job = {"argv": ["/bin/true"], "mounts": []}
    started = time.monotonic()
    for _ in range(repeat):
        prov = Provisioner(str(root))
        provide_without_mounts(prov, job, [])
        prov.restore()
    return (time.monotonic() - started) / repeat


def timed(argv: list[str]) -> float:
    started = time.monotonic()
    subprocess.run(argv, check=True, capture_output=True)
    return time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=20, help="RUN steps per mode")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-run-") as tmp:
        root = make_busybox_rootfs(Path(tmp) / "rootfs")
        print(f"RUN true, isolated:      {per_step(root, False, args.repeat) * 1000:6.1f} ms")
        print(f"RUN true, unprivileged:  {per_step(root, True, args.repeat) * 1000:6.1f} ms")
        print(f"  of which static /proc, /dev, DNS files: "
              f"{scaffolding(root, args.repeat) * 1000:.1f} ms")
        chrooted = timed(["chroot", str(root), "/bin/sh", "-c", STAT_LOOP])
        print(f"stat x100,000 chrooted:  {chrooted:6.2f} s")
        proot = shutil.which("proot")
        if proot:
            traced = timed([proot, "-r", str(root), "/bin/sh", "-c", STAT_LOOP])
            print(f"stat x100,000 in proot:  {traced:6.2f} s ({traced / chrooted:.1f}x)")
        else:
            print("stat x100,000 in proot:  (proot is not installed: apt-get install proot)")


if __name__ == "__main__":
    main()
