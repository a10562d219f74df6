"""The live terminal view, driven through a pseudo-terminal on real builds (issue 12).

Each build runs ``kanipy`` in a child process whose stderr is a pty (stdout a
pipe, so the ``name@digest`` line is checked alone). The bytes it draws are
replayed through a small terminal model (cursor up, erase, carriage return),
which gives every frame the user saw and the screen left at the end.
"""

from __future__ import annotations

import fcntl
import io
import os
import pty
import re
import signal
import struct
import subprocess
import sys
import termios
from pathlib import Path

import pytest

from kanipy.console import TerminalReporter
from kanipy.oci.blobstore import BlobStore
from kanipy.oci.digest import Digest
from kanipy.reference import Reference
from kanipy.registry import RegistryClient, RegistryOptions
from kanipy.registry.progress import ProgressEvent
from kanipy.registry.pull import pull
from kanipy.registry.push import push
from tests.e2e.helpers import REPO, kanipy, run_tool, write_tree
from tests.fixtures.images import BaseImages
from tests.fixtures.registry import Registry
from tests.registry.images import random_image
from tests.terminal import HEIGHT, WIDTH, Screen, TerminalRun
from tests.terminal import on_a_terminal as run_on_a_terminal
from tests.tools import require_root

TEN_LINES = "for i in 1 2 3 4 5 6 7 8 9 10; do echo line-$i; done"


def on_a_terminal(args: list[str], env: dict[str, str] | None = None) -> TerminalRun:
    """Run ``kanipy ARGS`` as root with stderr on a 110x30 pseudo-terminal."""
    require_root()
    return run_on_a_terminal(args, env)


def _context(tmp_path: Path, base: str, *runs: str) -> Path:
    lines = [f"FROM {base}"] + [f"RUN {run}" for run in runs]
    return write_tree(tmp_path / "ctx", {"Dockerfile": "\n".join(lines) + "\n"})


def _no_colour(raw: bytes) -> bool:
    return re.search(rb"\x1b\[[0-9;]*m", raw) is None


@pytest.mark.parametrize("no_color", [None, "1"], ids=["colour", "NO_COLOR"])
def test_live_view_of_a_real_build_and_push(tmp_path: Path, registry: Registry,
                                            base_images: BaseImages,
                                            no_color: str | None) -> None:
    context = _context(tmp_path, base_images.oci, f"{TEN_LINES}; sleep 1.5", "echo done")
    dest = registry.ref(f"term/live:{'nocolor' if no_color else 'colour'}")
    env = {"NO_COLOR": no_color or ""}
    run = on_a_terminal(["build", "-c", str(context), "-d", dest], env)
    final = run.screen.lines
    assert run.status == 0, "\n".join(final)

    # stdout: the name@digest line alone, the digest the registry serves.
    digest = run_tool(["skopeo", "inspect", "--tls-verify=false", "--format", "{{.Digest}}",
                       f"docker://{dest}"]).strip()
    assert run.stdout == f"{dest.rsplit(':', 1)[0]}@{digest}\n"

    # While the RUN step ran: its line with the elapsed time, and its last 6 output lines.
    running = re.compile(r"=> \[1/1\] STEP 2/3: RUN for i in .* (\d+\.\d)s$")
    seen_seconds = set()
    tails = []
    for frame in run.screen.frames:
        for number, line in enumerate(frame):
            match = running.match(line.rstrip())
            if match:
                seen_seconds.add(match.group(1))
                tails.append([x.rstrip() for x in frame[number + 1:number + 7]])
    assert len(seen_seconds) >= 2, f"the elapsed time never changed: {seen_seconds}"
    expected_tail = [f"=> => # line-{i}" for i in range(5, 11)]
    assert expected_tail in tails, tails[-3:]

    # The end: each step collapsed into one line with its time, no output left.
    text = "\n".join(final)
    for step in ("STEP 1/3: FROM ", "STEP 2/3: RUN for i in", "STEP 3/3: RUN echo done"):
        assert re.search(rf"=> \[1/1\] {re.escape(step)}.* \d+\.\ds$", text, re.M), text
    assert not re.search(r"line-\d", text) and "=> => #" not in text, text
    assert f"=> pushed {dest}@{digest}" in text
    assert re.search(r"^\[\+\] Built in \d+\.\ds \(3 steps\)$", text, re.M), text
    # Colour only without NO_COLOR; cursor movement either way.
    assert _no_colour(run.raw) is bool(no_color)
    assert b"\x1b[J" in run.raw


