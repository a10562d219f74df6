"""Rebuild wall time and memory with the layer cache: kanipy --cache beside buildah bud --layers.

Starts its own docker-registry on 127.0.0.1, pushes the bases (busybox as an
OCI and a Docker manifest, two base digests; the Debian bookworm minbase of
scripts/make_debian_base.sh, cached under ~/.cache/kanipy-bench, and the same
layer with another config as the "new" Debian), writes each workload's
context (seeded) and builds it phase after phase, caches kept between phases:

    cold         no cache entries yet
    unchanged    the same context again (every mtime touched first)
    late edit    one byte of a file that only the last COPY reads
    version      (python-app) --build-arg APP_VERSION=2, an ARG every RUN sees
                 but none uses: a re-run makes its old layer (chaining by layer)
    base change  a new base digest: another manifest (busybox) or config (Debian) over the
                 very same layers. kanipy keys on the manifest digest, as the issue
                 specifies, and rebuilds; buildah --layers reuses by layer content and
                 mostly hits, so this row compares a rebuild with a near no-op.

Workloads:

    python-app   Debian, COPY requirements.txt, a RUN that "pip installs" them
                 (writes 40 packages x 60 modules from requirements.txt: no
                 network here), COPY app.py
    copy-tree    busybox, COPY 2,000 files, a RUN that copies them 8 times,
                 COPY app/

kanipy pushes to REGISTRY/bench/NAME-kanipy-R with ``--cache`` (entries in
.../cache) and SOURCE_DATE_EPOCH set (layers reproducible, as chaining by layer
needs); buildah keeps its layers in its own store (vfs or overlay) and pushes
too. Each round R starts from empty caches; with ``--repeat N`` the figures
are medians over N rounds. Prints wall seconds (build + push), kanipy's cached
steps, how many re-run steps continued the chain by their layer, and the peak
RSS of the largest process of each tool. Figures only, no assertions.

    .venv/bin/python benchmarks/bench_cache.py                  # both workloads, 1 round
    .venv/bin/python benchmarks/bench_cache.py --repeat 3       # medians
    .venv/bin/python benchmarks/bench_cache.py --workloads copy-tree --files 20000 --no-buildah
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.bench_build import (  # noqa: E402
    CACHE,
    Measure,
    buildah_driver,
    measure,
    push_debian,
)
from tests.fixtures.images import (  # noqa: E402
    build_and_push_busybox,
    debian_layer_tar,
    push_layer_tar,
)
from tests.fixtures.registry import Registry  # noqa: E402

COPY_TREE = """\
ARG BASE
FROM $BASE
WORKDIR /srv
COPY deps/ /srv/deps/
RUN find /srv/deps -type f | sort > /srv/deps.list && mkdir -p /opt/out && \\
    for i in 1 2 3 4 5 6 7 8; do cp -r /srv/deps /opt/out/copy$i; done
COPY app/ /srv/app/
CMD ["/bin/sh"]
"""

# "pip install -r requirements.txt" without a network: each requirement becomes a
# package directory of modules whose text comes from the requirement line.
PYTHON_APP = """\
ARG BASE
FROM $BASE
ARG APP_VERSION=1
ENV PYTHONDONTWRITEBYTECODE=1
WORKDIR /app
COPY requirements.txt .
RUN set -e; site=/usr/local/lib/python3/site-packages; mkdir -p $site; \\
    pad=$(printf '%0800d' 0); \\
    while read -r req; do pkg=${req%%==*}; mkdir -p $site/$pkg; \\
      for i in $(seq 1 60); do \\
        printf '# %s, module %d\\nVALUE = %d\\n# %s\\n' "$req" $i $i "$pad" \\
          > $site/$pkg/mod$i.py; \\
      done; echo "$req" >> $site/INSTALLED; \\
    done < requirements.txt
