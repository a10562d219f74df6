"""A live ``/proc/self`` and ``/dev/fd`` for a chrooted step, without mounting.

Without mount rights a step's ``/proc`` is a static copy (``sandbox_nomount``):
``/proc/self`` is a snapshot and ``/dev/fd/N`` does not exist, so bash's
process substitution (``done < <(cmd)``, ``cat <(cmd)``) fails. For root steps
the helper adds seccomp user notification (seccomp(2),
``SECCOMP_FILTER_FLAG_NEW_LISTENER``): the step's ``open``/``openat`` calls
stop, and a supervisor thread in the step's init reads the path from the
step's memory. For ``/dev/fd/N``, ``/dev/std{in,out,err}``, ``/proc/self/...``
and ``/proc/thread-self/...`` it opens the step process's own entry of the
build container's procfs and puts the descriptor into the step
(``SECCOMP_IOCTL_NOTIF_ADDFD`` with ``SECCOMP_ADDFD_FLAG_SEND``, Linux 5.14);
every other open continues unchanged (``SECCOMP_USER_NOTIF_FLAG_CONTINUE``).

Only the calling process's own entries are reached this way, never another
process's (``/proc/1/environ`` stays the static copy's "no such file"). A
filter needs ``no_new_privs`` without CAP_SYS_ADMIN, which only matters to a
step that gains privileges through a setuid binary, so it is installed for
uid 0 steps only; a non-root step's memory is not readable by the init
either (no CAP_SYS_PTRACE). ``stat`` and ``readlink`` of these paths are not
translated. Each translated or continued open costs a round trip to the
supervisor: 40-65 µs measured here.

Only the standard library may be used here: this runs in the step helper.
"""

from __future__ import annotations

import ctypes
import errno
import os
import posixpath
import select
import struct
import threading

# typing.TYPE_CHECKING without importing typing (the helper's start-up time).
TYPE_CHECKING = False
if TYPE_CHECKING:
    import socket

# (audit arch, seccomp syscall, openat, open or -1); asm/unistd.h, audit.h.
_ARCHES = {"x86_64": (0xC000003E, 317, 257, 2), "aarch64": (0xC00000B7, 277, 56, -1)}
PR_SET_NO_NEW_PRIVS = 38
SECCOMP_SET_MODE_FILTER = 1
SECCOMP_FILTER_FLAG_NEW_LISTENER = 8
SECCOMP_RET_USER_NOTIF = 0x7FC00000
SECCOMP_RET_ALLOW = 0x7FFF0000
SECCOMP_USER_NOTIF_FLAG_CONTINUE = 1
SECCOMP_ADDFD_FLAG_SEND = 2
# ioctl numbers: _IOWR('!', 0, seccomp_notif), _IOWR('!', 1, seccomp_notif_resp),
# _IOW('!', 3, seccomp_notif_addfd).
NOTIF_RECV = 0xC0502100
NOTIF_SEND = 0xC0182101
NOTIF_ADDFD = 0x40182103
_NOTIF = struct.Struct("QIIiIQ6Q")  # id, pid, flags, nr, arch, ip, args[6]
_RESP = struct.Struct("QqiI")  # id, val, error, flags
_ADDFD = struct.Struct("QIIII")  # id, flags, srcfd, newfd, newfd_flags
_STD = {"/dev/stdin": "0", "/dev/stdout": "1", "/dev/stderr": "2"}


def supported() -> bool:
    return os.uname().machine in _ARCHES


# Entries under /proc/PID whose lookup would go on from a directory of the
# step's root (``root/...``, ``cwd/...``) are resolved by the init, whose root is
# the build container's: ``..`` and absolute symlinks would lead out of the
# step's root. Only single files, and fd/N itself, are translated.
_NOT_TRANSLATED = frozenset({"root", "cwd", "exe", "map_files", "task", "ns"})
_TWO_LEVELS = frozenset({"fd", "fdinfo", "net"})


def host_path(path: str, pid: int) -> str | None:
    """The build container's path for the step's ``path`` opened by ``pid``; None: as is."""
    if path in _STD:
        return f"/proc/{pid}/fd/{_STD[path]}"
    path = posixpath.normpath(path)
    if path.startswith("/dev/fd/") and path[len("/dev/fd/"):].isdigit():
        return f"/proc/{pid}/fd/{path[len('/dev/fd/'):]}"
    for prefix, real in (("/proc/self", f"/proc/{pid}"),
                         ("/proc/thread-self", f"/proc/{pid}/task/{pid}")):
        if path == prefix:
            return real
        if not path.startswith(prefix + "/"):
            continue
        parts = path[len(prefix) + 1:].split("/")
        if parts[0] in _NOT_TRANSLATED or len(parts) > 2:
            return None
        if len(parts) == 2 and (parts[0] not in _TWO_LEVELS
                                or (parts[0] != "net" and not parts[1].isdigit())):
            return None
        return f"{real}/{'/'.join(parts)}"
    return None


