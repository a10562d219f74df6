"""Running one RUN step inside a rootfs directory (docs/architecture.md, decision 2).

``ChrootRunner`` runs the step pivoted into the rootfs, in fresh mount, PID and
UTS namespaces, with ``/proc``, a minimal ``/dev``, a read-only ``/sys`` and
private copies of the host's ``/etc/resolv.conf``, ``/etc/hosts`` and its
host name as ``/etc/hostname`` mounted for the duration of the step only.

How, and why this way:

- Python 3.11 has no ``os.unshare`` or ``os.mount``, so libc's ``unshare``,
  ``mount``, ``umount2``, ``sethostname`` and ``prctl`` are called through
  ctypes. util-linux's ``unshare`` binary would cover the namespaces but not the
  mounts, their error reporting, or the cleanup inside the root, and would add a
  tool whose flags vary by version.
- The work happens in a fresh helper process (``python -I -S`` running
  ``kanipy.executor.runner_init``), never in the engine itself: the engine may
  have threads (a thread cannot ``unshare`` a mount namespace it shares with
  others, and ``fork`` with threads is unsafe), and its namespaces must stay
  untouched. The helper unshares, forks a child that
  is PID 1 of the new PID namespace (the "init"); the init makes mount
  propagation private (so nothing it mounts is seen by the host, and nothing
  needs unmounting on the host), chroots, mounts the scaffolding *inside* the
  chroot (so the image's own symlinks resolve inside the root and never reach
  the host), then forks the step. When the step's main process exits the init
  kills whatever is left (``kill(-1, SIGKILL)`` from PID 1 of the namespace),
  unmounts, removes the mount points it had to create, restores their parent
  directories' times, and exits; the kernel tears the namespaces down with it.
  So ``RUN daemon &`` neither hangs the build nor outlives the step.
- Where namespaces or mounts are not permitted (uid 0 with Docker's default
  capabilities, where Kaniko runs) the step is chrooted and its scaffolding
  and ``RUN --mount`` contents are put into the root and taken out after it
  (``sandbox_nomount``); leftover processes are then found through
  ``PR_SET_CHILD_SUBREAPER`` and killed. The first step finds the mode, later
  steps go straight to it, and one info line names it.
- Isolation where namespaces are allowed (``sandbox_isolate``, ``sandbox_caps``):
  pivot_root with the old root detached, a UTS namespace, read-only kernel
  tunables and Docker's masked paths, Docker's default capabilities.

Docker's rules followed: PATH defaults to Docker's default, HOME to the uid's
home in the image's /etc/passwd (else ``/``), argv[0] is looked up in PATH
inside the root (a missing command exits 127 naming it, as runc reports it), a
missing WORKDIR is created by root with mode 0755 (as runc creates the cwd),
the umask is 0022, stdin is /dev/null, stdout and stderr are merged.
"""

from __future__ import annotations

import json
import logging
import marshal
import os
import select
import signal
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Literal, Protocol

from kanipy.errors import BuildError
from kanipy.executor.sandbox_caps import make_undumpable
from kanipy.fieldwise import Fieldwise
from kanipy.oci.config import DEFAULT_PATH  # runner_init's too; only the step helper loads that

log = logging.getLogger(__name__)

__all__ = ["DEFAULT_PATH", "SCAFFOLDING", "ChrootRunner", "Mount", "RunOutcome", "RunSpec",
           "Runner", "env_items"]

Network = Literal["default", "none", "host"]
MountType = Literal["bind", "tmpfs", "secret"]
OnOutput = Callable[[bytes], None]

# The image paths the runner provides during every step (issue 4, RUN). The
# mounting itself is in runner_init.
SCAFFOLDING = ("/proc", "/dev", "/sys", "/etc/resolv.conf", "/etc/hosts", "/etc/hostname")

# How each step's helper interpreter starts: isolated from the environment and
# without site-packages (it needs only kanipy's own helper modules, found
# through argv[1]); what it imports is kept small, as every RUN step pays for
# it before the step starts (runner_init's docstring).
HELPER_FLAGS = ("-I", "-S")
HELPER_IMPORT = ("import sys; sys.path.insert(0, sys.argv[1]); "
                 "from kanipy.executor.runner_init import _helper_main")