COPY app.py .
LABEL org.opencontainers.image.version=$APP_VERSION
CMD ["python3", "app.py"]
"""


def write_copy_tree(ctx: Path, files: int) -> None:
    rng = random.Random(10)
    (ctx / "deps").mkdir(parents=True)
    for i in range(files):
        sub = ctx / "deps" / f"d{i % 50:02d}"
        sub.mkdir(exist_ok=True)
        (sub / f"f{i:05d}.txt").write_bytes(rng.randbytes(rng.randint(100, 4000)))
    (ctx / "app").mkdir()
    (ctx / "app" / "main.txt").write_text("version 1\n")
    (ctx / "Dockerfile").write_text(COPY_TREE)


def edit_copy_tree(ctx: Path) -> None:
    (ctx / "app" / "main.txt").write_text("version 2\n")


def write_python_app(ctx: Path, files: int) -> None:
    ctx.mkdir(parents=True)
    rng = random.Random(11)
    names = sorted({"".join(rng.choice("abcdefghijklmnop") for _ in range(8))
                    for _ in range(40)})
    (ctx / "requirements.txt").write_text(
        "".join(f"{name}=={rng.randint(1, 9)}.{rng.randint(0, 20)}\n" for name in names))
    (ctx / "app.py").write_text("print('hello from the app, version 1')\n")
    (ctx / "Dockerfile").write_text(PYTHON_APP)


def edit_python_app(ctx: Path) -> None:
    (ctx / "app.py").write_text("print('hello from the app, version 2')\n")


@dataclass
class Workload:
    name: str
    write: Callable[[Path, int], None]
    edit: Callable[[Path], None]
    base: str  # "busybox" | "debian"
    phases: list[str]


WORKLOADS = {
    "python-app": Workload("python-app", write_python_app, edit_python_app, "debian",
                           ["cold", "unchanged", "late edit", "version", "base change"]),
    "copy-tree": Workload("copy-tree", write_copy_tree, edit_copy_tree, "busybox",
                          ["cold", "unchanged", "late edit", "base change"]),
}


@dataclass
class KanipyRun:
    measure: Measure
    cached: int
    layered: int
    chained: int


def kanipy_build(ctx: Path, base: str, dest: str, work: Path, args: list[str]) -> KanipyRun:
    kdir = work / "kanipy-dir"
    shutil.rmtree(kdir, ignore_errors=True)
    log = work / "kanipy.log"
    log.unlink(missing_ok=True)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "SOURCE_DATE_EPOCH": "1700000000"}
    argv = [sys.executable]
    if os.environ.get("BENCH_PROFILE"):
        argv += ["-m", "cProfile", "-o", f"{os.environ['BENCH_PROFILE']}.{time.monotonic_ns()}"]
    argv += ["-m", "kanipy", "build", "-c", str(ctx), "-d", dest,
             "--build-arg", f"BASE={base}", *args, "--cache", "--cache-copy-layers",
             "--log-format", "json", "--kanipy-dir", str(kdir)]
    result = measure(argv, log, env, cwd=ROOT)
    shutil.rmtree(kdir, ignore_errors=True)
    lines = log.read_text().splitlines()
    steps = [json.loads(line) for line in lines if '"step_done"' in line]
    if os.environ.get("BENCH_STEPS"):
        for step in steps:
            print(f"    {step['seconds']:7.2f}  cached={step['cached']!s:<5} "
                  f"{step['instruction'][:60]}")
    layered = [s for s in steps if s.get("layer_bytes")]
    return KanipyRun(result, sum(1 for s in layered if s.get("cached")), len(layered),
                     sum(1 for line in lines if '"cache": "same-layer"' in line))


def buildah_build(ctx: Path, base: str, dest: str, store: Path, driver: str,
                  args: list[str]) -> Measure:
    common = ["buildah", "--root", str(store / "root"), "--runroot", str(store / "run"),
              "--storage-driver", driver]
    log = store.parent / "buildah.log"
    a = measure(common + ["bud", "--isolation", "chroot", "--tls-verify=false", "--quiet",
                          "--layers=true", "--build-arg", f"BASE={base}", *args, "-t", dest,
                          str(ctx)], log)
    b = measure(common + ["push", "--tls-verify=false", "--quiet", dest, f"docker://{dest}"],
                log)
    return Measure(a.seconds + b.seconds, max(a.max_rss_mb, b.max_rss_mb),
                   max(a.tree_mb, b.tree_mb))


def reset_buildah(store: Path, driver: str) -> None:
    if store.exists():
        subprocess.run(["buildah", "--root", str(store / "root"), "--runroot",
                        str(store / "run"), "--storage-driver", driver, "rm", "--all"],
                       capture_output=True)
        subprocess.run(["umount", "-R", str(store / "root")], capture_output=True)
        shutil.rmtree(store, ignore_errors=True)


@dataclass
class Row:
    kanipy: list[KanipyRun] = field(default_factory=list)
    buildah: list[Measure] = field(default_factory=list)


def run_workload(wl: Workload, bases: dict[str, tuple[str, str]], registry: Registry,
                 work: Path, files: int, repeat: int, with_buildah: bool,
                 driver: str) -> dict[str, Row]:
    rows = {phase: Row() for phase in wl.phases}
    for rnd in range(repeat):
        ctx = work / f"{wl.name}-ctx"
        shutil.rmtree(ctx, ignore_errors=True)
        wl.write(ctx, files)
        store = work / "buildah"
        reset_buildah(store, driver)
        old, new = bases[wl.base]
        for phase in wl.phases:
            base = new if phase == "base change" else old
            args = ["--build-arg", "APP_VERSION=2"] if phase in ("version", "base change") \
                and "version" in wl.phases else []
            if phase == "unchanged":
                for path in ctx.rglob("*"):
                    os.utime(path)
            if phase == "late edit":
                wl.edit(ctx)
            if os.environ.get("BENCH_STEPS"):
                print(f"  {wl.name} round {rnd + 1}: {phase}")
            rows[phase].kanipy.append(kanipy_build(
                ctx, base, f"{registry.host}/bench/{wl.name}-kanipy-{rnd}:latest", work,
                args))
            if with_buildah:
                rows[phase].buildah.append(buildah_build(
                    ctx, base, f"{registry.host}/bench/{wl.name}-buildah-{rnd}:latest",
                    store, driver, args))
        reset_buildah(store, driver)
    return rows


def push_new_debian(work: Path, registry_host: str) -> str:
    """The same Debian layer under another config: a new base digest, as after an update."""
    return push_layer_tar(work / "debian-new", debian_layer_tar(CACHE),
                          f"{registry_host}/bench/debian:bookworm-new",
                          created_by="debootstrap --variant=minbase bookworm (rebuilt)",
                          cmd=["bash", "-l"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workloads", default=",".join(WORKLOADS),
                        help=f"comma-separated subset of {','.join(WORKLOADS)}")
    parser.add_argument("--files", type=int, default=2000, help="copy-tree's context files")
    parser.add_argument("--repeat", type=int, default=1, help="rounds; medians over them")
    parser.add_argument("--no-buildah", action="store_true")
    args = parser.parse_args()
    if os.geteuid() != 0:
        parser.error("needs root (RUN steps chroot, buildah --isolation chroot)")
    names = [n for n in args.workloads.split(",") if n]
    for name in names:
        if name not in WORKLOADS:
            parser.error(f"unknown workload {name!r}")
    work = Path(tempfile.mkdtemp(prefix="kanipy-bench-cache-"))
    registry = Registry(work / "registry").start()
    try:
        arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(),
                                                           platform.machine())
        bases: dict[str, tuple[str, str]] = {}
        if any(WORKLOADS[n].base == "busybox" for n in names):
            images = build_and_push_busybox(work / "busybox", registry.host, arch)
            bases["busybox"] = (images.oci, images.docker)
        if any(WORKLOADS[n].base == "debian" for n in names):
            bases["debian"] = (push_debian(work, registry.host),
                               push_new_debian(work, registry.host))
        driver = "vfs" if args.no_buildah else buildah_driver(work)
        for name in names:
            wl = WORKLOADS[name]
            rows = run_workload(wl, bases, registry, work, args.files, args.repeat,
                                not args.no_buildah, driver)
            print(f"\n{name} ({wl.base} base), wall seconds (build + push), "
                  f"median of {args.repeat}; peak RSS of the largest process")
            print(f"{'phase':<12} {'kanipy --cache':>15} {'cached':>7} {'by layer':>9} "
                  f"{'RSS MB':>7}   {'buildah --layers':>16} {'RSS MB':>7} {'ratio':>6}")
            for phase in wl.phases:
                row = rows[phase]
                k = statistics.median(r.measure.seconds for r in row.kanipy)
                k_rss = max(r.measure.max_rss_mb for r in row.kanipy)
                last = row.kanipy[-1]
                text = (f"{phase:<12} {k:15.2f} {last.cached:>3}/{last.layered:<3} "
                        f"{last.chained:>9} {k_rss:7.0f}")
                if row.buildah:
                    b = statistics.median(m.seconds for m in row.buildah)
                    b_rss = max(m.max_rss_mb for m in row.buildah)
                    text += f"   {b:16.2f} {b_rss:7.0f} {k / b:6.2f}"
                print(text)
    finally:
        registry.stop()
        reset_buildah(work / "buildah", "overlay")
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
