"""RUN without mount rights (``ChrootRunner(degraded=True)``): files in the root, put back exactly.

The same path kanipy takes in a CI container with Docker's default
capabilities; forced here on a host with full rights, so the image's own
entries at the provided paths can be checked byte for byte and time for time.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from kanipy.errors import BuildError
from kanipy.executor.runner import ChrootRunner, Mount, RunSpec
from kanipy.executor.sandbox_procfs import host_path, supported
from tests.executor.test_runner import host_processes_with, listing, run, run_step

# Every provided path and its parents: what a snapshot would compare.
WATCHED = ["", "etc", "etc/hosts", "etc/resolv.conf", "etc/hostname", "dev", "dev/null",
           "dev/custom", "proc", "var", "run"]
MTIME = 1_600_000_000


def _image_entries(root: Path) -> None:
    """What an image may have at the provided paths: odd modes, owners and times."""
    (root / "dev").mkdir()
    (root / "dev" / "custom").write_text("image file in /dev\n")
    (root / "proc").mkdir(mode=0o555)
    (root / "etc" / "hosts").write_text("10.0.0.1 image-hosts\n")
    os.chown(root / "etc" / "hosts", 1000, 1000)
    (root / "etc" / "hosts").chmod(0o600)
    (root / "etc" / "resolv.conf").symlink_to("../run/systemd/resolve/stub-resolv.conf")
    for rel in ("dev/custom", "etc/hosts", "dev", "proc", "etc", ""):
        os.utime(root / rel, (MTIME, MTIME), follow_symlinks=False)


def unprivileged(root: Path, script: str, **spec: object) -> tuple[int, list[str]]:
    return run(root, script, ChrootRunner(degraded=True), **spec)


def test_devices_dns_proc_are_given_and_the_image_entries_come_back_exactly(
        rootfs: Path) -> None:
    _image_entries(rootfs)
    before = listing(rootfs, WATCHED)
    host_resolv = Path("/etc/resolv.conf").read_text().splitlines()[0]
    code, lines = unprivileged(rootfs, (
        "echo x > /dev/null && echo null-ok; head -c 16 /dev/urandom | wc -c; "
        "head -c 3 /dev/zero | wc -c; test -c /dev/tty && test -d /dev/shm && echo dev-ok; "
        "test -e /dev/custom || echo image-dev-hidden; "
        "head -1 /etc/resolv.conf; grep -c localhost /etc/hosts; cat /etc/hostname | wc -l; "
        "grep -c '^processor' /proc/cpuinfo >/dev/null && grep -q MemTotal /proc/meminfo "
        "&& grep -q '^Uid:' /proc/self/status && echo proc-ok"
    ), hostname="buildbox")
    assert code == 0, lines
    assert lines == ["null-ok", "16", "3", "dev-ok", "image-dev-hidden", host_resolv, "1",
                     "1", "proc-ok"]
    assert listing(rootfs, WATCHED) == before
    assert (rootfs / "etc" / "hosts").read_text() == "10.0.0.1 image-hosts\n"
    assert os.readlink(rootfs / "etc" / "resolv.conf") == "../run/systemd/resolve/stub-resolv.conf"
    assert [p.name for p in rootfs.parent.iterdir() if p.name.startswith(".kanipy")] == []


def test_a_step_writing_to_provided_paths_changes_nothing_in_the_image(rootfs: Path) -> None:
    _image_entries(rootfs)
    before = listing(rootfs, WATCHED)
    code, _ = unprivileged(rootfs, "echo 1.2.3.4 evil >> /etc/hosts; rm -rf /dev/*; "
                                   "echo x > /etc/resolv.conf; mkdir /proc/new; "
                                   "echo h > /etc/hostname")
    assert code == 0
    assert listing(rootfs, WATCHED) == before
    assert (rootfs / "dev" / "custom").read_text() == "image file in /dev\n"


def test_run_mounts_without_mounting(rootfs: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "previous").write_text("from the last build\n")
    os.chown(cache, 1000, 1000)
    source = tmp_path / "src"
    source.mkdir()
    (source / "input.txt").write_text("from the context\n")
    script = tmp_path / "script"
    script.write_text("#!/bin/sh\necho heredoc-ran\n")
    script.chmod(0o755)
    before = listing(rootfs, ["", "var", "mnt", "run", "etc"])
    runner = ChrootRunner(degraded=True)
    outcome, lines = run_step(rootfs, (
        "cat /var/cache/app/previous; stat -c '%u %a' /var/cache/app; echo new > "
        "/var/cache/app/added; cat /mnt/src/input.txt; echo scribble > /mnt/src/input.txt; "
        "stat -c '%a' /run/secrets/token; cat /run/secrets/token; echo; "
        "stat -c '%a' /tmp/scratch; ls -A /tmp/scratch | wc -l; echo gone > /tmp/scratch/f; "
        "/dev/pipes/script"), runner, extra_mounts=[
        Mount("/var/cache/app", "bind", cache),
        Mount("/mnt/src", "bind", source, readonly=True),
        Mount("/run/secrets/token", "secret", data=b"s3cret"),
        Mount("/tmp/scratch", "tmpfs"),
        Mount("/dev/pipes/script", "bind", script, readonly=True),
    ])
    assert (outcome.status, lines) == (0, ["from the last build", "1000 755",
                                           "from the context", "400", "s3cret", "1777", "0",
                                           "heredoc-ran"])
    assert sorted(p.name for p in cache.iterdir()) == ["added", "previous"]
    assert cache.stat().st_uid == 1000
    assert (source / "input.txt").read_text() == "from the context\n"
    assert listing(rootfs, ["", "var", "mnt", "run", "etc"]) == before
    assert not (rootfs / "var").exists() and not (rootfs / "mnt").exists()
    assert not (rootfs / "tmp" / "scratch").exists()
    assert {"/var/cache/app", "/mnt/src", "/run/secrets/token", "/tmp/scratch"} <= {
        str(p) for p in outcome.excluded}


def test_a_cache_on_another_filesystem_is_copied_in_and_back(rootfs: Path) -> None:
    shm = Path("/dev/shm")
    if not shm.is_dir() or os.stat(shm).st_dev == os.stat(rootfs).st_dev:
        pytest.skip("needs /dev/shm on another filesystem than the test's root")
    cache = shm / f"kanipy-test-cache-{os.getpid()}"
    cache.mkdir()
    try:
        (cache / "previous").write_text("kept\n")
        code, lines = unprivileged(rootfs, "cat /c/previous; echo 2 > /c/added",
                                   extra_mounts=[Mount("/c", "bind", cache)])
        assert (code, lines) == (0, ["kept"])
        assert sorted(p.name for p in cache.iterdir()) == ["added", "previous"]
        assert not (rootfs / "c").exists()
    finally:
        for p in cache.iterdir():
            p.unlink()
        cache.rmdir()


def test_a_chrooted_step_cannot_chroot_again_to_leave_the_root(rootfs: Path,
                                                               tmp_path: Path) -> None:
    # The classic escape: chroot into a subdirectory while the cwd stays
    # outside it, climb with .., chroot there. It needs CAP_SYS_CHROOT, which
    # a step that is only chrooted does not keep.
    marker = tmp_path / "escaped"
    code, lines = unprivileged(rootfs, (
        "mkdir -p /tmp/jail && chroot /tmp/jail /bin/true 2>&1; "
        f"cd / && chroot . /bin/sh -c 'echo out > {marker}' 2>&1; "
        "grep CapBnd /proc/self/status >/dev/null; echo done"))
    assert code == 0
    assert lines[-1] == "done"
    assert any("Operation not permitted" in line for line in lines), lines
    assert not marker.exists()


def test_a_mount_that_cannot_be_provided_fails_and_leaves_no_trace(rootfs: Path) -> None:
    (rootfs / "etc" / "motd").write_text("a file\n")
    before = listing(rootfs, ["", "etc"])
    with pytest.raises(BuildError, match="cannot provide tmpfs at /etc/motd/x"):
        unprivileged(rootfs, "true", extra_mounts=[Mount("/etc/motd/x", "tmpfs")])
    assert listing(rootfs, ["", "etc"]) == before


def test_provided_paths_are_never_followed_out_of_the_root(rootfs: Path,
                                                           tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (rootfs / "up").symlink_to("../../../../../../" + str(outside).lstrip("/"))
    code, _ = unprivileged(rootfs, "ls /up/t >/dev/null",
                           extra_mounts=[Mount("/up/t", "tmpfs")])
    assert code == 0
    assert list(outside.iterdir()) == []
    assert not (rootfs / str(outside).lstrip("/")).exists()
    mode = os.lstat(rootfs / "up").st_mode
    assert stat.S_ISLNK(mode)


def test_spec_env_never_holds_kanipy_environment(rootfs: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KANIPY_TEST_TOKEN", "leak-me")
    lines: list[bytes] = []
    outcome = ChrootRunner(degraded=True).run(
        RunSpec(rootfs, ["/bin/sh", "-c", "env; cat /proc/self/environ 2>/dev/null; true"]),
        lines.append)
    assert outcome.status == 0
    assert not any(b"leak-me" in line for line in lines)


def test_an_interrupted_step_still_puts_everything_back(rootfs: Path, tmp_path: Path) -> None:
    _image_entries(rootfs)
    before = listing(rootfs, WATCHED)
    cache = tmp_path / "cache"
    cache.mkdir()

    def on_output(line: bytes) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        ChrootRunner(degraded=True).run(
            RunSpec(rootfs, ["/bin/sh", "-c", "echo go; sleep 987658"],
                    extra_mounts=[Mount("/var/cache/c", "bind", cache)]), on_output)
    assert listing(rootfs, WATCHED) == before
    assert cache.is_dir() and not (rootfs / "var").exists()
    assert host_processes_with(b"987658") == []
    assert [p.name for p in rootfs.parent.iterdir() if p.name.startswith(".kanipy")] == []


def test_a_cache_recreated_by_another_build_meanwhile_gets_the_step_entries(
        rootfs: Path, tmp_path: Path) -> None:
    # Without mounts a cache directory is renamed into the root for the step;
    # a concurrent build sharing the cache finds it gone and makes a new one.
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "old").write_text("before\n")

    def on_output(line: bytes) -> None:
        if line == b"in-step":
            cache.mkdir()
            (cache / "theirs").write_text("other build\n")
            (rootfs / "tmp" / "go").touch()

    outcome = ChrootRunner(degraded=True).run(RunSpec(rootfs, ["/bin/sh", "-c", (
        "echo mine > /c/added; echo in-step; i=0; while [ ! -e /tmp/go ] && [ $i -lt 100 ]; "
        "do sleep 0.05; i=$((i+1)); done")], extra_mounts=[Mount("/c", "bind", cache)]),
        on_output)
    assert outcome.status == 0
    assert sorted(p.name for p in cache.iterdir()) == ["added", "old", "theirs"]
    assert not (rootfs / "c").exists()


@pytest.mark.parametrize(("path", "host"), [
    ("/dev/fd/63", "/proc/42/fd/63"),
    ("/dev/stdin", "/proc/42/fd/0"),
    ("/proc/self/status", "/proc/42/status"),
    ("/proc/self", "/proc/42"),
    ("/proc/thread-self/comm", "/proc/42/task/42/comm"),
    ("/proc/self/../1/environ", None),
    ("/proc/1/environ", None),
    ("/proc/cpuinfo", None),
    ("/dev/fd/../null", None),
    ("/etc/passwd", None),
    ("/proc/self/fd/3", "/proc/42/fd/3"),
    ("/proc/self/net/tcp", "/proc/42/net/tcp"),
    # Lookups that would go on from the step's root or cwd, as the init sees them.
    ("/proc/self/root/etc/shadow", None),
    ("/proc/self/cwd/x", None),
    ("/proc/self/fd/3/x", None),
    ("/proc/thread-self/root", None),
], ids=lambda v: str(v))
def test_only_the_opening_process_own_proc_entries_are_translated(path: str,
                                                                 host: str | None) -> None:
    assert host_path(path, 42) == host


def test_root_steps_get_a_live_proc_self_and_dev_fd(rootfs: Path) -> None:
    if not supported():
        pytest.skip("no seccomp user notification numbers for this architecture")
    code, lines = unprivileged(rootfs, (
        "head -1 /proc/self/status; cat /dev/fd/0 < /etc/group | head -1; "
        "cat /proc/self/root/etc/passwd 2>/dev/null || echo no-root-link; "
        "cat /proc/1/environ 2>/dev/null || echo no-pid-1"))
    assert (code, lines) == (0, ["Name:\thead", "root:x:0:", "no-root-link", "no-pid-1"])


def test_non_root_steps_keep_the_static_proc(rootfs: Path) -> None:
    code, lines = unprivileged(rootfs, "head -1 /proc/self/status; test -e /dev/fd/0 || "
                                       "echo no-dev-fd", uid=1000, gid=1000)
    assert code == 0
    assert lines[0] != "Name:\thead" and lines[1] == "no-dev-fd"
