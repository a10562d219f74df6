"""The inside of a RUN step: what runs in the helper process and the step's namespaces.

``kanipy.executor.runner`` starts this module in a fresh ``python -I -S`` helper
(``_helper_main``). The helper unshares the mount and PID namespaces (plus
network when asked, UTS always), forks the init (PID 1 of the new PID
namespace), and waits. The init makes mount propagation private, pivots into
the rootfs (``sandbox_isolate``), mounts /proc, /dev, /sys, the private
resolv.conf and hosts and the extra mounts *inside the new root* (so the
image's symlinks resolve inside the root), detaches the old root, forks the
step, and when the step's main process ends kills what is left, unmounts, and
removes the mount points it created. Without mount rights it puts the same
things into the root as files instead (``sandbox_nomount``) and the step
chroots itself. It reports back over a status pipe as JSON lines:
``{"exit", "missing", "warnings", "mounted", "mode"}`` or ``{"error"}``.

Only the standard library and the helper's own modules (``sandbox_*``,
``passwdfile``) may be used here, and of the standard library only what starts
fast: every RUN step starts a fresh interpreter that imports all of this before
the step runs (issue 14). ``typing``, ``dataclasses``, ``logging``, ``tempfile``,
``shutil``, ``pathlib``, ``secrets``, ``json`` (with ``re``) and ``signal``'s enum
classes stay out of the helper's imports (tests/executor/test_runner_start.py
checks it); a module used by one rare path is imported where it is used.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import marshal
import os
import stat
import struct

from kanipy.executor.passwdfile import home_of_uid
from kanipy.executor.sandbox_caps import (
    CHROOT_ONLY_CAPS,
    DOCKER_DEFAULT_CAPS,
    limit_capabilities,
    make_undumpable,
)
from kanipy.executor.sandbox_files import Provisioner, write_secret
from kanipy.executor.sandbox_isolate import (
    MS_BIND,
    MS_NODEV,
    MS_NOEXEC,
    MS_NOSUID,
    MS_RDONLY,
    MS_REC,
    MS_REMOUNT,
    pivot_into,
    protect_proc,
)
from kanipy.executor.sandbox_nomount import DEV_LINKS, DEVICES, provide_without_mounts

try:
    # The C string quoter json.dumps uses. The json package itself is not imported:
    # its decoder imports re, enum and functools, a fifth of the helper's start.
    from _json import encode_basestring_ascii as _quote
except ImportError:  # an interpreter built without the accelerator
    from json import dumps as _quote  # type: ignore[assignment]

# typing.TYPE_CHECKING without importing typing (the helper's start-up time).
TYPE_CHECKING = False
if TYPE_CHECKING:
    import signal
    import socket
    from collections.abc import Callable
    from typing import Any, NoReturn
else:
    # The C module that signal.py re-exports: the same functions and numbers,
    # without the enum classes signal.py builds around them (enum, functools and
    # collections, a sixth of the helper's start). mypy checks against signal.
    import _signal as signal

# Docker's default PATH for Linux containers (moby oci/defaults, BuildKit's
# system.DefaultPathEnvUnix).
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

MS_PRIVATE = 0x40000
MNT_DETACH = 0x2

PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36

SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
IFF_UP = 0x1



class _Libc:
    """The few libc calls Python 3.11 lacks, raising OSError on failure."""

    def __init__(self) -> None:
        self.lib = ctypes.CDLL(None, use_errno=True)

    def _check(self, result: int, what: str) -> None:
        if result != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"{what}: {os.strerror(err)}")

    def unshare(self, flags: int) -> None:
        self._check(self.lib.unshare(ctypes.c_int(flags)), "unshare")

    def mount(self, source: str | None, target: str, fstype: str | None, flags: int,
              data: str | None = None) -> None:
        def b(s: str | None) -> bytes | None:
            return s.encode() if s is not None else None
        result = self.lib.mount(b(source), b(target), b(fstype), ctypes.c_ulong(flags), b(data))
        self._check(result, f"mount {fstype or 'bind'} on {target}")

    def umount(self, target: str) -> None:
        self._check(self.lib.umount2(target.encode(), ctypes.c_int(MNT_DETACH)),
                    f"umount {target}")

    def sethostname(self, name: str) -> None:
        raw = name.encode()
        self._check(self.lib.sethostname(raw, ctypes.c_size_t(len(raw))), "sethostname")

    def prctl(self, option: int, value: int) -> None:
        self._check(self.lib.prctl(ctypes.c_int(option), ctypes.c_ulong(value),
                                   ctypes.c_ulong(0), ctypes.c_ulong(0), ctypes.c_ulong(0)),
                    "prctl")


def _to_json(value: object) -> str:
    """JSON text for what a status message holds: str, int, bool, None, lists, dicts."""
    if isinstance(value, str):
        return _quote(value)
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(int(value))
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_to_json(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{_quote(str(k))}:{_to_json(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"a status message cannot hold {type(value).__name__}")


def _send(fd: int, message: dict[str, Any]) -> None:
    """One status line for the engine, which reads them with json.loads."""
    try:
        os.write(fd, _to_json(message).encode() + b"\n")
    except BrokenPipeError:
        pass  # the engine is gone (killed): the cleanup that follows still matters


def _helper_main(args: list[str]) -> NoReturn:
    """Entry point of the helper: unshare, fork the init, wait for it."""
    spec_fd, status_fd = int(args[0]), int(args[1])
    # Ctrl-C reaches the whole foreground process group: the engine decides
    # what an interrupt means and sends SIGTERM, which is handled below.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        # marshal, not JSON: it loads without importing anything, and only the
        # engine, which made this pipe, writes the spec.
        with os.fdopen(spec_fd, "rb") as f:
            job = marshal.loads(f.read())
        libc = _Libc()
        # If the engine dies, so does the step.
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        # A step must not read our fds (the status pipe), environment or root
        # through /proc/1 or ptrace; the init inherits this over fork.
        make_undumpable()
        isolated = _unshare(libc, job)
        init_pid = os.fork()
    except BaseException as exc:  # noqa: B036 - report anything, the engine raises it
        _send(status_fd, {"error": str(exc)})
        os._exit(1)
    if init_pid == 0:
        code = 1
        try:
            code = _init_main(libc, job, status_fd, isolated)
        except BaseException as exc:  # noqa: B036
            _send(status_fd, {"error": f"{type(exc).__name__}: {exc}"})
        os._exit(code)
    def forward_term(*_: object) -> None:
        try:
            os.kill(init_pid, signal.SIGTERM)
        except ProcessLookupError:
            pass

    signal.signal(signal.SIGTERM, forward_term)
    _, wait_status = os.waitpid(init_pid, 0)
    os._exit(_exit_code(wait_status))


def _exit_code(wait_status: int) -> int:
    code = os.waitstatus_to_exitcode(wait_status)
    return 128 - code if code < 0 else code


def _unshare(libc: _Libc, job: dict[str, Any]) -> bool:
    """Enter new namespaces; False when that is not permitted (the degraded path)."""
    if job["degraded"]:
        if job["network"] == "none":
            raise OSError(errno.EPERM, "network=none needs a network namespace")
        return False
    # A UTS namespace always, as runc gives one: a step that sets the host
    # name (or writes /proc/sys/kernel/hostname) cannot change the host's.
    flags = CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWUTS
    if job["network"] == "none":
        flags |= CLONE_NEWNET
    try:
        libc.unshare(flags)
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.EINVAL, errno.ENOSYS):
            raise
        if job["network"] == "none":
            raise OSError(exc.errno, "network=none needs a network namespace, "
                          f"which is not permitted here ({exc.strerror})") from exc
        return False
    if job["network"] == "none":
        _loopback_up()
    if job["hostname"]:
        libc.sethostname(job["hostname"])
    return True


def _loopback_up() -> None:
    # A new network namespace has only `lo`, and it is down (netdevice(7)).
    import socket  # here, not at the top: most steps have the host's network

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        request = struct.pack("16sh22x", b"lo", 0)
        flags = struct.unpack("16sh22x", fcntl.ioctl(s, SIOCGIFFLAGS, request))[1]
        fcntl.ioctl(s, SIOCSIFFLAGS, struct.pack("16sh22x", b"lo", flags | IFF_UP))


class _Scaffold:
    """The mounts of one step and the mount points created for them, inside the chroot."""

    def __init__(self, libc: _Libc) -> None:
        self.libc = libc
        self.mounted: list[str] = []
        self.created: list[str] = []
        # parent dir -> (atime_ns, mtime_ns before we touched it, mtime_ns after our last touch)
        self.parents: dict[str, tuple[int, int, int]] = {}
        self.warnings: list[str] = []

    def mount_point(self, image_path: str, directory: bool) -> str:
        """The resolved path to mount on, created (and remembered) when missing."""
        real = os.path.realpath(image_path)
        if os.path.lexists(real):
            if os.path.isdir(real) != directory:
                kind = "a directory" if directory else "not a directory"
                raise OSError(errno.ENOTDIR, f"{image_path} in the image is not {kind}")
            return real
        current = "/"
        parts = [p for p in real.split("/") if p]
        for index, part in enumerate(parts):
            path = os.path.join(current, part)
            if not os.path.lexists(path):
                before = os.stat(current)
                original = self.parents.get(current)
                if directory or index < len(parts) - 1:
                    os.mkdir(path, 0o755)
                else:
                    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
                self.created.append(path)
                after = os.stat(current).st_mtime_ns
                if original is None:
                    self.parents[current] = (before.st_atime_ns, before.st_mtime_ns, after)
                else:
                    self.parents[current] = (original[0], original[1], after)
            current = path
        return real

    def mount(self, source: str | None, target: str, fstype: str | None, flags: int,
              data: str | None = None) -> None:
        self.libc.mount(source, target, fstype, flags, data)
        self.mounted.append(target)

    def clean(self) -> None:
        """Unmount everything and remove the mount points we created, leaving no trace.

        A parent directory's times are put back as they were, unless the step
        itself changed the directory, in which case they stay as the step left
        them. (The snapshot compares a directory's mtime, not its ctime.)
        """
        step_times: dict[str, tuple[int, int] | None] = {}
        for parent, (_, _, ours) in self.parents.items():
            st = os.stat(parent)
            step_times[parent] = (
                None if st.st_mtime_ns == ours else (st.st_atime_ns, st.st_mtime_ns)
            )
        for target in reversed(self.mounted):
            try:
                self.libc.umount(target)
            except OSError as exc:
                self.warnings.append(f"could not unmount {target}: {exc}")
        for path in reversed(self.created):
            try:
                if os.path.isdir(path) and not os.path.islink(path):
                    os.rmdir(path)
                else:
                    os.unlink(path)
            except OSError as exc:
                # ENOTEMPTY: the step put files in a directory we created; they
                # are real changes and stay, with the directory.
                if exc.errno != errno.ENOTEMPTY:
                    self.warnings.append(f"could not remove mount point {path}: {exc}")
        for parent, (atime, mtime, _) in self.parents.items():
            if not os.path.isdir(parent):
                continue
            times = step_times[parent] or (atime, mtime)
            os.utime(parent, ns=times, follow_symlinks=False)


def _init_main(libc: _Libc, job: dict[str, Any], status_fd: int, isolated: bool) -> int:
    """PID 1 of the step's namespace (or a subreaper on the degraded path)."""
    # When the helper dies (kanipy was killed, even with SIGKILL, and the
    # helper with it) the init is told with SIGTERM, not killed: it ends the
    # step and then takes back what it put into the root, a secret file among
    # it, so a killed build leaves no secret behind (issue 11).
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    # SIGTERM from the helper means: end the step now (and still clean up).
    # PID 1 of a namespace gets no signal it has no handler for, so the handler
    # is installed first; it can only know the step's pid once it exists.
    step: dict[str, int] = {"pid": 0, "stop": 0}

    def on_term(*_: object) -> None:
        step["stop"] = 1
        if step["pid"]:
            _kill_rest(isolated, step["pid"])

    signal.signal(signal.SIGTERM, on_term)
    missing: list[str] = []
    scaffold = _Scaffold(libc)
    provisioner: Provisioner | None = None
    chrooted = False
    mounts_permitted = False
    if isolated:
        try:
            libc.mount(None, "/", None, MS_REC | MS_PRIVATE)
            mounts_permitted = True
        except OSError as exc:
            missing.append(f"mounting is not permitted ({exc.strerror})")
    if not mounts_permitted:
        # No mount rights (sandbox_nomount): the scaffolding is put into the
        # root for the step, the step chroots itself, and leftover processes
        # are found as our orphans (PR_SET_CHILD_SUBREAPER).
        libc.prctl(PR_SET_CHILD_SUBREAPER, 1)
        provisioner = Provisioner(job["root"])
        try:
            provide_without_mounts(provisioner, job, missing)
        except OSError as exc:
            provisioner.restore()
            _send(status_fd, {"error": str(exc), "missing": missing,
                              "warnings": provisioner.warnings})
            return 1
    else:
        sources = _open_sources(job)
        try:
            _stage_secrets(libc, job, sources)
        except OSError as exc:
            for fd in sources.values():
                os.close(fd)
            _send(status_fd, {"error": f"cannot provide a secret: {exc.strerror or exc}",
                              "missing": missing})
            return 1
        detach_old_root: Callable[[], None] | None = None
        try:
            detach_old_root = pivot_into(libc, job["root"])
        except OSError as exc:
            # Some roots cannot be pivoted from (an initramfs "/"): chroot
            # then, and say that a step holding CAP_SYS_CHROOT could leave it.
            missing.append(f"pivot_root is not possible ({exc.strerror}), so the step is "
                           "only chrooted (and cannot chroot itself)")
            job["pivoted"] = False
            os.chroot(job["root"])
            os.chdir("/")
        chrooted = True
        old_umask = os.umask(0)
        try:
            _mount_scaffolding(scaffold, job, sources, missing)
            if detach_old_root is not None:
                detach, detach_old_root = detach_old_root, None
                detach()
        except OSError as exc:
            # A mount the step asked for (RUN --mount) failed: the step
            # must not run without it.
            scaffold.clean()
            if detach_old_root is not None:
                detach_old_root()  # its directory must not stay in the image
            _send(status_fd, {"error": str(exc), "missing": missing,
                              "warnings": scaffold.warnings})
            return 1
        finally:
            os.umask(old_umask)
            for fd in sources.values():
                os.close(fd)
    mode = "isolated" if chrooted else "unprivileged"

    def finish() -> list[str]:
        if chrooted:
            scaffold.clean()
            return list(scaffold.mounted)
        assert provisioner is not None
        provisioner.restore()
        scaffold.warnings.extend(provisioner.warnings)
        return provisioner.image_paths

    if step["stop"]:
        finish()
        _send(status_fd, {"exit": 128 + signal.SIGTERM, "missing": missing,
                          "warnings": scaffold.warnings, "mode": mode})
        return 0
    # A SIGTERM between the fork and knowing the step's pid would kill
    # nothing: it waits, blocked, until the pid is known (the step unblocks it).
    signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGTERM])
    # Chrooted root steps get a live /proc/self and /dev/fd (sandbox_procfs).
    live_proc = False
    if not chrooted and job["uid"] == 0:
        # Imported here: its supervisor thread is needed by these steps only.
        from kanipy.executor import sandbox_procfs

        live_proc = sandbox_procfs.supported()
    ends = None
    if live_proc:
        import socket  # here, not at the top: the isolated mode has a real /proc

        ends = socket.socketpair()
    step_pid = os.fork()
    if step_pid == 0:
        _exec_step(job, chrooted, status_fd, ends[1] if ends else None)
    step["pid"] = step_pid
    signal.pthread_sigmask(signal.SIG_UNBLOCK, [signal.SIGTERM])
    supervisor = None
    if ends is not None:
        ends[1].close()
        listener = sandbox_procfs.receive_listener(ends[0])
        ends[0].close()
        if listener is not None:
            supervisor = sandbox_procfs.ProcSupervisor(listener)
            supervisor.start()
    code = 1
    while True:
        try:
            pid, wait_status = os.waitpid(-1, 0)
        except ChildProcessError:
            break
        if pid == step_pid:
            code = _exit_code(wait_status)
            break
    _kill_rest(isolated, step_pid)
    _reap_all(isolated)
    if supervisor is not None:
        supervisor.stop()
    provided = finish()
    _send(status_fd, {
        "exit": code,
        "missing": missing,
        "warnings": scaffold.warnings,
        "mounted": provided,
        "mode": mode,
    })
    return 0


