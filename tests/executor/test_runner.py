"""RUN steps executed for real (as root) in a tiny busybox rootfs."""

from __future__ import annotations

import logging
import os
import stat
import tempfile
import threading
import time
from pathlib import Path

import pytest

from kanipy.errors import BuildError
from kanipy.executor.runner import DEFAULT_PATH, ChrootRunner, Mount, RunOutcome, RunSpec
from kanipy.executor.sandbox_caps import CAPABILITIES, DOCKER_DEFAULT_CAPS
from kanipy.executor.userdb import resolve_user

# What a RUN step must never leave behind in the rootfs.
SCAFFOLDING = ("proc", "dev", "sys", "etc/resolv.conf", "etc/hosts")


def run_step(root: Path, script: str, runner: ChrootRunner | None = None, **spec: object
             ) -> tuple[RunOutcome, list[str]]:
    """Run a shell-form step; how it ended and its output lines."""
    lines: list[str] = []
    runner = runner or ChrootRunner()
    outcome = runner.run(
        RunSpec(root=root, argv=["/bin/sh", "-c", script], **spec),  # type: ignore[arg-type]
        lambda line: lines.append(line.decode()),
    )
    return outcome, lines


def run(root: Path, script: str, runner: ChrootRunner | None = None, **spec: object
        ) -> tuple[int, list[str]]:
    """Run a shell-form step; its exit status and output lines."""
    outcome, lines = run_step(root, script, runner, **spec)
    return outcome.status, lines


def listing(root: Path, paths: list[str]) -> dict[str, tuple[int, ...] | None]:
    """lstat records a snapshot would compare (directories: mode, uid, gid, mtime)."""
    records: dict[str, tuple[int, ...] | None] = {}
    for rel in paths:
        try:
            st = os.lstat(root / rel)
        except FileNotFoundError:
            records[rel] = None
            continue
        records[rel] = (st.st_mode, st.st_uid, st.st_gid, st.st_mtime_ns, st.st_size, st.st_ino)
    return records


def host_processes_with(needle: bytes) -> list[int]:
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                if needle in Path(f"/proc/{name}/cmdline").read_bytes():
                    found.append(int(name))
            except OSError:
                pass
    return found


@pytest.mark.parametrize(
    ("script", "status"),
    [("true", 0), ("exit 3", 3), ("kill -TERM $$", 128 + 15), ("kill -KILL $$", 128 + 9)],
    ids=["zero", "three", "sigterm", "sigkill"],
)
def test_exit_status(rootfs: Path, script: str, status: int) -> None:
    assert run(rootfs, script)[0] == status


def test_output_is_merged_in_order_and_streamed(rootfs: Path) -> None:
    # The step waits until the callback has seen its first line: buffered
    # output would make it give up and print "not streamed".
    lines: list[bytes] = []

    def on_output(line: bytes) -> None:
        lines.append(line)
        if line == b"first":
            (rootfs / "tmp" / "go").touch()

    script = ("echo first; i=0; while [ ! -e /tmp/go ] && [ $i -lt 100 ]; do "
              "sleep 0.05; i=$((i+1)); done; [ -e /tmp/go ] && echo streamed || "
              "echo not streamed; echo to-stderr >&2; printf 'no newline'")
    outcome = ChrootRunner().run(RunSpec(rootfs, ["/bin/sh", "-c", script]), on_output)
    assert outcome.status == 0
    assert lines == [b"first", b"streamed", b"to-stderr", b"no newline"]


def test_environment_exactly_as_given_with_home_added(rootfs: Path) -> None:
    lines: list[bytes] = []
    env = {"FOO": "bar baz", "PATH": "/bin", "EMPTY": ""}
    ChrootRunner().run(RunSpec(rootfs, ["env"], env=env), lines.append)
    assert sorted(lines) == sorted([b"FOO=bar baz", b"PATH=/bin", b"EMPTY=", b"HOME=/root"])


@pytest.mark.parametrize(
    ("uid", "home"), [(0, "/root"), (1000, "/home/app"), (4242, "/")], ids=["root", "app", "none"]
)
def test_path_and_home_defaults(rootfs: Path, uid: int, home: str) -> None:
    code, lines = run(rootfs, 'echo "$PATH"; echo "$HOME"', uid=uid, env=["A=1"])
    assert code == 0
    assert lines == [DEFAULT_PATH, home]


