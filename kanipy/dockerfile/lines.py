"""Dockerfile text -> logical lines: parser directives, continuations, comments, heredocs.

Instruction boundaries follow BuildKit's parser (frontend/dockerfile/parser): parser
directives at the top (``# escape=``), comment lines dropped even inside a continuation,
empty lines inside a continuation skipped rather than ending the instruction, and
heredoc bodies (``heredocs.py``) read after the line for RUN, COPY and ADD.
dockerfile-parse agrees with this for plain files but ends an instruction at an empty or
comment line inside a continuation and reads heredoc bodies as instructions, so we split
lines ourselves; tests/dockerfile compare the two on files where both rules apply.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

from kanipy.dockerfile.heredocs import heredocs_in, read_bodies, takes_heredocs
from kanipy.dockerfile.instructions import Heredoc
from kanipy.dockerfile.lex import ShellLexer
from kanipy.dockerfile.values import SyntaxProblem
from kanipy.errors import DockerfileError
from kanipy.fieldwise import Fieldwise

log = logging.getLogger(__name__)

_DIRECTIVE = re.compile(r"^#\s*([a-zA-Z][a-zA-Z0-9]*)\s*=\s*(.+?)\s*$")


@dataclass(frozen=True, repr=False, eq=False)
class LogicalLine(Fieldwise):
    """One instruction's text: continuation lines joined, heredoc bodies alongside."""

    line: int
    text: str
    heredocs: tuple[Heredoc, ...] = ()


def _is_comment(line: str) -> bool:
    return line.lstrip(" \t").startswith("#")


def split_lines(text: str, filename: str = "Dockerfile") -> tuple[str, list[LogicalLine]]:
    """The escape character and the logical lines of a Dockerfile."""
    lines = text.replace("\r\n", "\n").split("\n")
    if lines and lines[0].startswith("\ufeff"):
        lines[0] = lines[0][1:]
    for number, raw in enumerate(lines, start=1):
        if "\0" in raw:
            # No path, command or variable can hold a NUL (the kernel takes C strings);
            # refused here, with its line, rather than wherever it would break later.
            raise DockerfileError(
                "this line contains a NUL character (\\0): remove it (is this a "
                "binary file, or a text file in UTF-16?)", number, filename)
    escape, i = _directives(lines, filename)
    continuation = re.compile(re.escape(escape) + r"[ \t]*$")
    out: list[LogicalLine] = []
    lexer = ShellLexer("\\")
    while i < len(lines):
        raw = lines[i]
        i += 1
        start = i
        body = raw.lstrip(" \t")
        if not body.strip() or _is_comment(body):
            continue
        joined, cont = _trim_continuation(body, continuation)
        while cont and i < len(lines):
            raw = lines[i]
            i += 1
            if _is_comment(raw):
                continue  # a comment inside a continuation does not end it
            if not raw.strip():
                continue  # nor does an empty line (BuildKit warns, but goes on)
            part, cont = _trim_continuation(raw, continuation)
            joined += part
        joined = joined.strip()
        if not joined:
            # BuildKit reads a lone escape with nothing after it as an instruction without
            # a keyword, and fails with "unknown instruction".
            raise DockerfileError(
                f"the line continuation {escape!r} continues nothing: the file ends "
                f"after it; remove the {escape!r} or add the instruction it continues",
                start, filename)
        heredocs: list[Heredoc] = []
        if takes_heredocs(joined):
            try:
                heredocs, i = read_bodies(heredocs_in(joined, lexer), lines, i)
            except SyntaxProblem as exc:
                raise DockerfileError(str(exc), start, filename) from None
        out.append(LogicalLine(start, joined, tuple(heredocs)))
    return escape, out


def _directives(lines: list[str], filename: str) -> tuple[str, int]:
    """The escape character, and the index of the first line after the parser directives.

    Directives count only at the very top, before any comment, blank line or instruction.
    """
    escape = "\\"
    seen: set[str] = set()
    i = 0
    while i < len(lines):
        match = _DIRECTIVE.match(lines[i])
        if not match:
            break
        key, value = match.group(1).lower(), match.group(2)
        if key in seen:
            raise DockerfileError(f"only one {key} parser directive can be used", i + 1, filename)
        seen.add(key)
        if key == "escape":
            if value not in ("\\", "`"):
                raise DockerfileError(
                    f"invalid escape token {value!r} does not match ` or \\", i + 1, filename
                )
            escape = value
        i += 1
    return escape, i


def _trim_continuation(line: str, continuation: re.Pattern[str]) -> tuple[str, bool]:
    match = continuation.search(line)
    if match is None:
        return line, False
    return line[: match.start()], True