def _open_sources(job: dict[str, Any]) -> dict[str, int]:
    """O_PATH descriptors of host files to bind, opened before the chroot hides them."""
    sources: dict[str, int] = {}
    paths = [m["source"] for m in job["mounts"] if m["type"] == "bind"]
    paths += [f"/dev/{name}" for name, _, _ in DEVICES] + ["/sys"]
    for path in paths:
        if path not in sources:
            try:
                sources[path] = os.open(path, os.O_PATH | os.O_CLOEXEC)
            except OSError:
                continue
    return sources


def _stage_secrets(libc: _Libc, job: dict[str, Any], sources: dict[str, int]) -> None:
    """Secret files in a private tmpfs of the step's mount namespace, never on disk.

    The tmpfs is mounted on the runner's empty ``secrets_dir`` before the
    pivot: only this namespace sees it (propagation is private), so the host,
    kanipy's work directory and a build killed meanwhile hold nothing. Each
    file is then bound read-only at its target like any bind; when the old root
    is detached the tmpfs is reachable only through those binds, and it goes
    with the namespace when the step ends.
    """
    secrets = [m for m in job["mounts"] if m["type"] == "secret"]
    if not secrets:
        return
    values: list[bytes] = [m["data"] for m in secrets]
    where = job["secrets_dir"]
    size = sum(len(v) + 4096 for v in values) + 4096
    libc.mount("tmpfs", where, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC,
               f"mode=0700,size={size},nr_inodes={len(values) + 16}")
    for index, (m, value) in enumerate(zip(secrets, values, strict=True)):
        path = os.path.join(where, str(index))
        write_secret(path, value, m)
        sources[path] = os.open(path, os.O_PATH | os.O_CLOEXEC)
        m["source"] = path


