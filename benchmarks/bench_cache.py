"""Rebuild wall time with the layer cache: kanipy --cache beside buildah bud --layers.

Starts its own docker-registry on 127.0.0.1, pushes busybox (as an OCI and a
Docker manifest, two base digests), writes a copy-tree workload (seeded) and
builds it four times in a row with each tool, caches kept between builds:

    cold        no cache entries yet
    unchanged   the same context again (every mtime touched first)
    late edit   one byte of a file that only the last COPY reads
    base change the other manifest of the same busybox (a new base digest)

kanipy pushes to REGISTRY/bench/cache-kanipy with ``--cache`` (entries in
REGISTRY/bench/cache-kanipy/cache); buildah keeps its layers in its own store
and pushes too. Prints wall seconds per phase and kanipy's cached step count.
Figures only, no assertions.

    .venv/bin/python benchmarks/bench_cache.py                 # 2,000 files
    .venv/bin/python benchmarks/bench_cache.py --files 20000 --no-buildah
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.fixtures.images import build_and_push_busybox  # noqa: E402
from tests.fixtures.registry import Registry  # noqa: E402

DOCKERFILE = """\
ARG BASE
FROM $BASE
WORKDIR /srv
COPY deps/ /srv/deps/
RUN find /srv/deps -type f | sort > /srv/deps.list && mkdir -p /opt/out && \\
    for i in 1 2 3 4 5 6 7 8; do cp -r /srv/deps /opt/out/copy$i; done
COPY app/ /srv/app/
CMD ["/bin/sh"]
"""


def write_context(ctx: Path, files: int) -> None:
    rng = random.Random(10)
    (ctx / "deps").mkdir(parents=True)
    for i in range(files):
        sub = ctx / "deps" / f"d{i % 50:02d}"
        sub.mkdir(exist_ok=True)
        (sub / f"f{i:05d}.txt").write_bytes(rng.randbytes(rng.randint(100, 4000)))
    (ctx / "app").mkdir()
    (ctx / "app" / "main.txt").write_text("version 1\n")
    (ctx / "Dockerfile").write_text(DOCKERFILE)


def timed(argv: list[str], env: dict[str, str] | None = None) -> tuple[float, str]:
    started = time.monotonic()
    proc = subprocess.run(argv, capture_output=True, text=True, env=env)
    seconds = time.monotonic() - started
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv[:4])} failed:\n{proc.stderr[-3000:]}")
    return seconds, proc.stderr


def kanipy_build(ctx: Path, base: str, dest: str, kdir: Path) -> tuple[float, int, int]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    profile = os.environ.get("BENCH_PROFILE")
    prefix = ["-m", "cProfile", "-o", f"{profile}.{time.monotonic():.0f}"] if profile else []
    seconds, log = timed([sys.executable, *prefix, "-m", "kanipy", "build", "-c", str(ctx),
                          "-d", dest, "--build-arg", f"BASE={base}", "--cache",
                          "--cache-copy-layers", "--log-format", "json",
                          "--kanipy-dir", str(kdir)], env)
    steps = [json.loads(line) for line in log.splitlines() if '"step_done"' in line]
    if os.environ.get("BENCH_STEPS"):
        for step in steps:
            print(f"    {step['seconds']:7.2f}  cached={step['cached']!s:<5} "
                  f"{step['instruction'][:60]}")
        print("    " + "\n    ".join(line[:200] for line in log.splitlines()
                                        if '"summary"' not in line and '"step' not in line))
    layered = [s for s in steps if s.get("layer_bytes")]
    return seconds, sum(1 for s in layered if s.get("cached")), len(layered)


def buildah_build(ctx: Path, base: str, dest: str, store: Path) -> float:
    common = ["buildah", "--root", str(store / "root"), "--runroot", str(store / "run"),
              "--storage-driver", "vfs"]
    a, _ = timed(common + ["bud", "--isolation", "chroot", "--tls-verify=false", "--quiet",
                           "--layers=true", "--build-arg", f"BASE={base}", "-t", dest,
                           str(ctx)])
    b, _ = timed(common + ["push", "--tls-verify=false", "--quiet", dest,
                           f"docker://{dest}"])
    return a + b


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=2000)
    parser.add_argument("--no-buildah", action="store_true")
    args = parser.parse_args()
    if os.geteuid() != 0:
        parser.error("needs root (RUN steps chroot, buildah --isolation chroot)")
    work = Path(tempfile.mkdtemp(prefix="kanipy-bench-cache-"))
    registry = Registry(work / "registry").start()
    try:
        arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(),
                                                           platform.machine())
        images = build_and_push_busybox(work / "busybox", registry.host, arch)
        ctx = work / "ctx"
        write_context(ctx, args.files)
        phases = ["cold", "unchanged", "late edit", "base change"]
        rows: list[tuple[str, str, str]] = []
        for phase in phases:
            base = images.docker if phase == "base change" else images.oci
            if phase == "unchanged":
                for path in ctx.rglob("*"):
                    os.utime(path)
            if phase == "late edit":
                (ctx / "app" / "main.txt").write_text("version 2\n")
            kdir = work / "kanipy"
            shutil.rmtree(kdir, ignore_errors=True)
            k_seconds, cached, layered = kanipy_build(
                ctx, base, f"{registry.host}/bench/cache-kanipy:latest", kdir)
            b_text = "-"
            if not args.no_buildah:
                b_seconds = buildah_build(ctx, base, f"{registry.host}/bench/cache-buildah:latest",
                                          work / "buildah")
                b_text = f"{b_seconds:8.2f}"
            rows.append((phase, f"{k_seconds:8.2f}  ({cached}/{layered} cached)", b_text))
        print(f"copy-tree, {args.files} files, busybox base; wall seconds, build + push")
        print(f"{'phase':<12} {'kanipy --cache':<28} {'buildah --layers':>16}")
        for phase, k_text, b_text in rows:
            print(f"{phase:<12} {k_text:<28} {b_text:>16}")
    finally:
        registry.stop()
        subprocess.run(["umount", "-R", str(work / "buildah" / "root")], capture_output=True)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
