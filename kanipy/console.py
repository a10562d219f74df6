"""The live terminal view of a build, drawn as BuildKit draws ``docker build`` on a terminal.

The CLI picks it when stderr is a terminal (``--progress=auto``) or when asked
(``--progress=tty``); CI logs and ``--progress=plain`` get the plain lines of
``kanipy.cli.ConsoleReporter`` instead. At the bottom of the terminal a live
area shows the running step with its elapsed time, the last few lines of its
output, and one bar per blob being pulled or pushed with bytes and rate; a
thread redraws it about ten times a second by moving the cursor up over it
(``ESC [ n A``) and erasing to the end of the screen (``ESC [ J``). Everything
above that area is printed once and never redrawn: each finished step
collapses into one line (``=> [1/2] STEP 3/5: RUN make  1.2s`` or ``=> CACHED
...``), log records appear as they come. When a step fails, its output (up
to the last ``KEEP_LINES`` lines) is printed in full above the error, as
BuildKit prints a failed step's log.

Colour (the finished lines blue, a failure red, output dim) is the caller's
choice, so NO_COLOR is decided in one place (``kanipy.cli.use_colour``).
Cursor movement is not colour: it is what makes the view live, and it stays
under NO_COLOR, as BuildKit's does.
"""

from __future__ import annotations

import collections
import os
import re
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from kanipy.executor.progress import StepInfo, StepSummary, human_bytes
from kanipy.registry.progress import ProgressEvent

TAIL_LINES = 6  # output lines shown under the running step
KEEP_LINES = 200  # output lines kept for a failed step's report
INTERVAL = 0.1  # seconds between redraws
BAR_WIDTH = 20
_DONE_PHASES = ("done", "exists", "mounted")
# C0 controls and DEL, but not tab: a program's own escape codes (colour,
# cursor movement) would break the view's arithmetic, so they are dropped.
_CONTROL = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|[\x00-\x08\x0b-\x1f\x7f]")


def clean_output(line: bytes) -> str:
    """One line of a step's output as the view shows it: its last ``\\r`` segment, no controls.

    A progress bar drawn with ``\\r`` (curl, apt) shows its latest state.
    """
    text = line.decode("utf-8", "replace").rstrip("\r\n")
    text = text.rsplit("\r", 1)[-1]
    return _CONTROL.sub("", text.expandtabs(4))


def step_text(step: StepInfo) -> str:
    """A step as one line of the view; a control character would break its arithmetic."""
    return _CONTROL.sub(" ", f"{step.label}: {step.text}")


@dataclass
class _Blob:
    phase: str
    done: int
    total: int
    started: float
    finished: bool = False


@dataclass
class _Running:
    """The entry under way: a stage's pull of its base, or a step."""

    text: str
    started: float
    step: StepInfo | None = None
    output: collections.deque[str] = field(
        default_factory=lambda: collections.deque(maxlen=KEEP_LINES))
    dropped: int = 0  # output lines older than the kept ones


