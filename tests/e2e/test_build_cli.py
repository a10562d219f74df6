"""The command line end to end: exit codes and messages, --dry-run, --no-push, progress."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.e2e.build_support import processes_matching, tag_exists
from tests.e2e.helpers import REPO, build, write_tree
from tests.fixtures.images import BaseImages
from tests.fixtures.registry import Registry, free_port
from tests.terminal import on_a_terminal


def test_dry_run_prints_the_plan_without_a_registry(tmp_path: Path) -> None:
    unreachable = f"127.0.0.1:{free_port()}"
    context = write_tree(tmp_path / "ctx", {"Dockerfile": (
        f"FROM {unreachable}/base/image:1 AS builder\n"
        "ARG NAME=world\n"
        "ENV GREETING=hello-$NAME\n"
        "RUN echo $GREETING\n"
        "FROM scratch\n"
        "COPY --from=builder /x /y\n"
    )})
    result = build(context, "--dry-run", "-d", f"{unreachable}/out:1")
    assert result.returncode == 0, result.stderr
    out = result.stdout + result.stderr
    assert "ENV GREETING=hello-world" in out
    assert "RUN echo $GREETING" in out, "shell-form RUN is left to the shell"
    assert "builder" in out and "scratch" in out
    assert "COPY --from=builder /x /y" in out


def test_an_unused_build_arg_is_warned_about_once_naming_the_dockerfile(tmp_path: Path) -> None:
    context = write_tree(tmp_path / "ctx", {"Dockerfile": "FROM scratch\nARG USED\n"})
    result = build(context, "--dry-run", "--no-push", "--build-arg", "USED=1",
                   "--build-arg", "NPM_TOKEN=s3cr3t")
    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if "NPM_TOKEN" in line]
    assert len(warnings) == 1, result.stderr
    assert "not consumed by any ARG in Dockerfile" in warnings[0]
    assert "USED" not in warnings[0]


def _failing(tmp_path: Path, registry: Registry, base_images: BaseImages):  # type: ignore[no-untyped-def]
    ok = f"FROM {base_images.oci}\nRUN true\n"
    return [
        ("bad-destination", ok, ["-d", f"{registry.host}/Bad Name:tag"], 2, ["Bad Name"]),
        ("bad-destination-tag", ok, ["-d", f"{registry.host}/ok/repo:bad:tag!"], 2,
         ["bad:tag!"]),
        ("syntax-error", f"FROM {base_images.oci}\nRUN true\nFROBNICATE now\n",
         ["-d", registry.ref("e2e/cli:x")], 3, ["Dockerfile:3:", "FROBNICATE"]),
        ("missing-base", f"FROM {registry.host}/nope/missing:1\nRUN true\n",
         ["-d", registry.ref("e2e/cli:x")], 4, [registry.host, "nope/missing"]),
        ("missing-context", ok, ["--context", str(tmp_path / "absent"),
                                 "-d", registry.ref("e2e/cli:x")], 2, ["absent"]),
        ("no-destination", ok, [], 2, ["--destination"]),
        ("unreachable-destination", ok, ["-d", f"127.0.0.1:{free_port()}/app:1",
                                         "--push-retry", "0"], 4,
         ["push to 127.0.0.1:", "connection refused", "--insecure-registry"]),
        ("unreachable-base", f"FROM 127.0.0.1:{free_port()}/base:1\n",
         ["--no-push", "--push-retry", "0"], 4,
         ["FROM on Dockerfile:1", "connection refused"]),
    ]


CASES = ["bad-destination", "bad-destination-tag", "syntax-error", "missing-base",
         "missing-context", "no-destination", "unreachable-destination", "unreachable-base"]


@pytest.mark.parametrize("case", CASES)
def test_errors_exit_with_their_code(tmp_path: Path, registry: Registry,
                                     base_images: BaseImages, case: str) -> None:
    table = {c[0]: c[1:] for c in _failing(tmp_path, registry, base_images)}
    dockerfile, flags, code, words = table[case]
    context = write_tree(tmp_path / "ctx", {"Dockerfile": dockerfile})
    result = build(context, *flags)
    assert result.returncode == code, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""
    last = result.stderr.strip().splitlines()[-1]
    for word in words:
        assert word in last, last
    assert not tag_exists(registry.ref("e2e/cli:x"))


def test_no_push_pushes_nothing_and_prints_the_digest(
        tmp_path: Path, registry: Registry, base_images: BaseImages) -> None:
    context = write_tree(tmp_path / "ctx", {"Dockerfile": (
        f"FROM {base_images.oci}\nRUN echo x > /x\n")})
    dest = registry.ref("e2e/no-push:latest")
    result = build(context, "--no-push", "-d", dest).check()
    assert re.fullmatch(r"sha256:[0-9a-f]{64}\n", result.stdout), result.stdout
    assert "e2e/no-push" not in registry.catalog()


def test_progress_lines_summary_and_clean_stdout(
        tmp_path: Path, registry: Registry, base_images: BaseImages) -> None:
    context = write_tree(tmp_path / "ctx", {
        "Dockerfile": (
            f"FROM {base_images.oci}\n"
            "ENV A=1\n"
            "RUN echo step-output > /f\n"
            "COPY file.txt /file.txt\n"
            "CMD [\"sh\"]\n"
        ),
        "file.txt": "x\n",
    })
    dest = registry.ref("e2e/progress:latest")
    result = build(context, "-d", dest).check()
    assert re.fullmatch(rf"{re.escape(registry.host)}/e2e/progress@sha256:[0-9a-f]{{64}}\n",
                        result.stdout), result.stdout
    lines = result.stderr.splitlines()
    assert "[1/1] STEP 1/5: FROM " + base_images.oci in lines
    assert "[1/1] STEP 3/5: RUN echo step-output > /f" in lines
    assert "[1/1] STEP 3/5  | " not in result.stderr  # the RUN printed nothing
    header = [i for i, line in enumerate(lines) if line.split()[:3] == ["step", "seconds", "layer"]]
    assert header, result.stderr
    table = lines[header[0] + 1:]
    assert any(row.startswith("[1/1] STEP 3/5: RUN echo step-output") for row in table)
    assert any(row.startswith("total") for row in table)
    assert sum(1 for line in lines if line.startswith("pushed ")) == 1, result.stderr


def test_every_destination_gets_the_image(tmp_path: Path, registry: Registry,
                                          base_images: BaseImages) -> None:
    context = write_tree(tmp_path / "ctx", {"Dockerfile": (
        f"FROM {base_images.oci}\nRUN echo x > /x\n")})
    first, second = registry.ref("e2e/multi-dest-a:1"), registry.ref("e2e/multi-dest-b:2")
    result = build(context, "-d", first, "-d", second).check()
    lines = result.stdout.splitlines()
    assert len(lines) == 2, result.stdout
    assert lines[0].startswith(f"{registry.host}/e2e/multi-dest-a@sha256:")
    assert lines[1].startswith(f"{registry.host}/e2e/multi-dest-b@sha256:")
    assert lines[0].split("@")[1] == lines[1].split("@")[1]
    assert tag_exists(first) and tag_exists(second)


def test_live_transfer_line_on_a_terminal(tmp_path: Path, registry: Registry,
                                          base_images: BaseImages) -> None:
    """On a TTY pulls and pushes draw bars in the live view; the push counts only its blobs."""
    context = write_tree(tmp_path / "ctx", {"Dockerfile": (
        f"FROM {base_images.docker}\nRUN echo x > /x\n")})
    dest = registry.ref("e2e/tty:latest")
    run = on_a_terminal(["build", "-c", str(context), "-d", dest])
    assert run.status == 0, run.raw.decode(errors="replace")
    assert run.stdout.startswith(f"{registry.host}/e2e/tty@sha256:")
    screen = run.screen
    drawn = [line.rstrip() for frame in screen.frames for line in frame]
    assert any(re.match(r"=> => download [0-9a-f]{12} \[", line) for line in drawn), drawn
    # The push's frames (after the last step collapsed) count only the push's blobs.
    pushing = [line for line in drawn if line.startswith("=> pushing ")]
    counts = [int(m.group(1)) for m in map(re.compile(r"=> pushing \d+/(\d+) blobs").match,
                                           pushing) if m]
    assert counts and max(counts) <= 3, pushing  # config + base layer + RUN layer


@pytest.mark.parametrize("signum", [
    pytest.param(signal.SIGINT, id="SIGINT"),
    pytest.param(signal.SIGTERM, id="SIGTERM"),
])
def test_an_interrupted_build_cleans_up(tmp_path: Path, registry: Registry,
                                        base_images: BaseImages, signum: int) -> None:
    """A CI job cancelled mid-RUN: kanipy exits promptly, the step's processes and the
    work directory are gone."""
    marker = f"sleep 43{signum}{os.getpid() % 1000}"
    context = write_tree(tmp_path / "ctx", {"Dockerfile": (
        f"FROM {base_images.oci}\nRUN echo step-started && {marker}\n")})
    work = tmp_path / "work"
    scratch = tmp_path / "tmp"  # TMPDIR: the runner's per-step files land here
    scratch.mkdir()
    proc = subprocess.Popen(
        [sys.executable, "-m", "kanipy", "build", "-c", str(context),
         "-d", registry.ref("e2e/interrupted:x"), "--kanipy-dir", str(work)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(REPO), "TMPDIR": str(scratch)},
        # A shell's background job inherits SIGINT ignored; a CI runner's child does not.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + 60
        while not processes_matching(marker):
            assert time.monotonic() < deadline, "the RUN step never started"
            time.sleep(0.1)
        proc.send_signal(signum)
        proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode != 0
    deadline = time.monotonic() + 5  # the helper and the step die with kanipy (PDEATHSIG)
    while processes_matching(marker) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert processes_matching(marker) == []
    assert list(work.iterdir()) == [], "the work directory must not outlive the build"
    assert list(scratch.iterdir()) == [], "nor the runner's temporary files"
    assert not tag_exists(registry.ref("e2e/interrupted:x"))


def test_a_later_build_removes_what_a_killed_build_left(
        tmp_path: Path, registry: Registry, base_images: BaseImages) -> None:
    """SIGKILL (the OOM killer, a runner's hard timeout) gives kanipy no chance to
    clean up: the next build in the same --kanipy-dir removes the killed one's root."""
    marker = f"sleep 4309{os.getpid() % 1000}"
    context = write_tree(tmp_path / "ctx", {"Dockerfile": (
        f"FROM {base_images.oci}\nRUN echo started > /started && {marker}\n")})
    work = tmp_path / "work"
    scratch = tmp_path / "tmp"  # TMPDIR: nothing of a step may be left here
    scratch.mkdir()
    proc = subprocess.Popen(
        [sys.executable, "-m", "kanipy", "build", "-c", str(context),
         "-d", registry.ref("e2e/killed:x"), "--kanipy-dir", str(work)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(REPO), "TMPDIR": str(scratch)})
    try:
        deadline = time.monotonic() + 60
        while not processes_matching(marker):
            assert time.monotonic() < deadline, "the RUN step never started"
            time.sleep(0.1)
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert list(scratch.iterdir()) == [], "the step's files live in the build directory"
    left = list(work.iterdir())
    assert len(left) == 1 and list(left[0].rglob("started")), \
        "SIGKILL leaves the killed build's directory, its root included"
    quick = write_tree(tmp_path / "ctx2", {"Dockerfile": f"FROM {base_images.oci}\nENV A=1\n"})
    build(quick, "-d", registry.ref("e2e/after-kill:x"), "--kanipy-dir", str(work)).check()
    deadline = time.monotonic() + 30  # removed by that build or the remover it leaves
    while list(work.iterdir()) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert list(work.iterdir()) == []


def test_json_log_format_writes_only_json_lines(
        tmp_path: Path, registry: Registry, base_images: BaseImages) -> None:
    """A log collector parsing --log-format json must never meet a plain-text line."""
    context = write_tree(tmp_path / "ctx", {"Dockerfile": (
        f"FROM {base_images.oci}\nRUN echo from-the-step\n")})
    result = build(context, "--log-format", "json", "--build-arg", "UNUSED=1",
                   "-d", registry.ref("e2e/json-log:latest")).check()
    records = [json.loads(line) for line in result.stderr.splitlines()]
    messages = [r["msg"] for r in records]
    assert any(m.endswith("| from-the-step") for m in messages), messages
    assert any("UNUSED" in r["msg"] and r["level"] == "warning" for r in records), records
    assert any(m.startswith("[1/1] STEP 2/2: RUN echo from-the-step") for m in messages)