def test_a_failed_step_keeps_its_whole_output_on_the_screen(
        tmp_path: Path, base_images: BaseImages) -> None:
    context = _context(tmp_path, base_images.oci, f"{TEN_LINES}; exit 3")
    run = on_a_terminal(["build", "-c", str(context), "--no-push"], {"NO_COLOR": "1"})
    assert run.status == 1
    final = [line.rstrip() for line in run.screen.lines if line.strip()]
    error = next(i for i, line in enumerate(final) if line.startswith("=> ERROR "))
    assert re.fullmatch(r"=> ERROR \[1/1\] STEP 2/2: RUN for i in .* \d+\.\ds", final[error])
    assert final[error + 1:error + 14] == [
        "------", " > [1/1] STEP 2/2: RUN " + TEN_LINES + "; exit 3:",
        *[f"   line-{i}" for i in range(1, 11)], "------"]
    assert final[-1].startswith("kanipy: error: ") and "exit" in final[-1]
    assert _no_colour(run.raw)


def _plain(text: str) -> str:
    """A plain log with its timings blanked, to compare two runs."""
    return re.sub(r"\d+\.\d\d", "T", text)


def test_without_a_terminal_the_log_is_the_plain_one(tmp_path: Path,
                                                     base_images: BaseImages) -> None:
    context = _context(tmp_path, base_images.oci, "echo one; echo two")
    piped = kanipy("build", "-c", str(context), "--no-push", env={"NO_COLOR": ""})
    assert piped.returncode == 0, piped.stderr
    assert "\x1b" not in piped.stderr
    lines = piped.stderr.splitlines()
    assert "[1/1] STEP 2/2: RUN echo one; echo two" in lines
    assert ["[1/1] STEP 2/2  | one", "[1/1] STEP 2/2  | two"] == \
        [line for line in lines if "  | " in line]
    # --progress=plain on a pipe and on a terminal: the same lines, byte for byte
    # but for the timings, and no cursor movement.
    asked = kanipy("build", "-c", str(context), "--no-push", "--progress=plain",
                   env={"NO_COLOR": ""})
    assert _plain(asked.stderr) == _plain(piped.stderr)
    run = on_a_terminal(["build", "-c", str(context), "--no-push", "--progress=plain",
                         "--log-format=text"])
    assert run.status == 0
    assert b"\x1b" not in run.raw
    drawn = run.raw.decode().replace("\r\n", "\n")
    assert _plain(drawn) == _plain(piped.stderr)


# -- the view's pieces, without a build -------------------------------------------------

def test_transfers_are_bars_with_bytes_and_rate() -> None:
    stream = io.StringIO()
    view = TerminalReporter(stream, width=100, height=20, interval=3600)
    layer = Digest.parse("sha256:" + "ab" * 32)
    other = Digest.parse("sha256:" + "cd" * 32)
    view.stage_started(1, 1, None, "registry.example/base:1")
    view.transfer(ProgressEvent(layer, 12_000_000, 40_000_000, "download"))
    view.transfer(ProgressEvent(other, 5_000, 5_000, "done"))
    lines = view._live_lines()
    assert lines[1].startswith("=> [1/1] STAGE FROM registry.example/base:1 ")
    assert lines[2] == "=> pulling 1/2 blobs, 12.0 MB / 40.0 MB"
    assert re.fullmatch(r"=> => download abababababab \[======> {13}\] 12\.0 MB / 40\.0 MB "
                        r"\d+\.\d [kMG]B/s", lines[3]), lines[3]
    assert len(lines) == 4, "a finished blob has no bar of its own"
    view.close()


def test_the_live_area_never_outgrows_the_terminal() -> None:
    view = TerminalReporter(io.StringIO(), width=60, height=5, interval=3600)
    view.stage_started(1, 1, None, "base")
    for n in range(10):
        view.transfer(ProgressEvent(Digest.parse("sha256:" + f"{n:02d}" * 32), 1, 2,
                                    "upload"))
    lines = view._live_lines()
    assert len(lines) == 4 and all(len(line) < 60 for line in lines)
    assert lines[2].startswith("=> pushing 0/10 blobs")
    view.close()


@pytest.mark.parametrize(("args", "no_color", "coloured"), [
    ([], "", False),
    (["--log-format=color"], "", True),
    (["--log-format=color"], "1", False),
], ids=["default", "color-asked", "color-asked-NO_COLOR"])
def test_colour_in_a_log_file_only_when_asked(tmp_path: Path, args: list[str], no_color: str,
                                              coloured: bool) -> None:
    context = write_tree(tmp_path / "ctx", {"Dockerfile": "FROM scratch\n"})
    result = kanipy("build", "-c", str(context), "--dry-run", "--force", *args,
                    env={"NO_COLOR": no_color})
    assert result.returncode == 0, result.stderr
    assert ("\x1b[34mINFO\x1b[0m --force has no effect" in result.stderr) is coloured
    assert ("\x1b" in result.stderr) is coloured


