"""SIGTERM and SIGINT stop a build within seconds whatever it is doing, and leave nothing
behind (issue 11): no work directory, no processes, exit 143 "terminated" or 130
"interrupted". A pull from a registry that trickles a byte at a time used to hold the
process until SIGKILL, waiting on a download thread."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.e2e.build_support import processes_matching
from tests.e2e.helpers import REPO, write_tree
from tests.fixtures.images import BaseImages
from tests.registry.servers import FaultProxy
from tests.tools import require_root

SIGNALS = [(signal.SIGTERM, 143, "terminated"), (signal.SIGINT, 130, "interrupted")]
IDS = ["SIGTERM", "SIGINT"]


@pytest.fixture
def proxy(fault_proxy: FaultProxy) -> FaultProxy:
    """The shared per-test fault proxy (tests/conftest.py) under this module's name."""
    return fault_proxy


def _start(context: Path, workdir: Path, *, via_tmpdir: bool = False
           ) -> subprocess.Popen[bytes]:
    """kanipy building ``context``, its work directory ``--kanipy-dir workdir``, or with
    ``via_tmpdir`` one it makes itself under ``TMPDIR=workdir``."""
    require_root()
    workdir.mkdir(exist_ok=True)
    where = [] if via_tmpdir else ["--kanipy-dir", str(workdir)]
    return subprocess.Popen(
        [sys.executable, "-m", "kanipy", "build", "-c", str(context), "--no-push", *where],
        env={**os.environ, "PYTHONPATH": str(REPO), "TMPDIR": str(workdir)},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _wait_for(condition: Callable[[], bool], proc: subprocess.Popen[bytes],
              what: str) -> None:
    deadline = time.monotonic() + 60
    while not condition():
        if proc.poll() is not None:
            raise AssertionError(f"kanipy ended before {what}: "
                                 f"{proc.stderr.read().decode() if proc.stderr else ''}")
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"never saw {what}")
        time.sleep(0.1)


def _stop_and_check(proc: subprocess.Popen[bytes], signum: int, code: int, word: str,
                    workdir: Path, timeout: float = 20) -> str:
    proc.send_signal(signum)
    try:
        _, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise AssertionError(f"kanipy still running {timeout:g} s after signal {signum}") \
            from None
    stderr = err.decode(errors="replace")
    assert proc.returncode == code, stderr
    assert f"kanipy: {word}" in stderr, stderr
    assert "Traceback" not in stderr
    left = [p.name for p in workdir.iterdir() if p.name != "run-cache"]
    assert left == [], f"left in the work directory: {left}"
    return stderr


@pytest.mark.parametrize(("signum", "code", "word"), SIGNALS, ids=IDS)
def test_signal_stops_a_stalled_pull(tmp_path: Path, proxy: FaultProxy,
                                     base_images: BaseImages, signum: int, code: int,
                                     word: str) -> None:
    base = base_images.oci.replace(proxy.upstream.split("://", 1)[1], proxy.host)
    # A byte every 10 s: far under any timeout but the low-speed one (60 s).
    proxy.inject("GET", "/blobs/", "trickle", times=100, retry_after=100)
    context = write_tree(tmp_path / "ctx", {"Dockerfile": f"FROM {base}\n"})
    workdir = tmp_path / "work"
    proc = _start(context, workdir)
    _wait_for(lambda: any(kind == "trickle" for _, _, kind in proxy.injected), proc,
              "the pull start")
    time.sleep(0.5)  # the main thread now waits on the download threads
    _stop_and_check(proc, signum, code, word, workdir)


@pytest.mark.parametrize(("signum", "code", "word"), SIGNALS, ids=IDS)
def test_signal_stops_a_running_step(tmp_path: Path, base_images: BaseImages, signum: int,
                                     code: int, word: str) -> None:
    marker = f"sleep {900 + signum}7"
    context = write_tree(tmp_path / "ctx", {
        "Dockerfile": f"FROM {base_images.oci}\nRUN {marker}\n"})
    workdir = tmp_path / "work"
    proc = _start(context, workdir, via_tmpdir=True)
    _wait_for(lambda: any(marker in p and "kanipy" not in p
                          for p in processes_matching(marker)), proc, "the step start")
    _stop_and_check(proc, signum, code, word, workdir)
    deadline = time.monotonic() + 10
    while processes_matching(marker) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert processes_matching(marker) == [], "the step's process outlived the build"
