"""A RUN step's scaffolding where mounting is not permitted: files in the root, not mounts.

In the CI container Kaniko runs in (uid 0, Docker's default capabilities, no
CAP_SYS_ADMIN) there are no mount or PID namespaces. The step is chrooted, and
what the isolated mode mounts is put into the root for the step instead
(``kanipy.executor.sandbox_files`` stashes the image's own entries and puts
them back exactly):

- ``/dev``: device nodes made with mknod (CAP_MKNOD is in Docker's default
  set, and Docker's device cgroup lets these be opened), ``pts`` and ``shm``
  directories, the ``fd``/``stdin``/``stdout``/``stderr`` links;
- ``/proc``: a static copy of the host's global files (cpuinfo, meminfo, ...)
  and of the helper's ``/proc/self`` taken at the start of the step. Root
  steps also get live opens of ``/proc/self/...`` and ``/dev/fd/N``
  (``sandbox_procfs``); for others ``/dev/fd`` does not exist (see
  docs/architecture.md for the options measured);
- ``/etc/resolv.conf``, ``/etc/hosts``, ``/etc/hostname``: private copies;
- ``RUN --mount``: a cache directory is renamed into place and back (copied
  when it lives on another filesystem); a secret is written from memory
  (it came through the spec pipe) at its target, mode and owner set before a
  byte is written, and removed after; a read-only bind is copied in and
  removed after (writes to a read-only bind are not refused,
  they are discarded with the copy); an ``rw`` bind (already a private copy)
  is renamed in; a tmpfs is an empty directory (mode 1777) removed after.

Only the standard library may be used here: this runs in the step helper.
"""

from __future__ import annotations

import errno
import os
import stat

from kanipy.executor.sandbox_files import (
    Provisioner,
    copy_entry,
    copy_plain_file,
    move_or_copy,
    remove_entry,
    write_secret,
)

# typing.TYPE_CHECKING without importing typing (the helper's start-up time).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

# The device nodes of a minimal /dev (as runc's default devices): name, major, minor.
DEVICES = (("null", 1, 3), ("zero", 1, 5), ("full", 1, 7), ("random", 1, 8),
           ("urandom", 1, 9), ("tty", 5, 0))
DEV_LINKS = (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"),
             ("stdout", "/proc/self/fd/1"), ("stderr", "/proc/self/fd/2"),
             ("ptmx", "pts/ptmx"))

# Host /proc files copied into the step's static /proc: what build tools read
# (nproc falls back to cpuinfo, free and ps read meminfo and stat, uname -a and
# Python's platform read sys/kernel).
PROC_FILES = (
    "cpuinfo", "meminfo", "stat", "uptime", "loadavg", "version", "filesystems", "cmdline",
    "swaps", "devices", "crypto", "sys/kernel/hostname", "sys/kernel/osrelease",
    "sys/kernel/ostype", "sys/kernel/version", "sys/kernel/pid_max", "sys/kernel/ngroups_max",
    "sys/kernel/cap_last_cap", "sys/kernel/threads-max", "sys/kernel/random/boot_id",
    "sys/kernel/random/entropy_avail", "sys/vm/overcommit_memory", "sys/fs/file-max",
    "sys/fs/nr_open", "sys/net/core/somaxconn",
)
PROC_SELF_FILES = ("status", "stat", "statm", "limits", "cgroup", "mounts", "mountinfo",
                   "comm", "oom_score_adj", "loginuid", "sessionid", "uid_map", "gid_map")
# name in /proc -> link target
PROC_LINKS = (("mounts", "self/mounts"), ("thread-self", "self"), ("net", "self/net"))


def provide_without_mounts(prov: Provisioner, job: dict[str, Any], missing: list[str]
                           ) -> None:
    """Put the step's scaffolding and ``RUN --mount`` contents into ``prov.root``.

    What cannot be provided is named in ``missing``; a ``RUN --mount`` that
    cannot be provided raises OSError (the step must not run without it).
    """
    old_umask = os.umask(0)
    try:
        _dev(prov, missing)
        _proc(prov, job, missing)
        for m in job["mounts"]:
            if m["required"]:
                _extra(prov, m)
                continue
            try:
                # The runner's own resolv.conf, hosts and hostname files (place
                # calls the function at once, inside this iteration).
                source = m["source"]
                prov.place(m["target"], lambda host: copy_plain_file(source, host))  # noqa: B023
            except OSError as exc:
                missing.append(f"{m['target']} is not provided ({exc.strerror or exc})")
    finally:
        os.umask(old_umask)


