"""kanipy run with its stderr on a pseudo-terminal, and a small terminal model
(cursor up, erase, carriage return) that replays what it drew: every frame a
user saw and the screen left at the end. Used by the live-view and colour tests.
"""

from __future__ import annotations

import fcntl
import os
import pty
import re
import struct
import subprocess
import sys
import termios
from dataclasses import dataclass, field

from tests.e2e.helpers import REPO

WIDTH, HEIGHT = 110, 30
ESC = re.compile(rb"\x1b\[([0-9;?]*)([A-Za-z])")


@dataclass
class Screen:
    """A terminal of unlimited height: what a user sees, frame by frame."""

    lines: list[str] = field(default_factory=lambda: [""])
    row: int = 0
    col: int = 0
    frames: list[list[str]] = field(default_factory=list)  # the screen before each erase

    def feed(self, data: bytes) -> None:
        pos = 0
        while pos < len(data):
            match = ESC.match(data, pos)
            if match:
                arg, command = match.group(1).decode(), match.group(2)
                if command == b"A":
                    self.row = max(0, self.row - int(arg or 1))
                elif command == b"J":
                    self.frames.append(list(self.lines))
                    self.lines[self.row] = self.lines[self.row][: self.col]
                    del self.lines[self.row + 1:]
                elif command == b"K":
                    self.lines[self.row] = self.lines[self.row][: self.col]
                pos = match.end()  # SGR (m) and others draw nothing
                continue
            char = data[pos:pos + 1]
            pos += 1
            if char == b"\r":
                self.col = 0
            elif char == b"\n":
                self.row += 1
                if self.row == len(self.lines):
                    self.lines.append("")
            else:
                text = self.lines[self.row].ljust(self.col)
                self.lines[self.row] = text[: self.col] + char.decode("latin-1") \
                    + text[self.col + 1:]
                self.col += 1


@dataclass
class TerminalRun:
    status: int
    stdout: str
    raw: bytes
    screen: Screen


def on_a_terminal(args: list[str], env: dict[str, str] | None = None,
                  timeout: float = 120) -> TerminalRun:
    """Run ``kanipy ARGS`` with stderr on a WIDTHxHEIGHT pseudo-terminal (stdout a
    pipe, so the ``name@digest`` line is read alone); ``TERM`` is xterm unless
    ``env`` says otherwise."""
    main, child = pty.openpty()
    fcntl.ioctl(child, termios.TIOCSWINSZ, struct.pack("HHHH", HEIGHT, WIDTH, 0, 0))
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "kanipy", *args], stdout=subprocess.PIPE, stderr=child,
            stdin=subprocess.DEVNULL,
            env={**os.environ, "PYTHONPATH": str(REPO), "TERM": "xterm", **(env or {})})
        os.close(child)
        chunks = []
        while True:
            try:
                data = os.read(main, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not data:
                break
            chunks.append(data)
        assert proc.stdout is not None
        stdout = proc.stdout.read().decode()
        status = proc.wait(timeout=timeout)
    finally:
        os.close(main)
    raw = b"".join(chunks)
    screen = Screen()
    screen.feed(raw)
    return TerminalRun(status, stdout, raw, screen)