HELPER_BOOT = HELPER_IMPORT + "; _helper_main(sys.argv[2:])"

MODE_LINES = {
    "isolated": "RUN steps run isolated: mount, PID and UTS namespaces, pivot_root into "
                "the root, Docker's default capabilities",
    "unprivileged": "RUN steps run unprivileged (no mount rights here): chrooted, with "
                    "/dev, a static /proc (live /proc/self and /dev/fd opens for root steps), "
                    "DNS files and RUN --mount contents put into the root for each step and "
                    "taken out after it",
}

# A line longer than this is handed on in pieces rather than buffered forever.
MAX_LINE = 64 * 1024


@dataclass(frozen=True, repr=False, eq=False)
class Mount(Fieldwise):
    """An extra mount for a step (``RUN --mount``): a host path, a tmpfs, or a secret at
    an image path.

    A ``secret`` carries its bytes in ``data`` (never a host file) with the owner
    and mode of the file the step sees; it reaches the step's helper through the
    spec pipe and is read-only for the step.
    """

    target: str
    type: MountType = "bind"
    source: Path | None = None
    readonly: bool = False
    data: bytes | None = field(default=None, repr=False)
    uid: int = 0
    gid: int = 0
    mode: int = 0o400


@dataclass(frozen=True, repr=False, eq=False)
class RunSpec(Fieldwise):
    """Everything a runner needs to execute one RUN step.

    ``argv`` is final: the engine has already put a shell-form command behind
    the stage's SHELL. ``env`` is exactly the step's environment (image Env
    plus ARGs in scope), as a mapping or a list of ``KEY=value``; PATH and HOME
    are filled in only when absent. ``workdir`` is an image path.
    """

    root: Path
    argv: Sequence[str]
    env: Mapping[str, str] | Sequence[str] = field(default_factory=dict)
    uid: int = 0
    gid: int = 0
    groups: Sequence[int] = ()
    workdir: str = "/"
    hostname: str | None = None
    network: Network = "default"
    extra_mounts: Sequence[Mount] = ()


@dataclass(frozen=True, repr=False, eq=False)
class RunOutcome(Fieldwise):
    """How a step ended: its exit status (128+N for signal N) and ``excluded``, the
    image paths the runner provided for the step (mount points, and in the
    unprivileged mode the files it placed in the root), which a snapshot must not
    capture."""

    status: int
    excluded: frozenset[PurePosixPath] = frozenset()


class Runner(Protocol):
    """Executes RUN steps."""

    def run(self, spec: RunSpec, on_output: OnOutput) -> RunOutcome:
        """Run the step; stream its merged output line by line (without the
        newline) to ``on_output``; say how it ended."""
        ...


def env_items(env: Mapping[str, str] | Sequence[str]) -> list[tuple[str, str]]:
    """The environment as ordered pairs; in a ``KEY=value`` list the last KEY wins."""
    if isinstance(env, Mapping):
        return list(env.items())
    merged: dict[str, str] = {}
    for item in env:
        key, _, value = item.partition("=")
        merged[key] = value
    return list(merged.items())


