"""A secret given to ``RUN --mount=type=secret`` is on no disk outside the step's root, and
a build killed with SIGKILL mid-step leaves it nowhere (issue 11).

kanipy runs here as a user would, with the secret in its environment (so the
only copies are the ones kanipy makes); a second process (grep) searches
kanipy's work directory under ``$TMPDIR`` while the step holds the secret,
and again after kanipy was killed. The unprivileged mode is attacked the same
way at the runner's level in tests/executor/test_runner_secrets.py.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.e2e.build_support import processes_matching
from tests.e2e.helpers import REPO, write_tree
from tests.fixtures.images import BaseImages
from tests.tools import require_root

SECRET = "kanipy-e2e-secret-5b0e9a41"


def holders(directory: Path) -> list[str]:
    found = subprocess.run(["grep", "-rlF", "-D", "skip", SECRET, str(directory)],
                           capture_output=True, text=True)
    assert found.returncode in (0, 1), found.stderr
    return sorted(found.stdout.split())


def test_sigkill_mid_step_leaves_no_secret_under_tmpdir(tmp_path: Path,
                                                      base_images: BaseImages) -> None:
    require_root()
    marker = "sleep 9137"
    context = write_tree(tmp_path / "ctx", {"Dockerfile": (
        f"FROM {base_images.oci}\n"
        f"RUN --mount=type=secret,id=tok,mode=0444 grep -q {SECRET} /run/secrets/tok && "
        f"{marker}\n")})
    workdir = tmp_path / "tmp"
    workdir.mkdir()
    proc = subprocess.Popen(
        [sys.executable, "-m", "kanipy", "build", "-c", str(context), "--no-push",
         "--secret", "id=tok,env=TOK"],
        env={**os.environ, "PYTHONPATH": str(REPO), "TMPDIR": str(workdir), "TOK": SECRET},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while not any("kanipy" not in p for p in processes_matching(marker)):
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise AssertionError(f"the step never started: {proc.communicate()[1]!r}")
            time.sleep(0.1)
        # The step has read the secret and sleeps: nothing under $TMPDIR holds it.
        assert holders(workdir) == []
        builds = list(workdir.glob("kanipy-*/build-*"))
        assert builds and all(b.stat().st_mode & 0o777 == 0o700 for b in builds)
        assert all(b.parent.stat().st_mode & 0o777 == 0o700 for b in builds)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        deadline = time.monotonic() + 30
        while any("kanipy" not in p for p in processes_matching(marker)):
            assert time.monotonic() < deadline, "the step outlived kanipy"
            time.sleep(0.1)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert holders(workdir) == []
