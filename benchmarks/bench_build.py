"""Build-and-push wall time and peak memory of kanipy against buildah, on the same workloads.

Starts its own docker-registry on 127.0.0.1 (tests/fixtures/registry.py), pushes
the base images (busybox from tests/fixtures/images.py; a Debian bookworm
minbase from scripts/make_debian_base.sh, cached under ~/.cache/kanipy-bench),
writes each workload's context and Dockerfile (seeded, so every run builds the
same bytes), then for each workload runs, interleaved, N times each,

    kanipy build ... --destination REGISTRY/bench/NAME-kanipy
      (the console script of a virtual environment made for the run, as an
      installed kanipy starts: not the editable install's import finder)
    buildah bud --isolation chroot ... && buildah push ... REGISTRY/bench/NAME-buildah
    (with --kanipy-before PATH: the kanipy of another checkout, the same way)

each from a cold start (no base image cached, fresh work and storage
directories), then measures the machine's floors on the workload's files in the
same run: ``cp -a`` of the tree (and ``rm -rf`` of the copy), an ``os.scandir``
walk with an lstat per entry, and GNU tar | sha256sum, | igzip -2 | sha256sum
(ISA-L, kanipy's gzip). Prints issue 14's table: median wall seconds and the
peak RSS of the largest single process (``ru_maxrss`` from ``os.wait4``, what
``/usr/bin/time -v`` reports), the peak sum of RSS over the whole process tree
(sampled from /proc every 0.1 s), and the floors. Figures only, no assertions.

    .venv/bin/python benchmarks/bench_build.py                  # the issue's sizes, medians of 3
    .venv/bin/python benchmarks/bench_build.py --quick          # scale 0.25, one build each
    .venv/bin/python benchmarks/bench_build.py --kanipy-before /tmp/before   # before/after
    .venv/bin/python benchmarks/bench_build.py --workloads busybox --scale 0.1
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import site
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
import venv
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
    bases: tuple[str, ...]  # of "busybox", "debian"; one base: the body follows its FROM
    describe: str
    make: Callable[[Path, float], str]  # (context dir, scale) -> Dockerfile body
    # The tree (under the context) or the RUN-made files the floors are measured on.
    floor_tree: str | None = None
    default: bool = True  # run when --workloads is not given


def make_busybox(ctx: Path, scale: float) -> str:
    (ctx / "hello.txt").write_text("hello from the benchmark\n")
    return ("COPY hello.txt /hello.txt\n"
            "RUN echo built > /built && cat /hello.txt > /dev/null\n"
            'ENV GREETING=hello\nCMD ["cat", "/hello.txt"]\n')


def make_busybox_runs(ctx: Path, scale: float) -> str:
    (ctx / "hello.txt").write_text("hello from the benchmark\n")
    return ("COPY hello.txt /hello.txt\n"
            + "".join(f"RUN echo {n} > /step{n}\n" for n in range(1, 6))
            + 'ENV GREETING=hello\nCMD ["cat", "/hello.txt"]\n')


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


def make_multi_stage(ctx: Path, scale: float) -> str:
    """A Debian stage makes an artifact (a tarball of 2,000 generated files); a busybox
    stage copies it. The Debian stage is read only by COPY --from."""
    files = max(20, int(2000 * scale))
    (ctx / "src.txt").write_text("source of the artifact\n" * 100)
    return ("FROM @debian@ AS build\n"
            "COPY src.txt /src/src.txt\n"
            f"RUN mkdir -p /out && for i in $(seq 1 {files}); do "
            "cp /src/src.txt /out/part$i.txt; done && tar -czf /artifact.tar.gz -C /out .\n"
            "FROM @busybox@\n"
            "COPY --from=build /artifact.tar.gz /app/artifact.tar.gz\n"
            'CMD ["ls", "-l", "/app"]\n')


def make_two_builders(ctx: Path, scale: float) -> str:
    """Two builder stages that do not depend on each other, each a few seconds of RUN;
    a busybox stage copies from both (what BuildKit and ``buildah --jobs`` run at once)."""
    rounds = max(1, int(40 * scale))
    work = (f"for i in $(seq 1 {rounds}); do head -c 1000000 /dev/urandom | sha256sum "
            "> /dev/null; done")
    return ("FROM @debian@ AS one\n"
            f"RUN {work} && echo one > /one.txt\n"
            "FROM @busybox@ AS two\n"
            f"RUN {work} && echo two > /two.txt\n"
            "FROM @busybox@\n"
            "COPY --from=one /one.txt /one.txt\n"
            "COPY --from=two /two.txt /two.txt\n")


WORKLOADS = {w.name: w for w in [
    Workload("busybox", ("busybox",), "COPY one file, one RUN, ENV, CMD on busybox",
             make_busybox),
    Workload("busybox-runs", ("busybox",), "COPY one file, five one-line RUN, ENV, CMD",
             make_busybox_runs, default=False),
    Workload("copy-tree", ("debian",), "COPY 8,000 files / 90 MB onto Debian, two RUN",
             make_copy_tree, floor_tree="tree"),
    Workload("big-run", ("busybox",), "3 RUN steps writing 300 MB half-compressible data",
             make_big_run, floor_tree="@run"),
    Workload("multi-stage", ("debian", "busybox"),
             "Debian stage makes an artifact, busybox stage copies it", make_multi_stage),
    Workload("many-files", ("busybox",), "COPY 100,000 small files, then five one-file RUN",
             make_many_files, floor_tree="small"),
    Workload("two-builders", ("debian", "busybox"),
             "two independent builder stages, a final stage copies from both",
             make_two_builders, default=False),
]}


def context_for(wl: Workload, scale: float, refs: dict[str, str]) -> Path:
    """The workload's context dir (made once per scale, reused by later runs)."""
    ctx = CACHE / "contexts" / f"{wl.name}-{scale:g}"
    done = ctx / ".complete"
    if not done.exists():
        shutil.rmtree(ctx, ignore_errors=True)
        ctx.mkdir(parents=True)
        body = wl.make(ctx, scale)
        (ctx / "Dockerfile.body").write_text(body)
        done.write_text("")
    body = (ctx / "Dockerfile.body").read_text()
    if len(wl.bases) == 1:
        body = f"FROM @{wl.bases[0]}@\n" + body
    for name, ref in refs.items():
        body = body.replace(f"@{name}@", ref)
    (ctx / "Dockerfile").write_text(body)
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


