"""Check: this tree's kanipy and another checkout's push the same digests.

Builds each workload of ``bench_build.py`` once with each kanipy, with
``--reproducible``, into one throwaway registry on 127.0.0.1, and compares the
pushed manifest digests (``skopeo inspect``). Exit status 1 when any differs.
For a change that must not move a byte of any image (issue 14's per-file work):

    .venv/bin/python benchmarks/same_digests.py --kanipy-before /tmp/before \
        --workloads copy-tree,multi-stage --scale 1
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.bench_build import WORKLOADS, context_for, push_debian  # noqa: E402
from tests.fixtures.images import build_and_push_busybox  # noqa: E402
from tests.fixtures.registry import Registry  # noqa: E402


def build(checkout: Path, ctx: Path, dest: str, registry: str, work: Path) -> None:
    kdir = work / "kanipy-dir"
    shutil.rmtree(kdir, ignore_errors=True)
    argv = [sys.executable, "-m", "kanipy", "build", "--context", str(ctx),
            "--destination", dest, "--insecure-registry", registry,
            "--kanipy-dir", str(kdir), "--reproducible", "--verbosity", "warn"]
    env = {**os.environ, "PYTHONPATH": str(checkout), "SOURCE_DATE_EPOCH": "1700000000"}
    subprocess.run(argv, check=True, env=env, cwd=checkout, stdout=subprocess.DEVNULL)
    shutil.rmtree(kdir, ignore_errors=True)


def digest(ref: str) -> str:
    out = subprocess.run(["skopeo", "inspect", "--tls-verify=false", f"docker://{ref}"],
                         check=True, stdout=subprocess.PIPE, text=True).stdout
    return str(json.loads(out)["Digest"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kanipy-before", type=Path, required=True, metavar="PATH")
    parser.add_argument("--workloads", default="copy-tree,multi-stage,many-files")
    parser.add_argument("--scale", type=float, default=1.0)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="kanipy-same-digests-"))
    reg = Registry(work / "registry").start()
    differ = False
    try:
        refs = {"busybox": build_and_push_busybox(work / "busybox", reg.host).oci,
                "debian": push_debian(work, reg.host)}
        for name in args.workloads.split(","):
            ctx = context_for(WORKLOADS[name], args.scale, refs)
            seen = {}
            for label, checkout in (("before", args.kanipy_before.resolve()), ("this", ROOT)):
                ref = reg.ref(f"same/{name}:{label}")
                build(checkout, ctx, ref, reg.host, work)
                seen[label] = digest(ref)
            same = seen["before"] == seen["this"]
            differ |= not same
            print(f"{name} (scale {args.scale:g}): before {seen['before']}  this "
                  f"{seen['this']}  {'same' if same else 'DIFFERENT'}", flush=True)
    finally:
        reg.stop()
        shutil.rmtree(work, ignore_errors=True)
    sys.exit(1 if differ else 0)


if __name__ == "__main__":
    main()