def test_user_with_supplementary_groups(rootfs: Path) -> None:
    user = resolve_user("app", rootfs / "etc/passwd", rootfs / "etc/group")
    code, lines = run(rootfs, "id -un; id -u; id -g; id -G", uid=user.uid, gid=user.gid,
                      groups=user.groups)
    assert code == 0
    assert lines == ["app", "1000", "1000", "1000 1001"]


def test_workdir_is_created_by_root_0755(rootfs: Path) -> None:
    code, lines = run(rootfs, "pwd; touch here", workdir="/srv/data", uid=0)
    assert (code, lines) == (0, ["/srv/data"])
    st = os.stat(rootfs / "srv" / "data")
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o755, 0, 0)
    assert (rootfs / "srv" / "data" / "here").exists()


def test_missing_executable_exits_127_naming_it(rootfs: Path) -> None:
    lines: list[bytes] = []
    outcome = ChrootRunner().run(RunSpec(rootfs, ["no-such-tool", "x"]), lines.append)
    assert outcome.status == 127
    assert any(b"no-such-tool" in line and b"not found" in line for line in lines)


def test_proc_dev_sys(rootfs: Path) -> None:
    script = (
        "head -1 /proc/self/status; echo $$; echo x > /dev/null && echo null-ok; "
        "head -c 4 /dev/urandom | wc -c; test -c /dev/tty && echo tty-ok; "
        "ls /dev/pts/ptmx >/dev/null && test -d /dev/shm && echo pts-shm-ok; "
        "touch /sys/x 2>/dev/null || echo sys-ro"
    )
    code, lines = run(rootfs, script, uid=1000, gid=1000)
    # The step's shell is PID 2: PID 1 is the init of the step's PID namespace.
    assert (code, lines) == (0, ["Name:\thead", "2", "null-ok", "4", "tty-ok", "pts-shm-ok",
                                 "sys-ro"])


def test_resolv_conf_is_the_hosts_and_writes_stay_private(rootfs: Path) -> None:
    host = Path("/etc/resolv.conf").read_bytes()
    image_file = rootfs / "etc" / "resolv.conf"
    image_file.write_text("nameserver 192.0.2.53\n")
    before = listing(rootfs, ["etc", "etc/resolv.conf"])
    lines: list[bytes] = []
    outcome = ChrootRunner().run(
        RunSpec(rootfs, ["/bin/sh", "-c",
                         "cat /etc/resolv.conf; echo nameserver 198.51.100.1 > /etc/resolv.conf"
                         " && echo written"]),
        lines.append,
    )
    assert outcome.status == 0
    assert b"\n".join(lines[:-1]) == host.rstrip(b"\n")
    assert lines[-1] == b"written"
    assert Path("/etc/resolv.conf").read_bytes() == host
    assert image_file.read_text() == "nameserver 192.0.2.53\n"
    assert listing(rootfs, ["etc", "etc/resolv.conf"]) == before


def test_no_trace_left_in_rootfs_or_host_mounts(rootfs: Path) -> None:
    watched = ["", "etc", *SCAFFOLDING]
    before = listing(rootfs, watched)
    outcome, lines = run_step(rootfs, "test -e /etc/resolv.conf && test -e /etc/hosts && "
                              "test -d /proc/self && echo inside")
    assert (outcome.status, lines) == (0, ["inside"])
    assert listing(rootfs, watched) == before
    assert not (rootfs / "etc" / "resolv.conf").exists()
    assert str(rootfs) not in Path("/proc/self/mountinfo").read_text()
    assert {str(p) for p in outcome.excluded} >= {"/proc", "/dev", "/sys",
                                                   "/etc/resolv.conf", "/etc/hosts"}


def test_a_background_daemon_neither_hangs_nor_survives(rootfs: Path) -> None:
    result: list[tuple[int, list[str]]] = []
    worker = threading.Thread(
        target=lambda: result.append(run(rootfs, "sleep 987654 & echo started")), daemon=True
    )
    worker.start()
    worker.join(timeout=20)
    assert not worker.is_alive(), "RUN with a background process did not return"
    assert result == [(0, ["started"])]
    assert host_processes_with(b"987654") == []