# An installed kanipy's console script, as pip writes one (less its argv[0] rewrite).
CONSOLE_SCRIPT = """\
import sys
from kanipy.cli import main
if __name__ == "__main__":
    sys.exit(main())
"""


def installed_kanipy(work: Path) -> tuple[Path, Path]:
    """A virtual environment that starts kanipy as an installed copy does: the
    interpreter and the ``kanipy`` console script.

    The development ``.venv`` has kanipy installed editable: its ``.pth`` runs
    setuptools' import finder at every start, which an installed kanipy does
    not have (and which loads pathlib, re and urllib.parse before the command
    starts). This environment sees ``.venv``'s packages through a ``.pth`` that
    lists the directory (a directory listed there has its own ``.pth`` files
    ignored); kanipy itself comes from ``PYTHONPATH``, one checkout or the
    other, each compiled beforehand as pip compiles an installed one.
    """
    env_dir = work / "installed-venv"
    venv.EnvBuilder(with_pip=False, symlinks=True).create(env_dir)
    purelib = Path(sysconfig.get_paths(vars={"base": str(env_dir),
                                             "platbase": str(env_dir)})["purelib"])
    (purelib / "kanipy-dependencies.pth").write_text(
        "".join(f"{path}\n" for path in site.getsitepackages()))
    script = env_dir / "bin" / "kanipy"
    python = env_dir / "bin" / "python"
    script.write_text(f"#!{python}\n{CONSOLE_SCRIPT}")
    script.chmod(0o755)
    return python, script