class TerminalReporter:
    """A ``BuildReporter`` that draws the live view on a terminal (see the module doc).

    Events may come from download and upload threads; one lock guards the
    state and every write, so a frame is never interleaved with a log line.
    ``log_stream`` is where the CLI's logging handler writes, so log records
    land above the live area instead of through it.
    """

    def __init__(self, stream: Any, *, colour: bool = False, timestamps: bool = False,
                 width: int | None = None, height: int | None = None,
                 interval: float = INTERVAL) -> None:
        self.stream = stream
        self.colour = colour
        self.timestamps = timestamps
        self._fixed_size = (width, height)
        self.interval = interval
        self._lock = threading.RLock()
        self._started = time.monotonic()
        self._pending: list[str] = []  # lines to print once, above the live area
        self._drawn = 0  # lines of the live area now on the screen
        # The entry under way in each stage, by stage number, in the order they
        # started: stages may be built at the same time (--jobs).
        self._running: dict[int, _Running] = {}
        self._blobs: dict[str, _Blob] = {}
        self._steps_done = 0
        self._steps_cached = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._closed = False
        self.log_stream = _LogStream(self)

    # -- the BuildReporter protocol ------------------------------------------------------

    def stage_started(self, number: int, count: int, name: str | None, base: str) -> None:
        label = f" {name}" if name else ""
        with self._lock:
            self._ensure_thread()
            self._running[number] = _Running(f"[{number}/{count}] STAGE{label} FROM {base}",
                                             time.monotonic())

    def step_started(self, step: StepInfo) -> None:
        with self._lock:
            self._ensure_thread()
            # The FROM step's time is the pull: keep the stage's clock for it.
            started = time.monotonic()
            stage = self._running.get(step.stage_number)
            if step.step_number == 1 and stage is not None and stage.step is None:
                started = stage.started
            self._running[step.stage_number] = _Running(step_text(step), started, step)

    def step_output(self, step: StepInfo, line: bytes) -> None:
        with self._lock:
            running = self._running.get(step.stage_number)
            if running is None:
                return
            if len(running.output) == running.output.maxlen:
                running.dropped += 1
            running.output.append(clean_output(line))

    def step_finished(self, summary: StepSummary) -> None:
        with self._lock:
            self._steps_done += 1
            text = step_text(summary.step)
            if summary.cached:
                self._steps_cached += 1
                line = self._paint(f"=> CACHED {text}", "34")
            else:
                line = self._paint(f"=> {text}", "34")
            self._emit(self._with_time(line, len(f"=> {text}") + 7 * summary.cached,
                                       summary.seconds))
            self._running.pop(summary.step.stage_number, None)
            self._clear_blobs()

    def stage_stopped(self, number: int) -> None:
        """A stage stopped because another failed: ``=> CANCELED`` as BuildKit shows it."""
        with self._lock:
            running = self._running.pop(number, None)
            if running is not None:
                head = f"=> CANCELED {running.text}"
                self._emit(self._with_time(self._paint(head, "33"), len(head),
                                           time.monotonic() - running.started))
            self._clear_blobs()

    def _clear_blobs(self) -> None:
        """Forget the finished transfers (all of them once no stage is under way)."""
        if not self._running:
            self._blobs.clear()
            return
        for key in [k for k, blob in self._blobs.items() if blob.finished]:
            del self._blobs[key]

    def transfer(self, event: ProgressEvent) -> None:
        with self._lock:
            self._ensure_thread()
            key = str(event.digest)
            blob = self._blobs.get(key)
            new = blob is None
            if blob is None:
                blob = self._blobs[key] = _Blob(event.phase, event.done, event.total,
                                                time.monotonic())
            if event.phase in _DONE_PHASES:
                blob.finished = True
                blob.done = event.total
                if blob.phase not in ("download", "upload"):
                    blob.phase = event.phase
            else:
                blob.phase = event.phase
                blob.done = event.done
            blob.total = event.total
            if new and not self._closed:
                # Every blob gets at least one frame, however fast it moves: a
                # local pull is over before the clock's next redraw.
                self._flush_frame()

    def pushed(self, reference: str, digest: str) -> None:
        with self._lock:
            self._blobs.clear()
            self._emit(self._paint(f"=> pushed {reference}@{digest}", "34"))

    def finished(self, summaries: list[StepSummary]) -> None:
        """Nothing to add: every step already has its collapsed line."""

    # -- the end of a build (called by the CLI) -------------------------------------------

    def built(self, digest: str | None, pushed: list[str]) -> None:
        if not self._steps_done:  # --dry-run: the plan is on stdout
            self.close()
            return
        cached = f", {self._steps_cached} cached" if self._steps_cached else ""
        self.close(f"[+] Built in {time.monotonic() - self._started:.1f}s "
                   f"({_steps(self._steps_done)}{cached})")

    def failed(self, failure: Any) -> None:
        """Leave the failed entry and its whole kept output on the screen, then the error."""
        with self._lock:
            self._stop_thread()
            # The failed entry: the one left under way (the stages stopped because of
            # it were shown CANCELED); after a signal, every one it interrupted.
            for running in self._running.values():
                seconds = time.monotonic() - running.started
                head = f"=> ERROR {running.text}"
                self._emit(self._with_time(self._paint(head, "31"), len(head), seconds))
                if running.output:
                    self._emit("------")
                    self._emit(f" > {running.text}:")
                    if running.dropped:
                        self._emit(self._paint(f"   ({running.dropped} earlier lines not "
                                               "shown)", "2"))
                    for text in running.output:
                        self._emit(f"   {text}")
                    self._emit("------")
            self._running.clear()
            self._blobs.clear()
            traceback = failure.fields.get("traceback")
            if traceback:
                self._emit(traceback.rstrip("\n"))
            self._emit(f"{self._paint('kanipy:', '31')} {failure.message}")
            self._flush_frame(final=True)
            self._closed = True

    def close(self, last_line: str | None = None) -> None:
        """Stop redrawing; print what is pending and ``last_line``; erase the live area."""
        with self._lock:
            if self._closed:
                return
            self._stop_thread()
            self._running.clear()
            self._blobs.clear()
            if last_line:
                self._emit(last_line)
            self._flush_frame(final=True)
            self._closed = True

    # -- drawing -----------------------------------------------------------------------

    def log_line(self, text: str) -> None:
        """A log record's text, printed above the live area."""
        with self._lock:
            for line in text.split("\n"):
                self._pending.append(line)
            if self._closed or self._thread is None:
                self._flush_frame(final=self._closed)

    def _emit(self, line: str) -> None:
        if self.timestamps:
            line = time.strftime("%Y-%m-%dT%H:%M:%SZ ", time.gmtime()) + line
        self._pending.append(line)

    def _paint(self, text: str, sgr: str) -> str:
        return f"\x1b[{sgr}m{text}\x1b[0m" if self.colour else text

    def _size(self) -> tuple[int, int]:
        width, height = self._fixed_size
        if width and height:
            return width, height
        try:
            size = os.get_terminal_size(self.stream.fileno())
            columns, lines = size.columns, size.lines
        except (AttributeError, OSError, ValueError):
            columns = lines = 0
        # A terminal that reports no size (a new pty, some CI "terminals") is 80x24.
        return width or columns or 80, height or lines or 24

    def _with_time(self, line: str, visible: int, seconds: float) -> str:
        """``line`` with ``seconds`` right-aligned at the terminal's edge."""
        stamp = f"{seconds:.1f}s"
        width = self._size()[0]
        gap = max(2, width - 1 - visible - len(stamp))
        return f"{line}{' ' * gap}{stamp}"

    def _live_lines(self) -> list[str]:
        """The live area: a header, the running entry, its output tail, transfer bars."""
        width, height = self._size()
        now = time.monotonic()
        room = max(1, width - 1)
        lines = [f"[+] Building {now - self._started:.1f}s ({_steps(self._steps_done)} done)"]
        # Stages built at once share the output lines under their steps.
        tail = max(2, TAIL_LINES // len(self._running)) if self._running else 0
        for running in self._running.values():
            head = f"=> {running.text}"
            stamp = f"{now - running.started:.1f}s"
            if len(head) + 2 + len(stamp) > room:
                head = head[: max(1, room - len(stamp) - 3)] + "…"
            lines.append(f"{head}{' ' * (room - len(head) - len(stamp))}{stamp}")
            for text in list(running.output)[-tail:]:
                lines.append(self._paint(f"=> => # {text}"[:room], "2"))
        blobs = [(key, blob) for key, blob in self._blobs.items()]
        active = [(k, b) for k, b in blobs if not b.finished]
        finished = len(blobs) - len(active)
        if blobs:
            done = sum(b.done for _, b in blobs)
            total = sum(b.total for _, b in blobs)
            phases = {b.phase for _, b in blobs}
            # Blobs already at the registry are "exists" or "mounted": a push all the
            # same when no step or stage is under way (pushes come after the last step).
            verb = "pushing" if "upload" in phases or (
                "download" not in phases and not self._running) else "pulling"
            lines.append(f"=> {verb} {finished}/{len(blobs)} blobs, {human_bytes(done)} / "
                         f"{human_bytes(total)}"[:room])
            for key, blob in active[:TAIL_LINES]:
                lines.append(_bar(key, blob, now)[:room])
        # Never more lines than the terminal has: the cursor cannot go up past its top.
        return lines[: max(1, height - 1)]

    def _flush_frame(self, final: bool = False) -> None:
        """Erase the live area, print pending lines, draw the live area again (unless final)."""
        parts = []
        if self._drawn:
            parts.append("\r")
            if self._drawn > 1:
                parts.append(f"\x1b[{self._drawn - 1}A")
            parts.append("\x1b[J")
        for line in self._pending:
            parts.append(line + "\n")
        self._pending.clear()
        live = [] if final else self._live_lines()
        parts.append("\n".join(live))
        self._drawn = len(live)
        try:
            self.stream.write("".join(parts))
            self.stream.flush()
        except (OSError, ValueError):  # the terminal went away: stop drawing
            self._stop.set()

    def _ensure_thread(self) -> None:
        if self._thread is None and not self._closed:
            self._thread = threading.Thread(target=self._redraw, name="kanipy-progress",
                                            daemon=True)
            self._thread.start()

    def _stop_thread(self) -> None:
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            # The thread takes the lock to draw; release it while waiting.
            self._lock.release()
            try:
                thread.join(timeout=2)
            finally:
                self._lock.acquire()

    def _redraw(self) -> None:
        while not self._stop.wait(self.interval):
            with self._lock:
                if self._stop.is_set():
                    return
                self._flush_frame()


def _steps(count: int) -> str:
    return f"{count} step{'' if count == 1 else 's'}"


def _bar(key: str, blob: _Blob, now: float) -> str:
    """``=> => download sha256:0123abcd [=====>    ] 12.0 MB / 40.0 MB 5.1 MB/s``"""
    fraction = blob.done / blob.total if blob.total else 0.0
    filled = min(BAR_WIDTH, int(fraction * BAR_WIDTH))
    bar = "=" * filled + (">" if filled < BAR_WIDTH else "") + " " * (BAR_WIDTH - filled - 1)
    elapsed = max(now - blob.started, 1e-3)
    rate = human_bytes(blob.done / elapsed)
    short = key.split(":", 1)[-1][:12]
    return (f"=> => {blob.phase} {short} [{bar[:BAR_WIDTH]}] {human_bytes(blob.done)} / "
            f"{human_bytes(blob.total)} {rate}/s")


class _LogStream:
    """A file-like sink for a logging handler: whole lines go above the live area."""

    def __init__(self, reporter: TerminalReporter) -> None:
        self._reporter = reporter
        self._partial = ""

    def write(self, text: str) -> int:
        text = self._partial + text
        *lines, self._partial = text.split("\n")
        if lines:
            self._reporter.log_line("\n".join(lines))
        return len(text)

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return True