def test_unprivileged_mode_is_named_once_and_ends_every_process(
        rootfs: Path, caplog: pytest.LogCaptureFixture) -> None:
    runner = ChrootRunner(degraded=True)
    before = listing(rootfs, ["", *SCAFFOLDING])
    with caplog.at_level(logging.INFO, logger="kanipy.executor.runner"):
        first = run(rootfs, "echo hello; test -e /proc/self/status && echo proc", runner)
        # One child in the background, and one daemon that has left the step's
        # session and been orphaned (setsid, fork, parent exits) before the step ends.
        second, lines = run_step(rootfs, "echo again; sleep 987655 & "
                                 "setsid sh -c 'sleep 987657 &'; echo detached", runner)
    assert first == (0, ["hello", "proc"])
    assert (second.status, lines) == (0, ["again", "detached"])
    messages = [(r.levelno, r.getMessage()) for r in caplog.records]
    assert [m for m in messages if m[0] >= logging.WARNING] == []
    assert len(messages) == 1 and "unprivileged" in messages[0][1]
    assert listing(rootfs, ["", *SCAFFOLDING]) == before
    assert host_processes_with(b"987655") == []
    assert host_processes_with(b"987657") == []
    assert {"/proc", "/dev", "/etc/resolv.conf", "/etc/hosts"} <= {
        str(p) for p in second.excluded}


def test_network_none_sees_only_loopback(rootfs: Path) -> None:
    code, lines = run(rootfs, "ls /sys/class/net; ip -o link | grep -c UP", network="none")
    assert (code, lines) == (0, ["lo", "1"])


def test_network_none_on_the_degraded_path_is_refused(rootfs: Path) -> None:
    with pytest.raises(BuildError, match="network=none"):
        run(rootfs, "true", ChrootRunner(degraded=True), network="none")


def test_hostname(rootfs: Path) -> None:
    before = listing(rootfs, ["etc", "etc/hostname"])
    code, lines = run(rootfs, "hostname; grep -c buildbox /etc/hosts; cat /etc/hostname",
                      hostname="buildbox")
    assert (code, lines) == (0, ["buildbox", "1", "buildbox"])
    assert listing(rootfs, ["etc", "etc/hostname"]) == before


def test_extra_mounts_bind_and_tmpfs_leave_no_trace(rootfs: Path, tmp_path: Path) -> None:
    source = tmp_path / "src"
    source.mkdir()
    (source / "input.txt").write_text("from host\n")
    cache = tmp_path / "cache"
    cache.mkdir()
    before = listing(rootfs, ["", "mnt", "run"])
    outcome, lines = run_step(
        rootfs,
        "cat /mnt/src/input.txt; touch /mnt/src/x 2>/dev/null || echo ro; "
        "echo kept > /var/cache/out; echo gone > /run/t/f; echo ok",
        extra_mounts=[
            Mount("/mnt/src", "bind", source, readonly=True),
            Mount("/var/cache", "bind", cache),
            Mount("/run/t", "tmpfs"),
        ],
    )
    assert (outcome.status, lines) == (0, ["from host", "ro", "ok"])
    assert (cache / "out").read_text() == "kept\n"
    assert sorted(p.name for p in source.iterdir()) == ["input.txt"]
    assert listing(rootfs, ["", "mnt", "run"]) == before
    assert not (rootfs / "var").exists()
    assert {"/mnt/src", "/var/cache", "/run/t"} <= {str(p) for p in outcome.excluded}


def test_image_symlinks_resolve_inside_the_root(rootfs: Path) -> None:
    # /etc/resolv.conf as systemd-resolved images ship it (dangling), and an
    # /etc/hosts symlink that would reach the host's / if followed outside.
    (rootfs / "etc" / "resolv.conf").symlink_to("../run/systemd/resolve/stub-resolv.conf")
    escape = f"/../../../../..{rootfs.parent}/escaped"
    (rootfs / "etc" / "hosts").symlink_to(escape)
    watched = ["", "etc", "etc/resolv.conf", "etc/hosts", "run"]
    before = listing(rootfs, watched)
    code, lines = run(rootfs, "grep -c localhost /etc/hosts; test -s /etc/resolv.conf && echo ok")
    assert code == 0 and lines[-1] == "ok"
    assert listing(rootfs, watched) == before
    assert not (rootfs.parent / "escaped").exists()
    assert os.readlink(rootfs / "etc" / "hosts") == escape


