"""Where a big layer's time goes (issue 14, "Bytes"): each phase alone, the floors, whole builds.

On the big-run workload of bench_build.py (three RUN steps, each writing 100 MB
of half-compressible data), this script

1. makes the steps' files on the host with the workload's own commands (the RUN
   itself, timed), one directory per step, as the build's layers hold them;
2. measures, in this process with this checkout's kanipy, each phase of turning
   those directories into layers and pushing them: the snapshot walk
   (``take_snapshot``), the tar writer alone, tar + sha256 (the diff_id), tar +
   ISA-L gzip, ``write_layer`` with its compressing thread off and on (what a
   build runs), zstd on one thread and on every CPU, and the upload of the
   layer blobs to a local registry (``registry.push.push_blob``, as a build);
3. measures the floors on the same files: GNU tar, tar | sha256sum,
   tar | igzip -2, the whole tar | tee >(sha256sum) | igzip -2 | sha256sum
   pipeline, and curl uploading the same blobs (POST, then PUT of the file);
4. runs whole builds of the workload (``--log-format json``; each step's seconds
   come from kanipy's own log), with ``--kanipy-before PATH`` also the kanipy of
   another checkout, interleaved.

Medians over ``--repeat`` rounds; figures only, no assertions.

    .venv/bin/python benchmarks/bench_bytes.py                         # 300 MB, 3 rounds
    .venv/bin/python benchmarks/bench_bytes.py --scale 0.25 --repeat 1  # a first look
    .venv/bin/python benchmarks/bench_bytes.py --kanipy-before /tmp/before
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO, cast

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.bench_build import WORKLOADS, context_for  # noqa: E402
from kanipy.fs import layer as layer_module  # noqa: E402
from kanipy.fs.layer import _GzipWriter, write_layer, write_tar  # noqa: E402
from kanipy.fs.snapshot import Changes, changes_for_paths, take_snapshot  # noqa: E402
from kanipy.oci import mediatypes  # noqa: E402
from kanipy.oci.blobstore import BlobStore  # noqa: E402
from kanipy.oci.descriptor import Descriptor  # noqa: E402
from kanipy.oci.digest import HashingWriter  # noqa: E402
from kanipy.oci.image import Blob  # noqa: E402
from kanipy.reference import Reference  # noqa: E402
from kanipy.registry import RegistryClient, RegistryOptions  # noqa: E402
from kanipy.registry.auth import repository_scope  # noqa: E402
from kanipy.registry.push import push_blob  # noqa: E402
from tests.fixtures.images import build_and_push_busybox  # noqa: E402
from tests.fixtures.registry import Registry  # noqa: E402

ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"


class _Drop:
    """A sink that keeps nothing."""

    def write(self, data: bytes | bytearray | memoryview, /) -> int:
        return len(data)


def make_step_dirs(ctx: Path, work: Path) -> tuple[list[Path], float]:
    """Each RUN line of the workload run on the host into its own root; the seconds."""
    roots = []
    started = time.perf_counter()
    for number, line in enumerate(
            line for line in (ctx / "Dockerfile.body").read_text().splitlines()
            if line.startswith("RUN ")):
        root = work / f"step{number}"
        shutil.rmtree(root, ignore_errors=True)
        root.mkdir(parents=True)
        subprocess.run(["sh", "-c", line[4:].replace("/data/", f"{root}/data/")], check=True)
        roots.append(root)
    return roots, time.perf_counter() - started


def _timed(action: Callable[..., object], *args: object, **kwargs: object) -> float:
    started = time.perf_counter()
    action(*args, **kwargs)
    return time.perf_counter() - started


def _shell(command: str) -> float:
    return _timed(subprocess.run, ["bash", "-c", "set -o pipefail; " + command], check=True,
                  stdout=subprocess.DEVNULL)


def _gzip_only(root: Path, changes: Changes) -> None:
    gz = _GzipWriter(_Drop(), 2)
    write_tar(root, changes, cast(BinaryIO, gz))
    gz.close()


def _layer(root: Path, changes: Changes, store: BlobStore, compression: str = "gzip",
           zstd_threads: int = 0, one_thread: bool = False) -> Descriptor:
    saved = layer_module._HANDOFF
    if one_thread:
        layer_module._HANDOFF = 1 << 62  # the compressing thread never starts
    try:
        blob = write_layer(root, changes, store, compression=compression,
                           media_type=ZSTD if compression == "zstd"
                           else mediatypes.OCI_LAYER_GZIP, zstd_threads=zstd_threads)
    finally:
        layer_module._HANDOFF = saved
    assert blob is not None
    return blob.descriptor


def _push(client: RegistryClient, ref: Reference, store: BlobStore, desc: Descriptor) -> None:
    def open_blob() -> BinaryIO:
        return store.open(desc.digest)
    push_blob(client, ref, Blob(desc, open_blob),
              [repository_scope(ref.repository, "pull,push")], None, None)


def phases(roots: list[Path], work: Path, registry: Registry, round_number: int
           ) -> dict[str, float]:
    """Seconds of each phase, summed over the step directories."""
    out: dict[str, float] = {}

    def add(name: str, seconds: float) -> None:
        out[name] = out.get(name, 0.0) + seconds

    store = BlobStore(work / f"store{round_number}", durable=False)
    client = RegistryClient(RegistryOptions(insecure_registries=frozenset({registry.host})))
    blobs: list[Descriptor] = []
    for root in roots:
        changes = changes_for_paths(str(root), ["/data"], frozenset())
        add("snapshot walk (take_snapshot)", _timed(take_snapshot, root))
        add("tar only", _timed(write_tar, root, changes, _Drop()))
        add("tar + sha256", _timed(write_tar, root, changes, HashingWriter(None)))
        add("tar + gzip (ISA-L 2)", _timed(_gzip_only, root, changes))
        add("layer gzip, one thread", _timed(_layer, root, changes, store, one_thread=True))
        started = time.perf_counter()
        blobs.append(_layer(root, changes, store))
        add("layer gzip, two threads (as built)", time.perf_counter() - started)
        add("layer zstd, one thread", _timed(_layer, root, changes, store, "zstd", 0))
        add("layer zstd, threads", _timed(_layer, root, changes, store, "zstd", -1))
    ref = Reference.parse(registry.ref(f"bench/bytes-{round_number}:1"))
    for desc in blobs:
        add("push of the gzip blobs (push_blob)", _timed(_push, client, ref, store, desc))
    # Floors on the same files.
    igzip = f"'{sys.executable}' -m isal.igzip -2 -c -n"
    for root in roots:
        tar = f"tar -C '{root}' --numeric-owner -cf - data"
        add("floor: GNU tar", _shell(f"{tar} > /dev/null"))
        add("floor: tar | sha256sum", _shell(f"{tar} | sha256sum"))
        add("floor: tar | igzip -2", _shell(f"{tar} | {igzip} > /dev/null"))
        add("floor: tar | tee >(sha256sum) | igzip -2 | sha256sum",
            _shell(f"{tar} | tee >(sha256sum > /dev/null) | {igzip} | sha256sum"))
    for desc in blobs:
        add("floor: curl upload of the same blobs",
            _timed(_curl_upload, registry, f"bench/curl-{round_number}", str(desc.digest),
                   store.path(desc.digest)))
    shutil.rmtree(store.root, ignore_errors=True)
    return out


def _curl_upload(registry: Registry, repo: str, digest: str, path: Path) -> None:
    head = subprocess.run(["curl", "-sS", "-D", "-", "-o", "/dev/null", "-X", "POST",
                           f"{registry.url}/v2/{repo}/blobs/uploads/"],
                          check=True, capture_output=True, text=True).stdout
    location = next(line.split(":", 1)[1].strip() for line in head.splitlines()
                    if line.lower().startswith("location:"))
    if location.startswith("/"):
        location = registry.url + location
    sep = "&" if "?" in location else "?"
    subprocess.run(["curl", "-sS", "-f", "-o", "/dev/null", "-X", "PUT", "-H",
                    "Content-Type: application/octet-stream", "--data-binary", f"@{path}",
                    f"{location}{sep}digest={digest}"], check=True)


def whole_build(ctx: Path, dest: str, registry: Registry, work: Path, checkout: Path
                ) -> dict[str, float]:
    """One cold build; its wall seconds and each step's seconds from the JSON log."""
    kdir = work / "kanipy-dir"
    shutil.rmtree(kdir, ignore_errors=True)
    argv = [sys.executable, "-m", "kanipy", "build", "--context", str(ctx), "--destination",
            dest, "--insecure-registry", registry.host, "--kanipy-dir", str(kdir),
            "--log-format", "json", "--verbosity", "info"]
    started = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True, cwd=checkout,
                          env={**os.environ, "PYTHONPATH": str(checkout)})
    wall = time.perf_counter() - started
    shutil.rmtree(kdir, ignore_errors=True)
    if proc.returncode != 0:
        raise SystemExit(f"kanipy build failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    out = {"whole build (wall)": wall}
    for line in proc.stderr.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if record.get("event") == "step_done":
            out[f"step {record['step']}: {record.get('instruction', '')[:28]}"] = \
                float(record["seconds"])
    out["after the last step (push, cleanup)"] = wall - sum(
        v for k, v in out.items() if k.startswith("step "))
    return out


def _median(runs: list[dict[str, float]]) -> dict[str, float]:
    keys = list(dict.fromkeys(k for r in runs for k in r))
    return {k: statistics.median(r[k] for r in runs if k in r) for k in keys}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", type=float, default=1.0, help="size factor (1: 300 MB)")
    parser.add_argument("--repeat", type=int, default=3, help="rounds (medians are printed)")
    parser.add_argument("--kanipy-before", metavar="PATH", type=Path,
                        help="also build with the kanipy of another checkout, interleaved")
    parser.add_argument("--no-builds", action="store_true", help="phases and floors only")
    args = parser.parse_args()
    if os.geteuid() != 0:
        parser.error("needs root (the builds' RUN steps chroot)")
    work = Path(tempfile.mkdtemp(prefix="kanipy-bench-bytes-"))
    reg = Registry(work / "registry").start()
    try:
        busybox = build_and_push_busybox(work / "busybox", reg.host).oci
        ctx = context_for(WORKLOADS["big-run"], args.scale, {"busybox": busybox})
        phase_runs: list[dict[str, float]] = []
        builds: dict[str, list[dict[str, float]]] = {"kanipy": [], "before": []}
        for round_number in range(args.repeat):
            roots, run_seconds = make_step_dirs(ctx, work)
            measured = {"the RUN commands themselves (host)": run_seconds}
            measured.update(phases(roots, work, reg, round_number))
            phase_runs.append(measured)
            for root in roots:
                shutil.rmtree(root, ignore_errors=True)
            print(f"round {round_number + 1}: phases done", file=sys.stderr)
            if args.no_builds:
                continue
            tools = ["kanipy"] + (["before"] if args.kanipy_before else [])
            if round_number % 2:
                tools.reverse()
            for tool in tools:
                checkout = ROOT if tool == "kanipy" else args.kanipy_before
                result = whole_build(ctx, reg.ref(f"bench/bytes-{tool}:{round_number}"), reg,
                                     work, checkout)
                builds[tool].append(result)
                print(f"   {tool:7} {result['whole build (wall)']:.2f} s", file=sys.stderr)
    finally:
        reg.stop()
        shutil.rmtree(work, ignore_errors=True)
    print(f"big-run at scale {args.scale:g} (3 RUN steps, {300 * args.scale:.0f} MB); "
          f"median of {args.repeat}; {os.cpu_count()} CPUs; seconds, summed over the 3 layers")
    print()
    print("| phase (alone, on the same files) | s |")
    print("|---|---:|")
    for key, value in _median(phase_runs).items():
        print(f"| {key} | {value:.2f} |")
    if builds["kanipy"]:
        now = _median(builds["kanipy"])
        old = _median(builds["before"]) if builds["before"] else {}
        print()
        head = "| whole build (JSON log) | kanipy |" + (" before | ratio |" if old else "")
        print(head)
        print("|---|---:|" + ("---:|---:|" if old else ""))
        for key, value in now.items():
            cells = f"| {key} | {value:.2f} |"
            if old and key in old:
                cells += f" {old[key]:.2f} | {value / old[key]:.2f} |" if old[key] else " - | - |"
            print(cells)


if __name__ == "__main__":
    main()