def _filter() -> bytes:
    audit_arch, _, openat, open_ = _ARCHES[os.uname().machine]

    def op(code: int, jt: int, jf: int, k: int) -> bytes:
        return struct.pack("HBBI", code, jt, jf, k & 0xFFFFFFFF)

    ld, jeq, ret = 0x20, 0x15, 0x06
    return b"".join([
        op(ld, 0, 0, 4),                  # 0: arch
        op(jeq, 0, 4, audit_arch),        # 1: another arch -> allow
        op(ld, 0, 0, 0),                  # 2: syscall number
        op(jeq, 1, 0, openat),            # 3: openat -> notify
        op(jeq, 0, 1, open_),             # 4: open -> notify, else allow
        op(ret, 0, 0, SECCOMP_RET_USER_NOTIF),
        op(ret, 0, 0, SECCOMP_RET_ALLOW),
    ])


class _Fprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def install_filter() -> int:
    """In the step process, before exec: stop its opens for the supervisor; the listener fd."""
    lib = ctypes.CDLL(None, use_errno=True)
    if lib.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS)")
    code = ctypes.create_string_buffer(_filter())
    prog = _Fprog(len(code.raw) // 8, ctypes.cast(code, ctypes.c_void_p))
    number = _ARCHES[os.uname().machine][1]
    fd = int(lib.syscall(ctypes.c_long(number), SECCOMP_SET_MODE_FILTER,
                         SECCOMP_FILTER_FLAG_NEW_LISTENER, ctypes.byref(prog)))
    if fd < 0:
        raise OSError(ctypes.get_errno(), "seccomp(SECCOMP_FILTER_FLAG_NEW_LISTENER)")
    return fd


def send_listener(sock: socket.socket, fd: int | None) -> None:
    import socket  # here: only root steps without mount rights get a live /proc

    sock.sendmsg([b"1" if fd is not None else b"0"],
                 [(socket.SOL_SOCKET, socket.SCM_RIGHTS, struct.pack("i", fd))]
                 if fd is not None else [])


def receive_listener(sock: socket.socket) -> int | None:
    import socket

    sock.settimeout(10)
    try:
        _, fds, _, _ = socket.recv_fds(sock, 1, 1)
    except OSError:
        return None
    return fds[0] if fds else None


class ProcSupervisor(threading.Thread):
    """Answers the step's stopped opens until ``stop()``; ``served`` counts translations."""

    def __init__(self, listener: int) -> None:
        super().__init__(name="kanipy-procfs", daemon=True)
        self.listener = listener
        self.lib = ctypes.CDLL(None, use_errno=True)
        self.stopping = False
        self.served = 0

    def stop(self) -> None:
        self.stopping = True
        self.join(timeout=5)
        os.close(self.listener)

    def run(self) -> None:
        try:
            self._serve()
        except Exception:  # noqa: BLE001 - the step's opens then fail; never a traceback
            return

    def _serve(self) -> None:
        poller = select.poll()
        poller.register(self.listener, select.POLLIN)
        request = ctypes.create_string_buffer(_NOTIF.size)
        while not self.stopping:
            events = poller.poll(200)
            if not events:
                continue
            if events[0][1] & (select.POLLHUP | select.POLLERR) and \
                    not events[0][1] & select.POLLIN:
                return  # every process of the step has exited
            ctypes.memset(request, 0, _NOTIF.size)
            if self.lib.ioctl(self.listener, NOTIF_RECV, request) != 0:
                continue  # the process went away before we received it
            self._answer(*_NOTIF.unpack(request.raw))

    def _answer(self, notif_id: int, pid: int, _flags: int, nr: int, _arch: int, _ip: int,
                *args: int) -> None:
        openat = _ARCHES[os.uname().machine][2]
        path_at, flags, mode = (args[1], args[2], args[3]) if nr == openat else \
            (args[0], args[1], args[2])
        target = None
        try:
            with open(f"/proc/{pid}/mem", "rb", buffering=0) as mem:
                mem.seek(path_at)
                raw = mem.read(4096).split(b"\0", 1)[0]
            target = host_path(os.fsdecode(raw), pid)
        except (OSError, ValueError, OverflowError):
            target = None
        if target is None:
            self._respond(notif_id, 0, 0, SECCOMP_USER_NOTIF_FLAG_CONTINUE)
            return
        try:
            fd = os.open(target, flags & ~os.O_CLOEXEC, mode)
        except OSError as exc:
            self._respond(notif_id, 0, -(exc.errno or errno.EIO), 0)
            return
        try:
            addfd = ctypes.create_string_buffer(_ADDFD.pack(
                notif_id, SECCOMP_ADDFD_FLAG_SEND, fd, 0, flags & os.O_CLOEXEC))
            if self.lib.ioctl(self.listener, NOTIF_ADDFD, addfd) >= 0:
                self.served += 1
        finally:
            os.close(fd)

    def _respond(self, notif_id: int, value: int, error: int, flags: int) -> None:
        response = ctypes.create_string_buffer(_RESP.pack(notif_id, value, error, flags))
        self.lib.ioctl(self.listener, NOTIF_SEND, response)