class ChrootRunner:
    """The default runner: chroot plus mount, PID (and optionally net, UTS) namespaces.

    ``degraded=True`` forces the path taken where namespaces and mounts are not
    permitted (chroot only, one warning), so it can be exercised anywhere.
    ``resolv_conf`` and ``hosts`` are the host files whose private copies a step
    sees.
    """

    def __init__(
        self,
        *,
        degraded: bool = False,
        resolv_conf: Path = Path("/etc/resolv.conf"),
        hosts: Path = Path("/etc/hosts"),
        python: str = sys.executable,
    ) -> None:
        self.degraded = degraded
        self.resolv_conf = resolv_conf
        self.hosts = hosts
        self.python = python
        self.mode: str | None = None
        self._warned: set[str] = set()
        # Stages built at the same time run steps at once (--jobs): the helpers
        # under way, so that ``stop`` can end them; the mode is detected once.
        self._lock = threading.Lock()
        self._helpers: set[subprocess.Popen[bytes]] = set()
        self._stopped = False

    def stop(self) -> None:
        """End every step under way, as a signal does (SIGTERM to its helper, which ends
        the step and cleans up), and refuse new ones: the build is stopping."""
        with self._lock:
            self._stopped = True
            helpers = list(self._helpers)
        for proc in helpers:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)

    def run(self, spec: RunSpec, on_output: OnOutput) -> RunOutcome:
        _validate(spec)
        # Beside the root, in the build's own 0700 directory rather than $TMPDIR:
        # a build killed with SIGKILL leaves it where the next build's sweep of
        # killed builds' directories removes it (executor/workdirs.py).
        with tempfile.TemporaryDirectory(prefix="kanipy-run-",
                                         dir=Path(spec.root).parent) as tmp:
            job = Path(tmp)
            (job / "resolv.conf").write_bytes(_read_or(self.resolv_conf, b""))
            hosts = _read_or(self.hosts, b"127.0.0.1\tlocalhost\n::1\tlocalhost\n")
            if spec.hostname:
                hosts += f"127.0.0.1\t{spec.hostname}\n".encode()
            (job / "hosts").write_bytes(hosts)
            (job / "hostname").write_text(f"{spec.hostname or socket.gethostname()}\n")
            # Stays empty on disk: in the isolated mode the init mounts the step's
            # private tmpfs for secret files on it, inside its own mount namespace.
            (job / "secrets").mkdir(mode=0o700)
            # The spec (the step's environment and its secrets, env= and file
            # alike) goes to the helper through a pipe: never to a file a killed
            # build would leave behind (issue 11).
            # marshal: the helper loads it without importing json (its start-up time).
            status = self._spawn(marshal.dumps(self._job(spec, job)), on_output)
        return self._conclude(status)

    def _job(self, spec: RunSpec, job: Path) -> dict[str, Any]:
        binds: list[dict[str, Any]] = [
            {"target": "/etc/resolv.conf", "type": "bind", "source": str(job / "resolv.conf"),
             "readonly": False, "required": False},
            {"target": "/etc/hosts", "type": "bind", "source": str(job / "hosts"),
             "readonly": False, "required": False},
            {"target": "/etc/hostname", "type": "bind", "source": str(job / "hostname"),
             "readonly": False, "required": False},
        ]
        for m in spec.extra_mounts:
            entry: dict[str, Any] = {"target": m.target, "type": m.type,
                                     "source": str(m.source) if m.source else None,
                                     "readonly": m.readonly, "required": True}
            if m.type == "secret":
                entry.update(data=m.data or b"",
                             uid=m.uid, gid=m.gid, mode=m.mode, readonly=True)
            binds.append(entry)
        return {
            "root": str(spec.root),
            "argv": list(spec.argv),
            "env": env_items(spec.env),
            "uid": spec.uid,
            "gid": spec.gid,
            "groups": list(spec.groups),
            "workdir": spec.workdir,
            "hostname": spec.hostname,
            "network": spec.network,
            "degraded": self.degraded,
            "mounts": binds,
            "secrets_dir": str(job / "secrets"),
        }

    def _spawn(self, spec: bytes, on_output: OnOutput) -> dict[str, Any]:
        package_parent = str(Path(__file__).resolve().parent.parent.parent)
        status_r, status_w = os.pipe()
        out_r, out_w = os.pipe()
        spec_r, spec_w = os.pipe()
        try:
            with self._lock:
                if self._stopped:
                    raise BuildError("RUN not started: the build is stopping")
            proc = subprocess.Popen(
                [self.python, *HELPER_FLAGS, "-c", HELPER_BOOT, package_parent, str(spec_r),
                 str(status_w)],
                stdin=subprocess.DEVNULL, stdout=out_w, stderr=out_w,
                pass_fds=(status_w, spec_r), close_fds=True,
                # Nothing of kanipy's environment (DOCKER_CONFIG, tokens) reaches
                # the helper, whose environment a step might read.
                env={"PATH": DEFAULT_PATH},
            )
        except BaseException:
            os.close(spec_w)
            raise
        finally:
            os.close(out_w)
            os.close(status_w)
            os.close(spec_r)
        with self._lock:
            self._helpers.add(proc)
            if self._stopped:  # stopped while it started
                proc.send_signal(signal.SIGTERM)
        try:
            # The helper reads the whole spec before anything else, so a spec
            # larger than the pipe's buffer cannot block here for long.
            _write_all(spec_w, spec)
            _pump_lines(out_r, proc, on_output)
            proc.wait()
        except BaseException:
            # Interrupted (or on_output raised): the helper forwards SIGTERM to
            # the init, which kills the step and cleans its mount points up.
            _stop(proc)
            raise
        finally:
            with self._lock:
                self._helpers.discard(proc)
            os.close(out_r)
            with os.fdopen(status_r, "rb") as f:
                raw = f.read()
        return _parse_status(raw, proc.returncode)

    def _conclude(self, status: dict[str, Any]) -> RunOutcome:
        mode = status.get("mode")
        with self._lock:
            first = bool(mode) and self.mode is None
            if first:
                self.mode = mode
        if mode and first:
            # Detected once per build: later steps go straight to this mode.
            self.degraded = self.degraded or mode == "unprivileged"
            if mode == "unprivileged":
                # No PID namespace hides kanipy from the steps: a root step
                # could ptrace it (and read credentials) unless it is not dumpable.
                make_undumpable()
            log.info("%s", MODE_LINES[mode])
        missing = status.get("missing", [])
        if missing:
            message = "RUN steps run without: " + "; ".join(missing)
            with self._lock:
                new = message not in self._warned
                self._warned.add(message)
            if new:
                log.warning("%s", message)
        for warning in status.get("warnings", []):
            log.warning("%s", warning)
        if "error" in status:
            raise BuildError(f"RUN could not be started: {status['error']}")
        code = status.get("exit")
        if not isinstance(code, int):
            raise BuildError("RUN could not be started: the step helper ended without a status")
        return RunOutcome(code, frozenset(PurePosixPath(p) for p in status.get("mounted", [])))


