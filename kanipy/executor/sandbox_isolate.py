"""Where namespaces are allowed: confine a RUN step the way runc and BuildKit do.

Called by the step's init (``kanipy.executor.runner_init``) inside its fresh
mount namespace, after mount propagation was made private:

- ``pivot_into``: ``pivot_root`` into the rootfs and detach the old root, so
  no path, ``..`` or second ``chroot`` leads back to the host's ``/`` (a bare
  chroot is left with ``chroot x; cd ../..; chroot .``). The old root waits
  in a temporary directory until the step's bind mounts are made from it,
  and is detached (lazily unmounted) before the step starts.
- ``protect_proc``: ``/proc/sys``, ``/proc/sysrq-trigger``, ``/proc/irq``,
  ``/proc/bus`` and ``/proc/fs`` read-only, and the paths Docker masks
  (``/proc/kcore``, ``/proc/keys``, timer and scheduler debug files, ...)
  hidden under ``/dev/null`` or an empty read-only tmpfs (moby oci/defaults.go).

Only the standard library may be used here: this runs in the step helper.
"""

from __future__ import annotations

import ctypes
import os

# typing.TYPE_CHECKING without importing typing: the helper's start-up time
# (runner_init's docstring).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Protocol

    class MountCalls(Protocol):
        def mount(self, source: str | None, target: str, fstype: str | None, flags: int,
                  data: str | None = None) -> None: ...

        def umount(self, target: str) -> None: ...

MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_REMOUNT = 0x20
MS_BIND = 0x1000
MS_REC = 0x4000

# pivot_root has no glibc wrapper: syscall numbers (asm/unistd.h).
SYS_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41, "ppc64le": 203, "s390x": 217,
                  "riscv64": 41}

# moby oci/defaults.go (DefaultLinuxSpec): Docker's and BuildKit's lists.
MASKED_PATHS = (
    "/proc/asound", "/proc/acpi", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
    "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi",
    "/sys/firmware", "/sys/devices/virtual/powercap",
)
READONLY_PATHS = ("/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger")


def pivot_into(libc: MountCalls, root: str) -> Callable[[], None]:
    """Make ``root`` this mount namespace's ``/``; returns what detaches the old root.

    The old root stays reachable under a randomly named directory of the new
    root until the returned function is called: bind mounts of host files
    (resolv.conf, hosts, ``RUN --mount`` sources) must be made from it first,
    as the kernel refuses to bind from a detached tree. The function unmounts
    it, removes the directory and puts the root directory's times back, all
    before the step starts.
    """
    number = SYS_PIVOT_ROOT.get(os.uname().machine)
    if number is None:
        raise OSError(38, f"pivot_root: unknown syscall number on {os.uname().machine}")
    # pivot_root needs the new root to be a mount point. nodev: a device
    # node a step makes there cannot be opened (no devices cgroup here).
    libc.mount(root, root, None, MS_BIND | MS_REC)
    libc.mount(None, root, None, MS_REMOUNT | MS_BIND | MS_NODEV)
    os.chdir(root)
    before = os.stat(".")
    put_old = f".kanipy-old-root-{os.urandom(8).hex()}"
    os.mkdir(put_old, 0o700)

    def restore_times() -> None:
        os.utime("/" if os.path.samefile("/", ".") else ".",
                 ns=(before.st_atime_ns, before.st_mtime_ns))

    lib = ctypes.CDLL(None, use_errno=True)
    if lib.syscall(ctypes.c_long(number), b".", put_old.encode()) != 0:
        err = ctypes.get_errno()
        os.rmdir(put_old)
        restore_times()
        raise OSError(err, f"pivot_root: {os.strerror(err)}")
    os.chdir("/")

    def detach_old_root() -> None:
        libc.umount("/" + put_old)
        os.rmdir("/" + put_old)
        restore_times()

    return detach_old_root


def protect_proc(libc: MountCalls, null_source: str | None) -> list[str]:
    """Make the kernel's tunables read-only and mask what Docker masks; what failed.

    ``null_source`` is a path to bind over masked files (``/proc/self/fd/N``
    of the host's /dev/null); without it masked files are left as they are.
    """
    failed: list[str] = []
    for path in READONLY_PATHS:
        if not os.path.lexists(path):
            continue
        try:
            libc.mount(path, path, None, MS_BIND | MS_REC)
            libc.mount(None, path, None,
                       MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC)
        except OSError as exc:
            failed.append(f"{path} read-only ({exc.strerror})")
    for path in MASKED_PATHS:
        if not os.path.lexists(path):
            continue
        try:
            if os.path.isdir(path):
                libc.mount("tmpfs", path, "tmpfs", MS_RDONLY, "size=0")
            elif null_source is not None:
                libc.mount(null_source, path, None, MS_BIND)
        except OSError as exc:
            failed.append(f"{path} masked ({exc.strerror})")
    return failed
