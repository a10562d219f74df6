"""The capabilities a RUN step keeps: Docker's default set, as BuildKit gives a RUN.

Called in the step process just before it becomes the step's user and
executes the command. Capabilities outside the set are dropped from the
bounding set (so no exec can regain them, setuid-root binaries included) and
from the inheritable and ambient sets; the process keeps its effective and
permitted sets until ``setuid``/``execve`` recompute them from the bounding
set, which is what the kernel gives a root process on exec
(capabilities(7), "Transformation of capabilities during execve()").

Where mounts are not permitted the step is only chrooted, and a chrooted
root process holding CAP_SYS_CHROOT can leave the chroot (chroot into a
subdirectory, then ``..`` upwards from outside it). That mode therefore also
drops CAP_SYS_CHROOT. Both keep CAP_MKNOD, as Docker does: a step may make
device nodes (and they reach the image), but cannot open them: Docker's
devices cgroup stops that in a CI container, and where namespaces are
allowed the root and every mount kanipy gives a step are ``nodev``.

Only the standard library may be used here: this runs in the step helper.
"""

from __future__ import annotations

import ctypes
import os

# capability.h numbers.
CAPABILITIES = {
    "CAP_CHOWN": 0, "CAP_DAC_OVERRIDE": 1, "CAP_DAC_READ_SEARCH": 2, "CAP_FOWNER": 3,
    "CAP_FSETID": 4, "CAP_KILL": 5, "CAP_SETGID": 6, "CAP_SETUID": 7, "CAP_SETPCAP": 8,
    "CAP_LINUX_IMMUTABLE": 9, "CAP_NET_BIND_SERVICE": 10, "CAP_NET_BROADCAST": 11,
    "CAP_NET_ADMIN": 12, "CAP_NET_RAW": 13, "CAP_IPC_LOCK": 14, "CAP_IPC_OWNER": 15,
    "CAP_SYS_MODULE": 16, "CAP_SYS_RAWIO": 17, "CAP_SYS_CHROOT": 18, "CAP_SYS_PTRACE": 19,
    "CAP_SYS_PACCT": 20, "CAP_SYS_ADMIN": 21, "CAP_SYS_BOOT": 22, "CAP_SYS_NICE": 23,
    "CAP_SYS_RESOURCE": 24, "CAP_SYS_TIME": 25, "CAP_SYS_TTY_CONFIG": 26, "CAP_MKNOD": 27,
    "CAP_LEASE": 28, "CAP_AUDIT_WRITE": 29, "CAP_AUDIT_CONTROL": 30, "CAP_SETFCAP": 31,
    "CAP_MAC_OVERRIDE": 32, "CAP_MAC_ADMIN": 33, "CAP_SYSLOG": 34, "CAP_WAKE_ALARM": 35,
    "CAP_BLOCK_SUSPEND": 36, "CAP_AUDIT_READ": 37, "CAP_PERFMON": 38, "CAP_BPF": 39,
    "CAP_CHECKPOINT_RESTORE": 40,
}
# moby/oci/caps/defaults.go, which BuildKit also gives a RUN step.
DOCKER_DEFAULT_CAPS = frozenset({
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW",
    "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE",
})
# Chrooted steps (no mount rights): the build container's device cgroup
# stands, but chroot would let them leave their root.
CHROOT_ONLY_CAPS = DOCKER_DEFAULT_CAPS - {"CAP_SYS_CHROOT"}

PR_CAPBSET_READ = 23
PR_CAPBSET_DROP = 24
PR_SET_DUMPABLE = 4
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_CLEAR_ALL = 4
_LINUX_CAPABILITY_VERSION_3 = 0x20080522


class _Header(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _Data(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                ("inheritable", ctypes.c_uint32)]


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def _check(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _prctl(lib: ctypes.CDLL, option: int, arg: int, arg3: int = 0) -> int:
    return int(lib.prctl(ctypes.c_int(option), ctypes.c_ulong(arg), ctypes.c_ulong(arg3),
                         ctypes.c_ulong(0), ctypes.c_ulong(0)))


def limit_capabilities(keep: frozenset[str]) -> None:
    """Drop every capability not in ``keep`` from the bounding, inheritable and ambient sets."""
    lib = _libc()
    keep_bits = {CAPABILITIES[name] for name in keep}
    for number in range(64):
        if number in keep_bits:
            continue
        present = _prctl(lib, PR_CAPBSET_READ, number)
        if present < 0:
            break  # past the kernel's last capability
        if present:
            _check(_prctl(lib, PR_CAPBSET_DROP, number), f"dropping capability {number}")
    _prctl(lib, PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL)
    header = _Header(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (_Data * 2)()
    _check(lib.capget(ctypes.byref(header), data), "capget")
    # Inheritable capabilities would survive an exec even outside the bounding set.
    for index in range(2):
        data[index].inheritable = 0
    _check(lib.capset(ctypes.byref(header), data), "capset")


def make_undumpable() -> None:
    """Keep a step from reading this process through /proc or ptrace (prctl(2) PR_SET_DUMPABLE).

    A step without CAP_SYS_PTRACE can then neither attach to it nor open its
    ``/proc/PID/environ``, ``fd`` or ``root``, even as the same uid.
    """
    _check(_prctl(_libc(), PR_SET_DUMPABLE, 0), "prctl(PR_SET_DUMPABLE)")


def bounding_set() -> frozenset[str]:
    """The names of the capabilities in this process's bounding set."""
    lib = _libc()
    return frozenset(name for name, number in CAPABILITIES.items()
                     if _prctl(lib, PR_CAPBSET_READ, number) == 1)


def require_build_privileges(euid: int | None = None) -> None:
    """Refuse to build as a non-root user, saying what is needed (exit 2).

    Unpacking an image keeps its files' owners and RUN runs steps as the
    image's users, both of which need uid 0. Nothing more is needed: Docker's
    default capabilities suffice (no CAP_SYS_ADMIN, no privileged container).
    """
    from kanipy.errors import UsageError

    uid = os.geteuid() if euid is None else euid
    if uid == 0:
        return
    raise UsageError(
        f"kanipy build must run as root (uid 0), not uid {uid}: it unpacks images with "
        "their files' owners and runs RUN steps as the image's users. Run its container "
        "as root (Kubernetes: securityContext.runAsUser: 0; GitLab and GitHub Actions: "
        "the image's default user); Docker's default capabilities are enough, no "
        "privileged mode or CAP_SYS_ADMIN is needed.")
