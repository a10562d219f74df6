"""Secret files of ``RUN --mount=type=secret`` never reach a disk outside the step's root
(issue 11), in both runner modes, attacked from outside the step.

Isolated, the file lives in a private tmpfs of the step's mount namespace, so
nothing on the host holds it, even while the step runs. Unprivileged (no
mounts possible), it sits at its target inside the step's root for the
step's duration only, mode 0400, and the step's init takes it back when the
step ends, also when the process that runs the step was killed with SIGKILL.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest

from kanipy.executor.runner import ChrootRunner, Mount, RunSpec
from tests.e2e.helpers import REPO
from tests.executor.test_runner import listing

SECRET = b"kanipy-secret-8d1f3c2a77"
MODES = [False, True]
MODE_IDS = ["isolated", "unprivileged"]


def holders(*directories: Path) -> list[str]:
    """Files under ``directories`` holding SECRET, found by another process (grep)."""
    found = subprocess.run(
        ["grep", "-rlF", "-D", "skip", SECRET.decode(), *map(str, directories)],
        capture_output=True, text=True)
    assert found.returncode in (0, 1), found.stderr
    return sorted(found.stdout.split())


@pytest.mark.parametrize("degraded", MODES, ids=MODE_IDS)
def test_a_secret_file_is_nowhere_on_the_host_while_the_step_runs(
        rootfs: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, degraded: bool) -> None:
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    before = listing(rootfs, ["", "run"])
    seen: dict[str, list[str]] = {}
    lines: list[str] = []

    def on_output(line: bytes) -> None:
        lines.append(line.decode())
        if line == b"sleeping":
            # The step has the secret open right now, and sleeps.
            seen["during"] = holders(tmp_path)

    outcome = ChrootRunner(degraded=degraded).run(RunSpec(
        rootfs, ["/bin/sh", "-c", "cat /run/secrets/tok; echo; stat -c '%a %u' "
                 "/run/secrets/tok; echo sleeping; sleep 1"],
        extra_mounts=[Mount("/run/secrets/tok", "secret", data=SECRET)]), on_output)
    assert outcome.status == 0, lines
    assert lines[:2] == [SECRET.decode(), "400 0"]
    if degraded:
        # No mounts here: only the step's own root holds it, at its target.
        assert seen["during"] == [str(rootfs / "run/secrets/tok")]
    else:
        assert seen["during"] == []
    assert holders(tmp_path) == []
    assert listing(rootfs, ["", "run"]) == before


def descendants(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            found += [int(child), *descendants(int(child))]
    return found


DRIVER = """\
import sys
from pathlib import Path
from kanipy.executor.runner import ChrootRunner, Mount, RunSpec
root, degraded, secret = sys.argv[1], sys.argv[2] == "1", sys.argv[3].encode()
def say(line):
    sys.stdout.buffer.write(line + b"\\n")
    sys.stdout.flush()
ChrootRunner(degraded=degraded).run(RunSpec(
    Path(root), ["/bin/sh", "-c", "cat /run/secrets/tok > /dev/null && echo ready-{tag}; "
                 "sleep 600"],
    extra_mounts=[Mount("/run/secrets/tok", "secret", data=secret)]), say)
"""


@pytest.mark.parametrize("degraded", MODES, ids=MODE_IDS)
def test_sigkill_mid_step_leaves_no_secret_behind(rootfs: Path, tmp_path: Path,
                                                 degraded: bool) -> None:
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    tag = f"{os.getpid()}-{int(degraded)}"
    before = listing(rootfs, ["", "run"])
    driver = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(DRIVER).replace("{tag}", tag), str(rootfs),
         "1" if degraded else "0", SECRET.decode()],
        env={**os.environ, "PYTHONPATH": str(REPO), "TMPDIR": str(scratch)},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert driver.stdout is not None
        line = driver.stdout.readline()
        assert line.strip() == f"ready-{tag}".encode(), driver.stderr.read() \
            if driver.stderr else line
        left = descendants(driver.pid)
        assert left, "no step helper under the driver"
        driver.send_signal(signal.SIGKILL)
        driver.wait(timeout=30)
        # The helper dies with the driver; the init ends the step, cleans up, exits.
        deadline = time.monotonic() + 30
        while any(Path(f"/proc/{pid}").exists() for pid in left):
            if time.monotonic() > deadline:
                raise AssertionError("the step outlived the killed driver")
            time.sleep(0.1)
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait()
    assert holders(scratch, rootfs) == []
    assert listing(rootfs, ["", "run"]) == before
