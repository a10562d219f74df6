"""SIGTERM and SIGINT stop a build within seconds while a registry stalls anywhere, not only
in a blob download (issue 11): a trickled manifest, a trickled push-permission check, an
upload the registry takes a byte at a time. The default low-speed limit (1 KB in 60 s) is
far away in each case, so only the signal can end the build here."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.helpers import REPO, write_tree
from tests.e2e.test_signals import IDS, SIGNALS, _stop_and_check, _wait_for
from tests.fixtures.images import BaseImages
from tests.registry.servers import FaultProxy
from tests.tools import require_root


@pytest.fixture
def stall_proxy(fault_proxy: FaultProxy) -> FaultProxy:
    """The shared per-test fault proxy (tests/conftest.py) under this module's name."""
    return fault_proxy


def _start(context: Path, workdir: Path, *args: str) -> subprocess.Popen[bytes]:
    require_root()
    workdir.mkdir(exist_ok=True)
    return subprocess.Popen(
        [sys.executable, "-m", "kanipy", "build", "-c", str(context), "--kanipy-dir",
         str(workdir), *args],
        env={**os.environ, "PYTHONPATH": str(REPO), "TMPDIR": str(workdir)},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _via(fault_proxy: FaultProxy, image: str) -> str:
    return image.replace(fault_proxy.upstream.split("://", 1)[1], fault_proxy.host)


# (method, path, fault, what the build is doing when the signal comes)
STALLS = [
    ("GET", "/manifests/", "trickle-headers", "base-manifest"),
    ("POST", "/blobs/uploads/", "trickle-headers", "push-check"),
    ("PUT", "digest=", "trickle-read", "upload"),
]


@pytest.mark.parametrize(("method", "path", "kind", "doing"), STALLS,
                         ids=[s[3] for s in STALLS])
@pytest.mark.parametrize(("signum", "code", "word"), SIGNALS, ids=IDS)
def test_a_signal_stops_a_build_held_by_a_stalled_registry(
        tmp_path: Path, stall_proxy: FaultProxy, base_images: BaseImages, method: str, path: str,
        kind: str, doing: str, signum: int, code: int, word: str) -> None:
    proxy = stall_proxy
    base = _via(proxy, base_images.oci) if doing == "base-manifest" else base_images.oci
    context = write_tree(tmp_path / "ctx", {
        "Dockerfile": f"FROM {base}\nRUN echo {doing} > /built\n"})
    destination = f"{proxy.host}/stalls/{doing}:1"
    args = ["--no-push"] if doing == "base-manifest" else ["-d", destination]
    if doing == "upload":
        args.append("--skip-push-permission-check")
    # A byte every 10 s (or read every 10 s): the low-speed limit is minutes away.
    proxy.inject(method, path, kind, times=100, retry_after=100)
    workdir = tmp_path / "work"
    proc = _start(context, workdir, *args)
    _wait_for(lambda: any(m == method and kind == k for m, _, k in proxy.injected), proc,
              f"the stalled {method}")
    _stop_and_check(proc, signum, code, word, workdir)
    assert proxy.count("PUT", "/manifests/") == 0