def _write(path: str, data: bytes, mode: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def _dev(prov: Provisioner, missing: list[str]) -> None:
    def make(host: str) -> None:
        os.mkdir(host, 0o755)
        for name, major, minor in DEVICES:
            os.mknod(os.path.join(host, name), 0o666 | stat.S_IFCHR, os.makedev(major, minor))
        # The host's ptmx: a pty can be opened, though its /dev/pts/N is not visible.
        os.mkdir(os.path.join(host, "pts"), 0o755)
        os.mkdir(os.path.join(host, "shm"), 0o1777)
        os.mkdir(os.path.join(host, "mqueue"), 0o1777)
        for name, link in DEV_LINKS:
            if name != "ptmx":
                os.symlink(link, os.path.join(host, name))
        try:
            os.mknod(os.path.join(host, "ptmx"), 0o666 | stat.S_IFCHR, os.makedev(5, 2))
        except OSError:
            pass

    try:
        host = prov.place("/dev", make)
    except OSError as exc:
        missing.append(f"/dev is not provided: device nodes cannot be made "
                       f"({exc.strerror or exc}; mknod needs CAP_MKNOD)")
        return
    try:
        with open(os.path.join(host, "null"), "wb") as f:
            f.write(b"")
    except OSError as exc:
        # A nodev filesystem or a devices cgroup refuses the nodes we made.
        missing.append(f"the device nodes in /dev cannot be opened ({exc.strerror}); "
                       "kanipy's work directory must be on a filesystem mounted without "
                       "nodev (--kanipy-dir)")


def _proc(prov: Provisioner, job: dict[str, Any], missing: list[str]) -> None:
    def make(host: str) -> None:
        os.mkdir(host, 0o555)
        for rel in PROC_FILES:
            _copy_proc_file(f"/proc/{rel}", host, rel)
        self_dir = os.path.join(host, "self")
        _make_dirs(host, "self/fd")
        os.chmod(os.path.join(self_dir, "fd"), 0o500)
        for name in PROC_SELF_FILES:
            _copy_proc_file(f"/proc/self/{name}", host, f"self/{name}")
        _write(os.path.join(self_dir, "cmdline"),
               b"".join(os.fsencode(a) + b"\0" for a in job["argv"]), 0o444)
        _make_dirs(host, "self/net")
        for name in ("dev", "route", "tcp", "tcp6", "udp", "unix"):
            _copy_proc_file(f"/proc/self/net/{name}", host, f"self/net/{name}")
        for name, target in PROC_LINKS:
            os.symlink(target, os.path.join(host, name))

    try:
        prov.place("/proc", make)
    except OSError as exc:
        missing.append(f"/proc is not provided ({exc.strerror or exc})")


def _make_dirs(top: str, rel: str) -> None:
    """``top/rel`` and the directories on the way, each 0555 as in procfs."""
    current = top
    for part in rel.split("/"):
        current = os.path.join(current, part)
        if not os.path.isdir(current):
            os.mkdir(current, 0o555)


def _copy_proc_file(source: str, proc: str, rel: str) -> None:
    """The host's ``source`` as ``proc/rel``, read-only; skipped if the host has none."""
    try:
        with open(source, "rb") as f:
            data = f.read()
    except OSError:
        return
    if "/" in rel:
        _make_dirs(proc, os.path.dirname(rel))
    _write(os.path.join(proc, rel), data, 0o444)


def _extra(prov: Provisioner, m: dict[str, Any]) -> None:
    """One ``RUN --mount`` (or heredoc script) put in place without mounting."""
    target = m["target"]
    try:
        if m["type"] == "tmpfs":
            prov.place(target, lambda host: os.mkdir(host, 0o1777))
            return
        if m["type"] == "secret":
            value: bytes = m["data"]
            prov.place(target, lambda host: write_secret(host, value, m))
            return
        source = m["source"]
        if not os.path.lexists(source):
            raise OSError(errno.ENOENT, f"{source} does not exist")
        if m["readonly"]:
            prov.place(target, lambda host: copy_entry(source, host))
            return
        # A cache directory, or the private copy made for an rw bind: it goes
        # back where it came from after the step, with the step's changes.
        renamed: list[bool] = []

        def give_back(host: str) -> None:
            if renamed[0]:
                try:
                    os.rename(host, source)
                    return
                except OSError as exc:
                    if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                        raise
                # Another build made a new cache at the same place meanwhile:
                # this step's entries go into it, replacing theirs.
                for name in os.listdir(host):
                    if os.path.lexists(os.path.join(source, name)):
                        remove_entry(os.path.join(source, name))
                    os.rename(os.path.join(host, name), os.path.join(source, name))
                os.rmdir(host)
                return
            remove_entry(source)
            copy_entry(host, source)
            remove_entry(host)

        prov.place(target, lambda host: renamed.append(move_or_copy(source, host)), give_back)
    except OSError as exc:
        raise OSError(exc.errno, f"cannot provide {m['type']} at {target}: "
                      f"{exc.strerror or exc}") from exc