def _validate(spec: RunSpec) -> None:
    if not spec.argv:
        raise BuildError("RUN has no command")
    if not spec.root.is_dir():
        raise BuildError(f"RUN root {spec.root} is not a directory")
    if spec.network not in ("default", "none", "host"):
        raise BuildError(f"unknown RUN network mode {spec.network!r}")
    if not spec.workdir.startswith("/"):
        raise BuildError(f"RUN working directory {spec.workdir!r} is not absolute")
    for m in spec.extra_mounts:
        if not m.target.startswith("/"):
            raise BuildError(f"mount target {m.target!r} is not absolute")
        if m.type == "bind" and (m.source is None or not m.source.exists()):
            raise BuildError(f"mount source {m.source} does not exist")
        if m.type == "secret" and m.data is None:
            raise BuildError(f"secret mount on {m.target} has no value")


def _write_all(fd: int, data: bytes) -> None:
    """Write ``data`` to the pipe ``fd`` and close it; a reader that died first is
    not an error here (the helper's status says why it died)."""
    view = memoryview(data)
    try:
        while view:
            view = view[os.write(fd, view):]
    except BrokenPipeError:
        pass
    finally:
        os.close(fd)


def _read_or(path: Path, default: bytes) -> bytes:
    try:
        return path.read_bytes()
    except OSError:
        return default


def _pump_lines(fd: int, proc: subprocess.Popen[bytes], on_output: OnOutput) -> None:
    """Hand output to ``on_output`` line by line as it arrives, until EOF.

    Once the helper has exited every process of the step is gone, so only
    what is already in the pipe is left to read: a writer that somehow
    survived (never expected) cannot hang the build.
    """
    pending = b""
    exited = False
    while True:
        ready, _, _ = select.select([fd], [], [], 0.2 if exited else 1.0)
        if not ready:
            if exited:
                break
            exited = proc.poll() is not None
            continue
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        pending += chunk
        *lines, pending = pending.split(b"\n")
        for line in lines:
            on_output(line)
        while len(pending) >= MAX_LINE:
            on_output(pending[:MAX_LINE])
            pending = pending[MAX_LINE:]
    if pending:
        on_output(pending)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _parse_status(raw: bytes, helper_code: int | None) -> dict[str, Any]:
    status: dict[str, Any] = {}
    for line in raw.splitlines():
        try:
            message = json.loads(line)
        except ValueError:
            continue
        if isinstance(message, dict):
            status.update(message)
    if "exit" not in status and "error" not in status:
        status["error"] = f"the step helper exited with status {helper_code}"
    return status