class _Frames(TerminalReporter):
    """The view with a frame taken at every transfer event, instead of by the clock."""

    def __init__(self) -> None:
        super().__init__(io.StringIO(), width=120, height=40, interval=3600)
        self.frames: list[list[str]] = []

    def transfer(self, event: ProgressEvent) -> None:
        super().transfer(event)
        self.frames.append(self._live_lines())


def test_a_real_push_and_pull_draw_bars(tmp_path: Path, registry: Registry,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))
    client = RegistryClient(RegistryOptions())
    image = random_image(BlobStore(tmp_path / "store"), [3_000_000])
    ref = Reference.parse(registry.ref("term/bars:1"))
    bar = re.compile(r"=> => (upload|download) [0-9a-f]{12} \[[=> ]{20}\] "
                     r"\d+(\.\d)? [kM]?B / 3\.0 MB \d+(\.\d)? [kMG]?B/s")

    pushing = _Frames()
    push(image.stored(), ref, client=client, on_progress=pushing.transfer)
    drawn = [line for frame in pushing.frames for line in frame]
    assert any(line.startswith("=> pushing 0/") for line in drawn), drawn
    assert any(bar.fullmatch(line) and "upload" in line for line in drawn), drawn
    pushing.close()

    pulling = _Frames()
    pulling.stage_started(1, 1, None, str(ref))
    pull(ref, client=client, store=BlobStore(tmp_path / "other"),
         on_progress=pulling.transfer)
    drawn = [line for frame in pulling.frames for line in frame]
    assert any(line.startswith("=> pulling 0/") for line in drawn), drawn
    assert any(bar.fullmatch(line) and "download" in line for line in drawn), drawn
    pulling.close()


def test_ctrl_c_leaves_the_interrupted_step_and_a_clean_screen(
        tmp_path: Path, base_images: BaseImages) -> None:
    require_root()
    context = _context(tmp_path, base_images.oci, "echo started; sleep 60")
    main, child = pty.openpty()
    fcntl.ioctl(child, termios.TIOCSWINSZ, struct.pack("HHHH", HEIGHT, WIDTH, 0, 0))
    proc = subprocess.Popen(
        [sys.executable, "-m", "kanipy", "build", "-c", str(context), "--no-push"],
        stdout=subprocess.PIPE, stderr=child, stdin=subprocess.DEVNULL,
        env={**os.environ, "PYTHONPATH": str(REPO), "TERM": "xterm", "NO_COLOR": "1"})
    os.close(child)
    raw = b""
    try:
        while b"=> => # started" not in raw:
            data = os.read(main, 65536)
            assert data, raw
            raw += data
        proc.send_signal(signal.SIGINT)
        while True:
            try:
                data = os.read(main, 65536)
            except OSError:
                break
            if not data:
                break
            raw += data
        status = proc.wait(timeout=60)
    finally:
        os.close(main)
        if proc.poll() is None:
            proc.kill()
    assert status == 130
    screen = Screen()
    screen.feed(raw)
    final = [line.rstrip() for line in screen.lines if line.strip()]
    error = next(i for i, line in enumerate(final) if line.startswith("=> ERROR "))
    assert re.fullmatch(r"=> ERROR \[1/1\] STEP 2/2: RUN echo started; sleep 60 +\d+\.\ds",
                        final[error]), final
    assert final[error + 1:] == ["------", " > [1/1] STEP 2/2: RUN echo started; sleep 60:",
                                 "   started", "------", "kanipy: interrupted"], final
    assert not any(line.startswith("[+] Building") for line in final), final


def test_progress_tty_draws_the_view_on_a_pipe_and_term_dumb_gets_plain(
        tmp_path: Path) -> None:
    context = write_tree(tmp_path / "ctx", {"Dockerfile": "FROM scratch\nENV A=1\n"})
    forced = kanipy("build", "-c", str(context), "--no-push", "--progress=tty",
                    env={"NO_COLOR": "1"})
    assert forced.returncode == 0, forced.stderr
    screen = Screen()
    screen.feed(forced.stderr.replace("\n", "\r\n").encode())  # as a terminal shows it
    final = [line.rstrip() for line in screen.lines if line.strip()]
    assert re.fullmatch(r"=> \[1/1\] STEP 2/2: ENV A=1 +\d+\.\ds", final[-2]), final
    assert re.fullmatch(r"\[\+\] Built in \d+\.\ds \(2 steps\)", final[-1]), final

    dumb = on_a_terminal(["build", "-c", str(context), "--no-push"],
                         {"TERM": "dumb", "NO_COLOR": "1"})
    assert dumb.status == 0
    assert b"\x1b" not in dumb.raw
    assert "[1/1] STEP 2/2: ENV A=1\r\n" in dumb.raw.decode()