def run_kanipy(ctx: Path, dest: str, registry: str, work: Path, log: Path,
               profile: Path | None, checkout: Path = ROOT) -> Measure:
    """One cold ``kanipy build`` of ``checkout``'s kanipy (this one by default),
    started through the console script of ``installed_kanipy``.

    Each build gets a work directory of its own, and the bench does not remove it:
    kanipy does, and after a success it leaves that to a detached process that may
    still be working while the next build runs, as on a CI runner that keeps its disk.
    """
    kdir = Path(tempfile.mkdtemp(prefix="kanipy-dir-", dir=work))
    python, script = work / "installed-venv" / "bin" / "python", \
        work / "installed-venv" / "bin" / "kanipy"
    head = [str(python)]
    if profile is not None:
        head += ["-m", "cProfile", "-o", str(profile)]
    argv = head + [str(script), "build", "--context", str(ctx), "--destination", dest,
                   "--insecure-registry", registry, "--kanipy-dir", str(kdir),
                   "--verbosity", "warn"]
    # The script's directory, not the working directory, heads sys.path; the
    # checkout is the working directory all the same, as before.
    env = {**os.environ, "PYTHONPATH": str(checkout)}
    return measure(argv, log, env, cwd=checkout)


# ----------------------------------------------------------------------------- floors

@dataclass
class Floors:
    """What this machine needs at least for the workload's files, in the same run."""

    copy: float  # cp -a of the tree
    remove: float  # rm -rf of that copy
    walk: float  # os.scandir walk with an lstat per entry (what a snapshot does)
    archive: float  # GNU tar | sha256sum, | igzip | sha256sum (a layer's pipeline)


def floor_tree(wl: Workload, ctx: Path, work: Path) -> Path | None:
    """The files the floors are measured on: the COPY's tree in the context, or for a
    RUN workload the same files made on the host by the same commands."""
    if wl.floor_tree is None:
        return None
    if wl.floor_tree != "@run":
        return ctx / wl.floor_tree
    out = work / "floor-run"
    if not out.exists():
        out.mkdir()
        for line in (ctx / "Dockerfile.body").read_text().splitlines():
            if line.startswith("RUN "):
                subprocess.run(["sh", "-c", line[4:].replace("/data/", f"{out}/data/")],
                               check=True)
    return out


