"""Push and pull throughput and peak memory of kanipy's registry client, against skopeo.

Starts its own docker-registry on 127.0.0.1 (tests/fixtures/registry.py), makes an
image of ``--layers`` uncompressed layers of random data totalling ``--mb`` MB,
then measures, each in its own child process: kanipy push, skopeo copy (push),
kanipy pull, skopeo copy (pull). Prints MB/s and peak RSS (the child's
``ru_maxrss`` from ``os.wait4``). Figures only, no assertions.

    /work/venv/bin/python benchmarks/bench_registry.py --mb 500
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from kanipy.oci import mediatypes  # noqa: E402
from kanipy.oci.blobstore import BlobStore  # noqa: E402
from kanipy.oci.descriptor import Descriptor  # noqa: E402
from tests.fixtures.registry import Registry  # noqa: E402

MB = 1_000_000


class _RandomFile:
    """``size`` bytes of random data, read like a file (never held whole)."""

    def __init__(self, size: int) -> None:
        self.left = size

    def read(self, n: int = -1) -> bytes:
        n = self.left if n < 0 else min(n, self.left)
        self.left -= n
        return os.urandom(n)


def make_image(store: BlobStore, total: int, layers: int) -> tuple[bytes, list[Descriptor]]:
    descs: list[Descriptor] = []
    diff_ids = []
    for i in range(layers):
        size = total // layers
        with store.writer() as out:
            with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:  # type: ignore[call-overload]
                info = tarfile.TarInfo(f"data/{i}.bin")
                info.size = size
                tar.addfile(info, _RandomFile(size))
        descs.append(Descriptor(mediatypes.OCI_LAYER, out.digest, out.size))
        diff_ids.append(str(out.digest))
    config = json.dumps({"architecture": "amd64", "os": "linux",
                         "rootfs": {"type": "layers", "diff_ids": diff_ids}}).encode()
    config_desc = Descriptor(mediatypes.OCI_CONFIG, store.put_bytes(config), len(config))
    manifest = json.dumps({"schemaVersion": 2, "mediaType": mediatypes.OCI_MANIFEST,
                           "config": config_desc.to_json(),
                           "layers": [d.to_json() for d in descs]}).encode()
    digest = store.put_bytes(manifest)
    (store.root / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [{
        "mediaType": mediatypes.OCI_MANIFEST, "digest": str(digest), "size": len(manifest),
        "annotations": {"org.opencontainers.image.ref.name": "bench"}}]}))
    return manifest, [config_desc, *descs]


def child(argv: list[str]) -> tuple[float, int]:
    """Run ``argv``; (seconds, peak RSS in MB) of that one child."""
    start = time.perf_counter()
    proc = subprocess.Popen(argv, cwd=ROOT)
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{argv[:3]} failed with {proc.returncode}")
    return elapsed, usage.ru_maxrss // 1024


def run_kanipy(mode: str, ref: str, store: str) -> None:
    """Child side: one push or pull with kanipy's client."""
    from kanipy.oci.layout import read_layout
    from kanipy.reference import Reference
    from kanipy.registry import RegistryClient, RegistryOptions
    from kanipy.registry.pull import pull
    from kanipy.registry.push import push

    client = RegistryClient(RegistryOptions(docker_config_dir=Path(store) / "no-docker"))
    if mode == "push":
        push(read_layout(store, "bench"), Reference.parse(ref), client=client)
    else:
        pull(Reference.parse(ref), client=client, store=BlobStore(store))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mb", type=int, default=100, help="image size in MB (default 100)")
    parser.add_argument("--layers", type=int, default=4, help="number of layers (default 4)")
    parser.add_argument("--child", nargs=3, metavar=("MODE", "REF", "STORE"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        run_kanipy(*args.child)
        return

    py = sys.executable
    me = str(Path(__file__).resolve())
    with tempfile.TemporaryDirectory(prefix="kanipy-bench-") as tmp_name:
        tmp = Path(tmp_name)
        store = BlobStore(tmp / "src")
        print(f"making a {args.mb} MB image in {args.layers} layers ...", file=sys.stderr)
        make_image(store, args.mb * MB, args.layers)
        size = sum(p.stat().st_size for p in (tmp / "src" / "blobs" / "sha256").iterdir())
        reg = Registry(tmp / "registry").start()
        try:
            rows = []
            k_ref = reg.ref("bench/kanipy:v1")
            s_ref = reg.ref("bench/skopeo:v1")
            rows.append(("kanipy push", *child([py, me, "--child", "push", k_ref,
                                                str(tmp / "src")])))
            rows.append(("skopeo copy (push)", *child(
                ["skopeo", "copy", "--quiet", "--dest-tls-verify=false",
                 f"oci:{tmp / 'src'}:bench", f"docker://{s_ref}"])))
            rows.append(("kanipy pull", *child([py, me, "--child", "pull", k_ref,
                                                str(tmp / "pull-kanipy")])))
            rows.append(("skopeo copy (pull)", *child(
                ["skopeo", "copy", "--quiet", "--src-tls-verify=false",
                 f"docker://{s_ref}", f"oci:{tmp / 'pull-skopeo'}:bench"])))
        finally:
            reg.stop()
    print(f"image: {size / MB:.0f} MB in {args.layers} layers, registry on 127.0.0.1")
    print(f"{'':22}{'seconds':>9}{'MB/s':>9}{'peak RSS MB':>13}")
    for name, seconds, rss in rows:
        print(f"{name:22}{seconds:9.2f}{size / MB / seconds:9.0f}{rss:13d}")


if __name__ == "__main__":
    main()
