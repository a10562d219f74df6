"""A secret given to ``RUN --mount=type=secret`` is on no disk outside the step's root, and
a build killed with SIGKILL mid-step leaves it nowhere (issue 11).

kanipy runs here as a user would, with the secret in its environment (so the
only copies are the ones kanipy makes); a second process (grep) searches
kanipy's work directory under ``$TMPDIR`` while the step holds the secret,
and again after kanipy was killed. The unprivileged mode is attacked the same
way inside a CI container (runc, Docker's default rights), the attack run there.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.e2e.build_support import processes_matching
from tests.e2e.ci_container import CIContainer
from tests.e2e.helpers import REPO, write_tree
from tests.fixtures.images import BaseImages
from tests.fixtures.runc import Bind, RuncStep, container_name, run_step
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
        "RUN --mount=type=secret,id=tok,mode=0444 test -s /run/secrets/tok && "
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


# Run inside the CI container (no mount rights): kanipy in the background, then
# from a second process a search of its work directory while the step holds the
# secret, SIGKILL of kanipy, and a search again once the step's helpers are gone.
ATTACK = """\
export TMPDIR=/tmp/work
mkdir -p "$TMPDIR"
python3 -m kanipy build --context /workspace/source --no-push --secret id=tok,env=TOK \
    > /tmp/kanipy.log 2>&1 &
kanipy=$!
step_running() { grep -qs "sleep 91""37" /proc/[0-9]*/cmdline; }
for _ in $(seq 1 1200); do step_running && break; sleep 0.1; done
step_running || { echo NOSTEP; cat /tmp/kanipy.log; exit 1; }
echo "DURING $(grep -rlF -D skip "$TOK" "$TMPDIR" | tr '\\n' ' ')"
for f in $(grep -rlF -D skip "$TOK" "$TMPDIR"); do echo "FILE $(stat -c '%a %u' "$f")"; done
for d in "$TMPDIR"/kanipy-* "$TMPDIR"/kanipy-*/build-*; do echo "DIR $(stat -c '%a' "$d")"; done
kill -9 "$kanipy"
for _ in $(seq 1 300); do
    step_running || grep -qs "runner_""init" /proc/[0-9]*/cmdline || break
    sleep 0.1
done
echo "AFTER $(grep -rlF -D skip "$TOK" "$TMPDIR" | tr '\\n' ' ')"
"""


def test_sigkill_mid_step_in_a_ci_container_leaves_no_secret(
        tmp_path: Path, debian_python_base: str, ci_container: CIContainer) -> None:
    context = write_tree(tmp_path / "ctx", {"Dockerfile": (
        f"FROM {debian_python_base}\n"
        f"RUN --mount=type=secret,id=tok test -s /run/secrets/tok && sleep 9137\n")})
    step = RuncStep(args=["sh", "-c", ATTACK], env={"TOK": SECRET},
                    binds=[Bind(context, "/workspace/source")], cwd="/workspace/source")
    result = run_step(ci_container.scratch / "bundle-secret-kill", ci_container.rootfs, step,
                      name=container_name("secret-kill"))
    lines = result.stdout.splitlines()
    assert any(line.startswith("AFTER") for line in lines), result.stdout + result.stderr
    during = next(line for line in lines if line.startswith("DURING")).split()[1:]
    # No mounts here: the step's root holds the secret at its target, and only there,
    # mode 0400 and root's, inside 0700 directories.
    assert len(during) == 1 and during[0].endswith("/run/secrets/tok"), during
    assert [line for line in lines if line.startswith("FILE")] == ["FILE 400 0"]
    assert {line for line in lines if line.startswith("DIR")} == {"DIR 700"}
    assert next(line for line in lines if line.startswith("AFTER")).split()[1:] == []