def _timed(argv: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def _walk(top: str) -> int:
    count = 0
    stack = [top]
    while stack:
        with os.scandir(stack.pop()) as it:
            for entry in it:
                entry.stat(follow_symlinks=False)
                count += 1
                if entry.is_dir(follow_symlinks=False):
                    stack.append(entry.path)
    return count


def measure_floors(tree: Path, work: Path) -> Floors:
    copy_dir = work / "floor-copy"
    shutil.rmtree(copy_dir, ignore_errors=True)
    copy = _timed(["cp", "-a", str(tree), str(copy_dir)])
    remove = _timed(["rm", "-rf", str(copy_dir)])
    start = time.perf_counter()
    _walk(str(tree))
    walk = time.perf_counter() - start
    # The same compressor as kanipy's default gzip: ISA-L at its level 2.
    pipeline = (f"set -o pipefail; tar -C '{tree}' --numeric-owner -cf - . "
                f"| tee >(sha256sum > /dev/null) "
                f"| '{sys.executable}' -m isal.igzip -2 -c -n | sha256sum > /dev/null")
    archive = _timed(["bash", "-c", pipeline])
    return Floors(copy, remove, walk, archive)


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


def floor_summary(runs: list[Floors]) -> Floors | None:
    if not runs:
        return None
    return Floors(*(statistics.median(getattr(r, f) for r in runs)
                    for f in ("copy", "remove", "walk", "archive")))


@dataclass
class Row:
    name: str
    kanipy: Measure | None
    buildah: Measure | None
    before: Measure | None
    floors: Floors | None


def _cell(m: Measure | None) -> str:
    return f"{m.seconds:.2f} / {m.max_rss_mb:.0f}" if m else "-"


def _ratio(a: Measure | None, b: Measure | None) -> str:
    return f"{a.seconds / b.seconds:.2f}" if a and b else "-"


def print_tables(rows: list[Row], args: argparse.Namespace, driver: str) -> None:
    """The issue's table (wall seconds / peak RSS MB of the largest process), then the
    whole-tree memory peaks, then the floors; Markdown, so it pastes into a note."""
    before = args.kanipy_before is not None
    print(f"scale {args.scale:g}; median of {args.repeat}; buildah {driver}"
          f"{' --layers' if args.buildah_layers else ''}; {os.cpu_count()} CPUs; "
          "cells: wall s / peak RSS MB (largest process, ru_maxrss)")
    if before:
        print(f"kanipy before: {args.kanipy_before}")
    print()
    head = ["workload", "buildah"] + (["kanipy before"] if before else []) + \
        ["kanipy", "kanipy / buildah"] + (["before / buildah"] if before else [])
    print("| " + " | ".join(head) + " |")
    print("|---|" + "---:|" * (len(head) - 1))
    for r in rows:
        cells = [r.name, _cell(r.buildah)] + ([_cell(r.before)] if before else []) + \
            [_cell(r.kanipy), _ratio(r.kanipy, r.buildah)] + \
            ([_ratio(r.before, r.buildah)] if before else [])
        print("| " + " | ".join(cells) + " |")
    print()
    print("peak RSS of the whole process tree, MB (sampled every 0.1 s): " + "; ".join(
        f"{r.name} " + " / ".join(f"{label} {m.tree_mb:.0f}" for label, m in
                                  (("kanipy", r.kanipy), ("before", r.before),
                                   ("buildah", r.buildah)) if m)
        for r in rows))
    floors = [r for r in rows if r.floors]
    if floors:
        print()
        print("floors on the same files, same run (median s): cp -a | rm -rf of the copy | "
              "os.scandir walk + lstat | tar | sha256sum, igzip -2 | sha256sum")
        print()
        print("| workload | cp -a | rm -rf | scandir walk | tar + sha256 + igzip |")
        print("|---|---:|---:|---:|---:|")
        for r in floors:
            f = r.floors
            assert f is not None
            print(f"| {r.name} | {f.copy:.2f} | {f.remove:.2f} | {f.walk:.2f} | "
                  f"{f.archive:.2f} |")


# ----------------------------------------------------------------------------- main

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    defaults = [w.name for w in WORKLOADS.values() if w.default]
    parser.add_argument("--workloads", default=",".join(defaults),
                        help=f"comma-separated subset of {','.join(WORKLOADS)} "
                             f"(default {','.join(defaults)})")
    parser.add_argument("--scale", type=float, default=None,
                        help="size factor for files and bytes (default 1, the issue's sizes; "
                             "--quick: 0.25)")
    parser.add_argument("--repeat", type=int, default=None,
                        help="builds per tool and workload, interleaved; the median wall "
                             "time and the highest peaks are reported (default 3, --quick: 1)")
    parser.add_argument("--quick", action="store_true",
                        help="one build each at scale 0.25 (a first look in a minute or two)")
    parser.add_argument("--kanipy-before", metavar="PATH", type=Path,
                        help="also build with the kanipy of another checkout (e.g. a "
                             "`git worktree add /tmp/before COMMIT`), interleaved with this one")
    parser.add_argument("--no-floors", action="store_true",
                        help="skip the floors (cp -a, scandir walk, tar + sha256 + igzip)")
    parser.add_argument("--keep", action="store_true",
                        help="keep the work directory (registry storage, logs)")
    parser.add_argument("--storage-driver", choices=["auto", "vfs", "overlay"], default="auto",
                        help="buildah storage driver (auto: overlay if it works here)")
    parser.add_argument("--buildah-layers", action="store_true",
                        help="buildah bud --layers (one layer per step, as kanipy makes)")
    parser.add_argument("--only", choices=["kanipy", "buildah"], help="run one tool only")
    parser.add_argument("--profile", metavar="DIR",
                        help="run kanipy under cProfile, writing DIR/WORKLOAD.prof")
    args = parser.parse_args()
    if args.scale is None:
        args.scale = 0.25 if args.quick else 1.0
    if args.repeat is None:
        args.repeat = 1 if args.quick else 3
    names = [n for n in args.workloads.split(",") if n]
    unknown = [n for n in names if n not in WORKLOADS]
    if unknown:
        parser.error(f"unknown workloads {unknown}; known: {', '.join(WORKLOADS)}")
    if args.kanipy_before is not None and not (args.kanipy_before / "kanipy").is_dir():
        parser.error(f"--kanipy-before {args.kanipy_before}: no kanipy package there")
    if os.geteuid() != 0:
        parser.error("needs root (RUN steps chroot, buildah --isolation chroot)")
    CACHE.mkdir(parents=True, exist_ok=True)
    # An installed kanipy has its bytecode compiled (pip does it); without it every run
    # would compile ~150 modules again (0.1 s) where PYTHONDONTWRITEBYTECODE is set.
    for checkout in [ROOT] + ([args.kanipy_before] if args.kanipy_before else []):
        subprocess.run([sys.executable, "-m", "compileall", "-q", str(checkout / "kanipy")],
                       check=True)

    work = Path(tempfile.mkdtemp(prefix="kanipy-bench-build-"))
    log = work / "build.log"
    installed_kanipy(work)
    reg = Registry(work / "registry").start()
    rows: list[Row] = []
    driver = "-"
    try:
        if args.only != "kanipy":
            driver = buildah_driver(work) if args.storage_driver == "auto" \
                else args.storage_driver
        refs: dict[str, str] = {}
        needed = {b for n in names for b in WORKLOADS[n].bases}
        if "busybox" in needed:
            refs["busybox"] = build_and_push_busybox(work / "busybox", reg.host).oci
        if "debian" in needed:
            refs["debian"] = push_debian(work, reg.host)
        for name in names:
            wl = WORKLOADS[name]
            print(f"== {name}: {wl.describe} (scale {args.scale:g})", file=sys.stderr)
            ctx = context_for(wl, args.scale, refs)
            ks: list[Measure] = []
            bs: list[Measure] = []
            olds: list[Measure] = []
            fs: list[Floors] = []
            tools: list[str] = []
            if args.only != "buildah" and args.kanipy_before is not None:
                tools.append("before")
            if args.only != "buildah":
                tools.append("kanipy")
            if args.only != "kanipy":
                tools.append("buildah")
            for round_number in range(args.repeat):
                # Each round starts with the next tool: creating files gets slower after
                # many were removed (ext4's allocator), which would always cost the
                # same tool if the order were fixed.
                shift = round_number % len(tools)
                for tool in tools[shift:] + tools[:shift]:
                    if tool == "before":
                        m = run_kanipy(ctx, reg.ref(f"bench/{name}-before:latest"), reg.host,
                                       work, log, None, args.kanipy_before)
                        olds.append(m)
                    elif tool == "kanipy":
                        prof = Path(args.profile) / f"{name}.prof" if args.profile else None
                        if prof:
                            prof.parent.mkdir(parents=True, exist_ok=True)
                        m = run_kanipy(ctx, reg.ref(f"bench/{name}-kanipy:latest"), reg.host,
                                       work, log, prof)
                        ks.append(m)
                    else:
                        m = run_buildah(ctx, reg.ref(f"bench/{name}-buildah:latest"), work,
                                        log, driver, args.buildah_layers)
                        bs.append(m)
                    print(f"   {tool:7} {m.seconds:7.2f} s  {m.max_rss_mb:5.0f} MB",
                          file=sys.stderr)
                tree = None if args.no_floors else floor_tree(wl, ctx, work)
                if tree is not None:
                    f = measure_floors(tree, work)
                    fs.append(f)
                    print(f"   floors  cp -a {f.copy:.2f} s, rm -rf {f.remove:.2f} s, "
                          f"walk {f.walk:.2f} s, tar+sha256+igzip {f.archive:.2f} s",
                          file=sys.stderr)
            shutil.rmtree(work / "floor-run", ignore_errors=True)
            rows.append(Row(name, summary(ks), summary(bs), summary(olds), floor_summary(fs)))
    finally:
        reg.stop()
        if args.keep:
            print(f"work directory kept: {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)
    print_tables(rows, args, driver)


if __name__ == "__main__":
    main()
