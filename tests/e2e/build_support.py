"""Shared pieces of the ``test_build_*`` end-to-end tests: hand-made images and layer listings.

Images here are made without kanipy (tarfile, hand-written JSON, skopeo), as in
tests/fixtures/images.py, so a bug in kanipy's image model cannot hide in both
the input and the output.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import subprocess
import tarfile
from collections.abc import Callable
from pathlib import Path

from tests.e2e.helpers import run_tool
from tests.fixtures.images import OCILayout, image_blobs

TarBuilder = Callable[[tarfile.TarFile], None]


def layer_tar(fill: TarBuilder) -> bytes:
    """An uncompressed layer tar whose members ``fill`` adds."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        fill(tar)
    return raw.getvalue()


def add_file(tar: tarfile.TarFile, name: str, data: bytes = b"x\n", mode: int = 0o644) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = mode
    info.mtime = 1_700_000_000
    tar.addfile(info, io.BytesIO(data))


def add_symlink(tar: tarfile.TarFile, name: str, target: str) -> None:
    info = tarfile.TarInfo(name)
    info.type = tarfile.SYMTYPE
    info.linkname = target
    info.mode = 0o777
    tar.addfile(info)


def push_image(workdir: Path, ref: str, layers: list[bytes], arch: str,
               config: dict[str, object] | None = None) -> str:
    """Push an OCI image made of ``layers`` (uncompressed tars) to ``ref`` with skopeo.

    With one layer this is fixtures' ``image_blobs``; ``config`` replaces the
    config's ``config`` section (``{}`` for an image with no Env at all).
    """
    layout = OCILayout(workdir)
    manifest = image_blobs(layout, layers[0], arch, None)
    doc = json.loads(manifest.data)
    if len(layers) > 1 or config is not None:
        from tests.fixtures.images import Blob, _digest
        cfg_path = layout.path / "blobs" / "sha256" / doc["config"]["digest"].split(":")[1]
        cfg = json.loads(cfg_path.read_bytes())
        for extra in layers[1:]:
            blob = layout.put(Blob("application/vnd.oci.image.layer.v1.tar+gzip",
                                   gzip.compress(extra, mtime=0)))
            doc["layers"].append(blob.descriptor())
            cfg["rootfs"]["diff_ids"].append(_digest(extra))
            cfg["history"].append({"created": cfg["created"], "created_by": "test layer"})
        if config is not None:
            cfg["config"] = config
        cfg_blob = layout.put(Blob("application/vnd.oci.image.config.v1+json",
                                   json.dumps(cfg).encode()))
        doc["config"] = cfg_blob.descriptor()
        manifest = layout.put(Blob("application/vnd.oci.image.manifest.v1+json",
                                   json.dumps(doc).encode()))
    layout.tag(manifest, "img")
    run_tool(["skopeo", "copy", "--quiet", "--dest-tls-verify=false",
              f"oci:{layout.path}:img", f"docker://{ref}"])
    return ref


def copy_to_layout(ref: str, layout: Path) -> dict:
    """skopeo copy ``ref`` into an OCI layout; returns its manifest."""
    run_tool(["skopeo", "copy", "--quiet", "--src-tls-verify=false", f"docker://{ref}",
              f"oci:{layout}:image"])
    index = json.loads((layout / "index.json").read_text())
    digest = index["manifests"][0]["digest"].split(":")[1]
    return json.loads((layout / "blobs" / "sha256" / digest).read_bytes())


def layer_members(layout: Path, manifest: dict) -> list[list[str]]:
    """``tar -tzvf`` of each layer blob of ``manifest`` (member names, one list per layer)."""
    listings = []
    for layer in manifest["layers"]:
        blob = layout / "blobs" / "sha256" / layer["digest"].split(":")[1]
        out = run_tool(["tar", "-tzvf", str(blob)])
        names = []
        for line in out.splitlines():
            # "-rw-r--r-- 0/0  5 2024-01-01 00:00 path[ -> target| link to target]"
            fields = line.split(None, 5)
            name = fields[5]
            for sep in (" -> ", " link to "):
                name = name.split(sep)[0]
            names.append(name.rstrip("/"))
        listings.append(names)
    return listings


def tag_exists(ref: str) -> bool:
    """Whether skopeo can read ``ref`` from the (plain HTTP) registry."""
    proc = subprocess.run(["skopeo", "inspect", "--tls-verify=false", "--raw", f"docker://{ref}"],
                          capture_output=True)
    return proc.returncode == 0


def processes_matching(text: str) -> list[str]:
    """Command lines of live processes that contain ``text``."""
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if text in cmdline:
            found.append(f"{pid}: {cmdline}")
    return found


def raw_config(ref: str) -> dict:
    """The config blob exactly as stored (``skopeo inspect --config --raw``).

    Plain ``--config`` reparses it into the OCI schema, which has no Shell,
    Healthcheck or OnBuild (Docker's fields), so those need the raw bytes.
    """
    return json.loads(run_tool(["skopeo", "inspect", "--tls-verify=false", "--config", "--raw",
                                f"docker://{ref}"]))


__all__ = ["add_file", "add_symlink", "copy_to_layout", "layer_members", "layer_tar",
           "processes_matching", "push_image", "raw_config", "tag_exists"]
