"""Build-and-push wall time and peak memory of kanipy against buildah, on the same workloads.

Starts its own docker-registry on 127.0.0.1 (tests/fixtures/registry.py), pushes
the base images (busybox from tests/fixtures/images.py; a Debian bookworm
minbase from scripts/make_debian_base.sh, cached under ~/.cache/kanipy-bench),
writes each workload's context and Dockerfile (seeded, so every run builds the
same bytes), then for each workload runs

    python -m kanipy build ... --destination REGISTRY/bench/NAME-kanipy
    buildah bud --isolation chroot ... && buildah push ... REGISTRY/bench/NAME-buildah

each from a cold start (no base image cached, fresh work and storage
directories). Prints wall seconds, their ratio, and two memory figures per tool:
the peak RSS of the largest single process (``ru_maxrss`` from ``os.wait4``, what
``/usr/bin/time -v`` reports) and the peak sum of RSS over the whole process
tree (sampled from /proc every 0.1 s). Figures only, no assertions.

    /work/venv/bin/python benchmarks/bench_build.py                 # scale 0.25
    /work/venv/bin/python benchmarks/bench_build.py --scale 1       # the issue's sizes
    /work/venv/bin/python benchmarks/bench_build.py --workloads busybox --scale 0.1
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.fixtures.images import (  # noqa: E402
    build_and_push_busybox,
    debian_layer_tar,
    push_layer_tar,
)
from tests.fixtures.registry import Registry  # noqa: E402

MB = 1_000_000
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "kanipy-bench"
PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


# ----------------------------------------------------------------------------- base images

def push_debian(work: Path, registry_host: str) -> str:
    """Push the Debian minbase as a one-layer OCI image; returns its reference."""
    return push_layer_tar(work / "debian", debian_layer_tar(CACHE),
                          f"{registry_host}/bench/debian:bookworm",
                          created_by="debootstrap --variant=minbase bookworm", cmd=["bash"])


# ----------------------------------------------------------------------------- workloads

def half_compressible(rng: random.Random, size: int) -> bytes:
    """``size`` bytes: the first half random, the second half repeated text."""
    half = size // 2
    text = b"kanipy benchmark line of repeated text 0123456789\n"
    return rng.randbytes(half) + (text * (size // len(text) + 1))[: size - half]


@dataclass
class Workload:
    name: str
    base: str  # "busybox" | "debian"
    describe: str
    make: Callable[[Path, float], str]  # (context dir, scale) -> Dockerfile body after FROM


def make_busybox(ctx: Path, scale: float) -> str:
    (ctx / "hello.txt").write_text("hello from the benchmark\n")
    return ("COPY hello.txt /hello.txt\n"
            "RUN echo built > /built && cat /hello.txt > /dev/null\n"
            'ENV GREETING=hello\nCMD ["cat", "/hello.txt"]\n')


def make_copy_tree(ctx: Path, scale: float) -> str:
    """8,000 files, 90 MB in 40 directories; sizes vary, content half compressible."""
    rng = random.Random(8000)
    files = max(10, int(8000 * scale))
    total = int(90 * MB * scale)
    weights = [rng.paretovariate(1.2) for _ in range(files)]
    unit = total / sum(weights)
    for i, w in enumerate(weights):
        d = ctx / "tree" / f"dir{i % 40:02d}" / f"sub{i % 7}"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"file{i:05d}.dat").write_bytes(half_compressible(rng, int(w * unit)))
    return ("COPY tree/ /srv/tree/\n"
            "RUN echo one > /srv/step1\n"
            "RUN ls /srv/tree > /srv/step2\n")


def make_big_run(ctx: Path, scale: float) -> str:
    """RUN steps writing 300 MB: in each file half random bytes, half repeated text."""
    steps = 3
    per_file = 10 * MB
    files_per_step = max(1, round(300 * MB * scale / steps / per_file))
    half = per_file // 2
    # The data is made inside the step (as a build would); /dev/urandom is not
    # seeded, but its size and compressibility are what both tools pay for.
    lines = []
    for s in range(steps):
        lines.append(
            f"RUN mkdir -p /data/{s} && for i in $(seq 1 {files_per_step}); do "
            f"{{ head -c {half} /dev/urandom; yes 'kanipy benchmark repeated text' "
            f"| head -c {half}; }} > /data/{s}/$i.bin; done\n")
    return "".join(lines)


def make_many_files(ctx: Path, scale: float) -> str:
    """100,000 small files (COPY from the context) then five one-file RUN steps."""
    rng = random.Random(100_000)
    files = max(100, int(100_000 * scale))
    for i in range(files):
        d = ctx / "small" / f"d{i % 100:02d}" / f"e{(i // 100) % 10}"
        if i < 1000:
            d.mkdir(parents=True, exist_ok=True)
        (d / f"f{i:06d}.txt").write_bytes(rng.randbytes(rng.randrange(16, 512)))
    body = "COPY small/ /small/\n"
    for s in range(5):
        body += f"RUN echo step{s} > /step{s}\n"
    return body


WORKLOADS = {w.name: w for w in [
    Workload("busybox", "busybox", "COPY one file, one RUN, ENV, CMD on busybox", make_busybox),
    Workload("copy-tree", "debian", "COPY 8,000 files / 90 MB onto Debian, two RUN",
             make_copy_tree),
    Workload("big-run", "busybox", "3 RUN steps writing 300 MB half-compressible data",
             make_big_run),
    Workload("many-files", "busybox", "COPY 100,000 small files, then five one-file RUN",
             make_many_files),
]}


def context_for(wl: Workload, scale: float, base_ref: str) -> Path:
    """The workload's context dir (made once per scale, reused with --keep)."""
    ctx = CACHE / "contexts" / f"{wl.name}-{scale:g}"
    done = ctx / ".complete"
    if not done.exists():
        shutil.rmtree(ctx, ignore_errors=True)
        ctx.mkdir(parents=True)
        body = wl.make(ctx, scale)
        (ctx / "Dockerfile.body").write_text(body)
        done.write_text("")
    (ctx / "Dockerfile").write_text(f"FROM {base_ref}\n" + (ctx / "Dockerfile.body").read_text())
    (ctx / ".dockerignore").write_text("Dockerfile.body\n.complete\n")
    return ctx