def _mount_scaffolding(scaffold: _Scaffold, job: dict[str, Any], sources: dict[str, int],
                       missing: list[str]) -> None:
    def attempt(what: str, action: Callable[[], None]) -> bool:
        try:
            action()
        except OSError as exc:
            missing.append(f"{what} is not provided ({exc.strerror or exc})")
            return False
        return True

    fd_path = "/proc/self/fd/{}".format

    def proc() -> None:
        target = scaffold.mount_point("/proc", True)
        scaffold.mount("proc", target, "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)

    def dev() -> None:
        target = scaffold.mount_point("/dev", True)
        # nodev, as the root is: a node a step makes (it keeps CAP_MKNOD, as
        # under Docker) cannot be opened, there being no devices cgroup to
        # stop it. The usual nodes are the host's, bound in.
        scaffold.mount("tmpfs", target, "tmpfs", MS_NOSUID | MS_NODEV, "mode=755,size=65536k")
        unbound = []
        for name, _major, _minor in DEVICES:
            node = os.path.join(target, name)
            source = sources.get(f"/dev/{name}")
            try:
                if source is None:
                    raise OSError(errno.ENOENT, f"the host has no /dev/{name}")
                os.close(os.open(node, os.O_WRONLY | os.O_CREAT, 0o666))
                scaffold.mount(fd_path(source), node, None, MS_BIND)
            except OSError as exc:
                unbound.append(f"/dev/{name} ({exc.strerror})")
        if unbound:
            missing.append(f"{', '.join(unbound)} not provided")
        os.mkdir(os.path.join(target, "pts"), 0o755)
        os.mkdir(os.path.join(target, "shm"), 0o1777)
        scaffold.mount("devpts", os.path.join(target, "pts"), "devpts",
                       MS_NOSUID | MS_NOEXEC, "newinstance,ptmxmode=0666,mode=0620")
        scaffold.mount("shm", os.path.join(target, "shm"), "tmpfs",
                       MS_NOSUID | MS_NODEV | MS_NOEXEC, "mode=1777,size=65536k")
        for name, link in DEV_LINKS:
            os.symlink(link, os.path.join(target, name))

    def sys_() -> None:
        target = scaffold.mount_point("/sys", True)
        flags = MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC
        try:
            scaffold.mount("sysfs", target, "sysfs", flags)
        except OSError:
            # sysfs may be refused outside a network namespace we own: a
            # read-only bind of the host's /sys shows the same tree.
            if "/sys" not in sources:
                raise
            scaffold.mount(fd_path(sources["/sys"]), target, None, MS_BIND)
            scaffold.libc.mount(None, target, None, MS_REMOUNT | MS_BIND | flags)

    if not attempt("/proc", proc):
        # Without /proc there is no /proc/self/fd to bind host files from.
        missing.append("/dev, /sys, /etc/resolv.conf and /etc/hosts are not provided "
                       "(they need /proc)")
        if any(m["required"] for m in job["mounts"]):
            raise OSError(errno.EPERM, "RUN --mount is not possible without /proc")
        return
    attempt("/dev", dev)
    attempt("/sys", sys_)
    null = sources.get("/dev/null")
    for failure in protect_proc(scaffold.libc, fd_path(null) if null is not None else None):
        missing.append(f"{failure} is not provided")
    for m in job["mounts"]:
        target_name = m["target"]

        def extra(m: dict[str, Any] = m) -> None:
            if m["type"] == "tmpfs":
                target = scaffold.mount_point(m["target"], True)
                scaffold.mount("tmpfs", target, "tmpfs", MS_NOSUID | MS_NODEV)
                return
            fd = sources.get(m["source"])
            if fd is None:
                raise OSError(errno.ENOENT, f"cannot open {m['source']}")
            is_dir = stat.S_ISDIR(os.stat(fd_path(fd)).st_mode)
            target = scaffold.mount_point(m["target"], is_dir)
            scaffold.mount(fd_path(fd), target, None, MS_BIND | MS_REC)
            scaffold.libc.mount(None, target, None, MS_REMOUNT | MS_BIND | MS_NODEV
                                | (MS_RDONLY if m["readonly"] else 0))

        if not m["required"]:
            attempt(target_name, extra)
            continue
        try:
            extra()
        except OSError as exc:
            raise OSError(exc.errno, f"cannot mount {m['type']} on {target_name}: "
                          f"{exc.strerror or exc}") from exc


def _kill_rest(isolated: bool, step_pid: int) -> None:
    """End every process the step left behind."""
    if isolated:
        # From PID 1 of a PID namespace, kill(-1) reaches every other process in it.
        try:
            os.kill(-1, signal.SIGKILL)
        except ProcessLookupError:
            pass
        return
    try:
        os.killpg(step_pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _reap_all(isolated: bool) -> None:
    """Wait for every remaining child; on the degraded path, sweep orphans too.

    As a subreaper we inherit every orphan of the step (PR_SET_CHILD_SUBREAPER),
    so killing our children until none is left ends all of them, also daemons
    that left the step's session.
    """
    for _ in range(1000):
        if not isolated:
            for pid in _children(os.getpid()):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        try:
            os.waitpid(-1, 0)
        except ChildProcessError:
            return


def _children(parent: int) -> list[int]:
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == parent:
            found.append(int(name))
    return found


def _exec_step(job: dict[str, Any], chrooted: bool, status_fd: int,
               procfs: socket.socket | None = None) -> NoReturn:
    """In the forked step process: enter the root, become the user, exec argv."""
    try:
        for sig in (signal.SIGPIPE, signal.SIGXFSZ, signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_SETMASK, [])
        os.setsid()
        if not chrooted:
            os.chroot(job["root"])
            os.chdir("/")
        # Docker's default capabilities; a step that is only chrooted also
        # loses CAP_SYS_CHROOT, which would let it leave the chroot.
        keep = DOCKER_DEFAULT_CAPS if chrooted else CHROOT_ONLY_CAPS
        if not job.get("pivoted", True):
            keep = keep & CHROOT_ONLY_CAPS
        limit_capabilities(keep)
        os.umask(0o022)
        env = dict(job["env"])
        uid, gid = job["uid"], job["gid"]
        env.setdefault("PATH", DEFAULT_PATH)
        if "HOME" not in env:
            try:
                with open("/etc/passwd", encoding="utf-8", errors="surrogateescape") as f:
                    env["HOME"] = home_of_uid(f.read(), uid)
            except OSError:
                env["HOME"] = "/"
        workdir = job["workdir"]
        try:
            os.makedirs(workdir, 0o755, exist_ok=True)
        except OSError as exc:
            raise OSError(exc.errno, f"cannot create working directory {workdir}: "
                          f"{exc.strerror}") from exc
        os.setgroups(job["groups"])
        os.setgid(gid)
        os.setuid(uid)
        try:
            os.chdir(workdir)
        except OSError as exc:
            raise OSError(exc.errno, f"cannot enter working directory {workdir} as uid "
                          f"{uid}: {exc.strerror}") from exc
    except BaseException as exc:  # noqa: B036
        _send(status_fd, {"error": f"{exc}"})
        os._exit(125)
    if procfs is not None:
        from kanipy.executor import sandbox_procfs  # loaded by the init already

        # Last before exec: from here on the step's opens stop for the init.
        try:
            listener: int | None = sandbox_procfs.install_filter()
        except OSError:
            listener = None  # the static /proc stays, as for non-root steps
        sandbox_procfs.send_listener(procfs, listener)
        procfs.close()
    argv = job["argv"]
    executable = _look_path(argv[0], env["PATH"])
    if executable is None:
        os.write(2, f'kanipy: exec: "{argv[0]}": executable file not found in $PATH\n'.encode())
        os._exit(127)
    os.closerange(3, 65536)
    try:
        os.execve(executable, argv, env)
    except OSError as exc:
        os.write(2, f'kanipy: exec: "{argv[0]}": {exc.strerror}\n'.encode())
        os._exit(127 if exc.errno == errno.ENOENT else 126)


def _look_path(name: str, path: str) -> str | None:
    """Find ``name`` the way Go's exec.LookPath does, which runc uses."""
    if "/" in name:
        return name
    for directory in path.split(":"):
        candidate = os.path.join(directory or ".", name)
        try:
            st = os.stat(candidate)
        except OSError:
            continue
        if stat.S_ISREG(st.st_mode) and st.st_mode & 0o111:
            return candidate
    return None