def test_a_step_that_changes_a_parent_keeps_its_change(rootfs: Path) -> None:
    before = listing(rootfs, ["etc"])["etc"]
    code, _ = run(rootfs, "sleep 0.01; touch /etc/new")
    after = listing(rootfs, ["etc"])["etc"]
    assert code == 0 and (rootfs / "etc" / "new").exists()
    assert before is not None and after is not None and after[3] != before[3]
    assert not (rootfs / "etc" / "resolv.conf").exists()


def test_an_interrupted_step_is_ended_and_cleaned(rootfs: Path) -> None:
    before = listing(rootfs, ["", *SCAFFOLDING])

    def on_output(line: bytes) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        ChrootRunner().run(RunSpec(rootfs, ["/bin/sh", "-c", "echo go; sleep 987656"]),
                           on_output)
    # If the helper needed a SIGKILL (a loaded machine), the step dies with its
    # namespace's init a moment later: allow that moment, not a survivor.
    deadline = time.monotonic() + 5
    while host_processes_with(b"987656") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert host_processes_with(b"987656") == []
    assert listing(rootfs, ["", *SCAFFOLDING]) == before


def test_a_mount_the_step_asked_for_must_work(rootfs: Path, tmp_path: Path) -> None:
    (rootfs / "etc" / "motd").write_text("a file\n")
    before = listing(rootfs, ["", "etc", *SCAFFOLDING])
    with pytest.raises(BuildError, match="cannot mount bind on /etc/motd/sub"):
        run(rootfs, "echo never", extra_mounts=[Mount("/etc/motd/sub", "bind", tmp_path)])
    assert listing(rootfs, ["", "etc", *SCAFFOLDING]) == before
    with pytest.raises(BuildError, match="cannot provide bind at /etc/motd/sub"):
        run(rootfs, "echo never", ChrootRunner(degraded=True),
            extra_mounts=[Mount("/etc/motd/sub", "bind", tmp_path)])
    assert listing(rootfs, ["", "etc", *SCAFFOLDING]) == before


def test_a_workdir_that_is_a_file_is_a_clear_error(rootfs: Path) -> None:
    (rootfs / "srv").write_text("")
    with pytest.raises(BuildError, match="working directory /srv"):
        run(rootfs, "true", workdir="/srv")


def test_isolated_steps_are_pivoted_with_kernel_tunables_read_only(rootfs: Path) -> None:
    before = listing(rootfs, ["", *SCAFFOLDING])
    hostname = Path("/proc/sys/kernel/hostname").read_text()
    code, lines = run(rootfs, (
        "ls -A / | grep -c kanipy; (echo x > /proc/sys/kernel/hostname) 2>/dev/null || echo ro; "
        "mount -o remount,rw /sys 2>/dev/null || echo sys-stays-ro; "
        "mknod /tmp/mem c 1 1 && (head -c 1 /tmp/mem 2>/dev/null || echo unopenable); "
        "mknod /dev/mem c 1 1 && (head -c 1 /dev/mem 2>/dev/null || echo unopenable); "
        "grep CapBnd /proc/self/status"))
    # Docker's default capabilities; nodes a step makes cannot be opened (nodev).
    bounding = sum(1 << CAPABILITIES[name] for name in DOCKER_DEFAULT_CAPS)
    assert lines == ["0", "ro", "sys-stays-ro", "unopenable", "unopenable",
                     f"CapBnd:\t{bounding:016x}"]
    assert code == 0
    assert Path("/proc/sys/kernel/hostname").read_text() == hostname
    assert listing(rootfs, ["", *SCAFFOLDING]) == before


def test_the_steps_environment_is_never_written_to_disk(
        rootfs: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A secret given as env= is in the step's environment; while the step runs
    # (and so after a SIGKILL of kanipy at that moment) no file kanipy made holds it.
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    secret = b"s3cr3t-in-env-7f0c"
    found: list[str] = []

    def on_output(line: bytes) -> None:
        for path in scratch.rglob("*"):
            if path.is_file() and not path.is_symlink() and secret in path.read_bytes():
                found.append(str(path))

    outcome = ChrootRunner().run(
        RunSpec(rootfs, ["/bin/sh", "-c", "echo running"], env={"TOKEN": secret.decode()}),
        on_output)
    assert outcome.status == 0
    assert found == []