# ----------------------------------------------------------------------------- measuring

@dataclass
class Measure:
    seconds: float
    max_rss_mb: float  # largest single process (ru_maxrss)
    tree_mb: float  # peak sum of RSS over the process tree (sampled)


def _tree_rss_kb(root_pid: int) -> int:
    """Sum of VmRSS over ``root_pid`` and all its descendants, from /proc."""
    parents: dict[int, int] = {}
    rss: dict[int, int] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as fh:
                stat = fh.read()
            with open(f"/proc/{entry.name}/statm", "rb") as fh:
                resident = int(fh.read().split()[1])
        except OSError:
            continue
        fields = stat.rsplit(b")", 1)[1].split()
        pid = int(entry.name)
        parents[pid] = int(fields[1])
        rss[pid] = resident * (os.sysconf("SC_PAGE_SIZE") // 1024)
    total = 0
    for pid in rss:
        p = pid
        while p and p != root_pid:
            p = parents.get(p, 0)
        if p == root_pid:
            total += rss[pid]
    return total


def measure(argv: list[str], log: Path, env: dict[str, str] | None = None,
            cwd: Path | None = None) -> Measure:
    """Run ``argv`` to completion; its wall time and peak memory. Fails on non-zero exit."""
    start = time.perf_counter()
    with open(log, "ab") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, env=env, cwd=cwd)
    peak = 0
    stop = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not stop.wait(0.1):
            peak = max(peak, _tree_rss_kb(proc.pid))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - start
    stop.set()
    sampler.join()
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        tail = log.read_text(errors="replace")[-3000:]
        raise SystemExit(f"{' '.join(argv[:6])} ... failed ({proc.returncode}):\n{tail}")
    return Measure(elapsed, usage.ru_maxrss / 1024, peak / 1024)


