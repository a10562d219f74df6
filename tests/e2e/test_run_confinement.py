"""RUN steps that try to leave their root or take the host, in both runner modes (issue 9).

Each attack runs as a RUN step of a real build and writes what it achieved
into the image; the build itself must succeed, and the test checks both the
step's own account and the host (or, in the CI container, the container)
for traces. With full rights kanipy runs steps isolated (pivot_root, PID and
UTS namespaces, read-only /proc/sys and /sys, Docker's capabilities, a nodev
root); in runc with Docker's default rights they are only chrooted, and
lose CAP_SYS_CHROOT.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from tests.e2e.ci_container import CIContainer
from tests.e2e.helpers import build, unpack_image, write_tree
from tests.fixtures.registry import Registry

CANARY = "kanipy-canary-3e9d"

# Leaves a chroot the classic way: chroot into a subdirectory while keeping a
# descriptor of the current root, fchdir back out, climb, chroot there. Then
# tries what an escaped step would do.
ESCAPE = """\
import json, os, sys
marker, docker_config, host_dir = sys.argv[1:4]
seen = {}
try:
    os.makedirs("/jail", exist_ok=True)
    fd = os.open("/", os.O_RDONLY)
    os.chroot("/jail")
    os.fchdir(fd)
    for _ in range(64):
        os.chdir("..")
    os.chroot(".")
    seen["chroot"] = "done"
except OSError as exc:
    seen["chroot"] = exc.strerror
seen["sees-host-dir"] = os.path.isdir(host_dir)
for name, action in (("write-marker", lambda: open(marker, "w").write("escaped")),
                     ("read-docker-config", lambda: open(docker_config).read())):
    try:
        action()
        seen[name] = "done"
    except OSError as exc:
        seen[name] = exc.strerror
# PID 1 is the step's init (isolated) or kanipy itself (in a CI container):
# attaching would give its memory, credentials included.
import ctypes
libc = ctypes.CDLL(None, use_errno=True)
PTRACE_SEIZE = 0x4206
if libc.ptrace(PTRACE_SEIZE, 1, None, None) == 0:
    seen["ptrace-pid-1"] = "attached"
else:
    seen["ptrace-pid-1"] = os.strerror(ctypes.get_errno())
print(json.dumps(seen))
"""

DOCKERFILE = """\
FROM {base}
ARG MARKER
ARG DOCKER_CONFIG_FILE
ARG HOST_DIR
COPY escape.py /escape.py
RUN mkdir /out && python3 /escape.py "$MARKER" "$DOCKER_CONFIG_FILE" "$HOST_DIR" > /out/escape
RUN (echo evil > /proc/sys/kernel/hostname && echo written || echo refused) > /out/proc-hostname
RUN cat /proc/sys/kernel/hostname > /out/hostname-after
RUN ln -s ../../../../../../../../../..$DOCKER_CONFIG_FILE /up \
    && (cat /proc/self/root/up > /dev/null 2>&1 && echo read || echo refused) > /out/proc-root \
    && rm /up
RUN (hostname evil-host 2>/dev/null && echo set || echo refused) > /out/sethostname
RUN (mount -o remount,rw /sys 2>/dev/null && echo remounted || echo refused) > /out/sys-rw
RUN (cat /proc/*/environ 2>/dev/null; env) | grep -c {canary} > /out/env || true
RUN (mknod /tmp/mem c 1 1 && (head -c 1 /tmp/mem > /dev/null 2>&1 && echo opened \\
        || echo made-not-opened) || echo refused) > /out/mknod && rm -f /tmp/mem
"""


def _context(directory: Path, base: str) -> Path:
    return write_tree(directory, {"Dockerfile": DOCKERFILE.format(base=base, canary=CANARY),
                                  "escape.py": ESCAPE})


def _outcome(rootfs: Path) -> dict[str, object]:
    out = {name: (rootfs / "out" / name).read_text().strip()
           for name in ("proc-hostname", "hostname-after", "sethostname", "sys-rw", "env",
                        "mknod", "proc-root")}
    return {**out, **json.loads((rootfs / "out" / "escape").read_text())}


def test_steps_stay_inside_with_full_rights(tmp_path: Path, registry: Registry,
                                            debian_python_base: str) -> None:
    context = _context(tmp_path / "ctx", debian_python_base)
    docker_config = tmp_path / "docker"
    docker_config.mkdir()
    (docker_config / "config.json").write_text(json.dumps({"auths": {}}))
    marker = tmp_path / "escaped"
    hostname = socket.gethostname()
    dest = registry.ref("confinement/isolated:1")
    result = build(context, "-d", dest, "--build-arg", f"MARKER={marker}",
                   "--build-arg", f"DOCKER_CONFIG_FILE={docker_config / 'config.json'}",
                   "--build-arg", f"HOST_DIR={tmp_path}",
                   env={"DOCKER_CONFIG": str(docker_config), "KANIPY_CANARY": CANARY})
    assert result.returncode == 0, result.stderr[-3000:]
    outcome = _outcome(unpack_image(dest, tmp_path / "image"))
    assert outcome == {
        "chroot": "done",  # allowed (CAP_SYS_CHROOT), but the root it reaches is the image's
        "sees-host-dir": False,
        "write-marker": "No such file or directory",
        "read-docker-config": "No such file or directory",
        "ptrace-pid-1": "Operation not permitted",
        "proc-hostname": "refused",
        "hostname-after": hostname,
        "sethostname": "refused",
        "sys-rw": "refused",
        "env": "0",
        # Made (CAP_MKNOD, as under Docker) but not opened: the root is nodev.
        "mknod": "made-not-opened",
        "proc-root": "refused",
    }
    assert not marker.exists()
    assert socket.gethostname() == hostname


@pytest.mark.usefixtures("registry")
def test_steps_stay_inside_in_a_ci_container(tmp_path: Path, registry: Registry,
                                             debian_python_base: str,
                                             ci_container: CIContainer) -> None:
    context = _context(tmp_path / "ctx", debian_python_base)
    dest = registry.ref("confinement/unprivileged:1")
    # The context is bound writable at /workspace/source: an escaped step
    # could leave its marker there, and the test would see it on the host.
    result = ci_container.build(
        context, "-d", dest, "--build-arg", "MARKER=/workspace/source/escaped",
        "--build-arg", "DOCKER_CONFIG_FILE=/kaniko/.docker/config.json",
        "--build-arg", "HOST_DIR=/workspace/source", name="confinement",
        env={"KANIPY_CANARY": CANARY})
    assert result.returncode == 0, result.stderr[-3000:]
    assert "RUN steps run unprivileged" in result.stderr
    outcome = _outcome(unpack_image(dest, tmp_path / "image"))
    assert outcome == {
        "chroot": "Operation not permitted",  # CAP_SYS_CHROOT is dropped
        "sees-host-dir": False,
        "write-marker": "No such file or directory",
        "read-docker-config": "No such file or directory",
        "ptrace-pid-1": "Operation not permitted",
        # Into the step's static copy of /proc, which goes with the step.
        "proc-hostname": "written",
        "hostname-after": socket.gethostname(),
        "sethostname": "refused",
        "sys-rw": "refused",
        "env": "0",
        # Docker's device cgroup lets a node be made, not opened (as under Kaniko).
        "mknod": "made-not-opened",
        # /proc/self/root through the live /proc of sandbox_procfs: not translated.
        "proc-root": "refused",
    }
    assert not (context / "escaped").exists()