def run_kanipy(ctx: Path, dest: str, registry: str, work: Path, log: Path,
               profile: Path | None) -> Measure:
    kdir = work / "kanipy-dir"
    shutil.rmtree(kdir, ignore_errors=True)
    head = [sys.executable]
    if profile is not None:
        head += ["-m", "cProfile", "-o", str(profile)]
    argv = head + ["-m", "kanipy", "build", "--context", str(ctx), "--destination", dest,
                   "--insecure-registry", registry, "--kanipy-dir", str(kdir),
                   "--verbosity", "warn"]
    # cwd too: ``python -m`` puts the working directory before PYTHONPATH, so
    # another checkout there would be benchmarked instead of this one.
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    try:
        return measure(argv, log, env, cwd=ROOT)
    finally:
        shutil.rmtree(kdir, ignore_errors=True)


def run_buildah(ctx: Path, dest: str, work: Path, log: Path, driver: str,
                layers: bool) -> Measure:
    store = work / "buildah"
    _rm_buildah_store(store, driver)
    common = ["buildah", "--root", str(store / "root"), "--runroot", str(store / "run"),
              "--storage-driver", driver]
    bud = common + ["bud", "--isolation", "chroot", "--tls-verify=false", "--quiet",
                    f"--layers={'true' if layers else 'false'}", "-t", dest, str(ctx)]
    push = common + ["push", "--tls-verify=false", "--quiet", dest, f"docker://{dest}"]
    try:
        a = measure(bud, log)
        b = measure(push, log)
    finally:
        _rm_buildah_store(store, driver)
    return Measure(a.seconds + b.seconds, max(a.max_rss_mb, b.max_rss_mb),
                   max(a.tree_mb, b.tree_mb))


def _rm_buildah_store(store: Path, driver: str) -> None:
    if not store.exists():
        return
    if driver == "overlay":
        # overlay leaves mounts under root/overlay; buildah's own reset unmounts them.
        subprocess.run(["buildah", "--root", str(store / "root"), "--runroot",
                        str(store / "run"), "--storage-driver", driver, "rm", "--all"],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        subprocess.run(["umount", "-R", str(store / "root" / "overlay")],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    shutil.rmtree(store, ignore_errors=True)


def buildah_driver(work: Path) -> str:
    """overlay if buildah can use it here (nested containers often cannot), else vfs."""
    store = work / "probe"
    proc = subprocess.run(["buildah", "--root", str(store / "root"), "--runroot",
                           str(store / "run"), "--storage-driver", "overlay", "images"],
                          capture_output=True)
    _rm_buildah_store(store, "overlay")
    return "overlay" if proc.returncode == 0 else "vfs"


def summary(runs: list[Measure]) -> Measure | None:
    """Median wall time (noise on a shared machine is large) and the highest peaks."""
    if not runs:
        return None
    return Measure(statistics.median(r.seconds for r in runs),
                   max(r.max_rss_mb for r in runs), max(r.tree_mb for r in runs))


# ----------------------------------------------------------------------------- main

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workloads", default=",".join(WORKLOADS),
                        help=f"comma-separated subset of {','.join(WORKLOADS)}")
    parser.add_argument("--scale", type=float, default=0.25,
                        help="size factor for files and bytes (1 = the issue's sizes; "
                             "default 0.25)")
    parser.add_argument("--keep", action="store_true",
                        help="keep the work directory (registry storage, logs)")
    parser.add_argument("--storage-driver", choices=["auto", "vfs", "overlay"], default="auto",
                        help="buildah storage driver (auto: overlay if it works here)")
    parser.add_argument("--buildah-layers", action="store_true",
                        help="buildah bud --layers (one layer per step, as kanipy makes)")
    parser.add_argument("--only", choices=["kanipy", "buildah"], help="run one tool only")
    parser.add_argument("--repeat", type=int, default=1,
                        help="builds per tool and workload, alternating; the median wall "
                             "time and the highest peaks are reported (default 1)")
    parser.add_argument("--profile", metavar="DIR",
                        help="run kanipy under cProfile, writing DIR/WORKLOAD.prof")
    args = parser.parse_args()
    names = [n for n in args.workloads.split(",") if n]
    unknown = [n for n in names if n not in WORKLOADS]
    if unknown:
        parser.error(f"unknown workloads {unknown}; known: {', '.join(WORKLOADS)}")
    if os.geteuid() != 0:
        parser.error("needs root (RUN steps chroot, buildah --isolation chroot)")
    CACHE.mkdir(parents=True, exist_ok=True)

    work = Path(tempfile.mkdtemp(prefix="kanipy-bench-build-"))
    log = work / "build.log"
    reg = Registry(work / "registry").start()
    rows: list[tuple[str, Measure | None, Measure | None]] = []
    try:
        driver = buildah_driver(work) if args.storage_driver == "auto" else args.storage_driver
        bases: dict[str, str] = {}
        if any(WORKLOADS[n].base == "busybox" for n in names):
            bases["busybox"] = build_and_push_busybox(work / "busybox", reg.host).oci
        if any(WORKLOADS[n].base == "debian" for n in names):
            bases["debian"] = push_debian(work, reg.host)
        for name in names:
            wl = WORKLOADS[name]
            print(f"== {name}: {wl.describe} (scale {args.scale:g})", file=sys.stderr)
            ctx = context_for(wl, args.scale, bases[wl.base])
            ks: list[Measure] = []
            bs: list[Measure] = []
            for _ in range(args.repeat):
                if args.only != "buildah":
                    prof = Path(args.profile) / f"{name}.prof" if args.profile else None
                    if prof:
                        prof.parent.mkdir(parents=True, exist_ok=True)
                    m = run_kanipy(ctx, reg.ref(f"bench/{name}-kanipy:latest"), reg.host, work,
                                   log, prof)
                    ks.append(m)
                    print(f"   kanipy  {m.seconds:7.1f} s  {m.max_rss_mb:5.0f} MB",
                          file=sys.stderr)
                if args.only != "kanipy":
                    m = run_buildah(ctx, reg.ref(f"bench/{name}-buildah:latest"), work, log,
                                    driver, args.buildah_layers)
                    bs.append(m)
                    print(f"   buildah {m.seconds:7.1f} s  {m.max_rss_mb:5.0f} MB",
                          file=sys.stderr)
            k, b = summary(ks), summary(bs)
            rows.append((name, k, b))
    finally:
        reg.stop()
        if args.keep:
            print(f"work directory kept: {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)

    print(f"scale {args.scale:g}; median of {args.repeat}; buildah {driver}"
          f"{' --layers' if args.buildah_layers else ''}; {os.cpu_count()} CPUs; "
          "peak = largest process / whole tree, MB")
    print(f"{'workload':12}{'kanipy s':>10}{'buildah s':>11}{'ratio':>7}"
          f"{'kanipy peak':>14}{'buildah peak':>15}")
    for name, k, b in rows:
        ratio = f"{k.seconds / b.seconds:7.2f}" if k and b else f"{'-':>7}"
        k_s = f"{k.seconds:10.1f}" if k else f"{'-':>10}"
        b_s = f"{b.seconds:11.1f}" if b else f"{'-':>11}"
        kp = f"{k.max_rss_mb:.0f} / {k.tree_mb:.0f}" if k else "-"
        bp = f"{b.max_rss_mb:.0f} / {b.tree_mb:.0f}" if b else "-"
        print(f"{name:12}{k_s}{b_s}{ratio}{kp:>14}{bp:>15}")


if __name__ == "__main__":
    main()
