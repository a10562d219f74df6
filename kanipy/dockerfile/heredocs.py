"""Here-documents: the ``<<NAME`` words of an instruction and the bodies after its line.

BuildKit reads heredocs for RUN, COPY and ADD only (also behind ONBUILD, which then
rejects them): ``<<EOF``, ``<<-EOF`` (leading tabs stripped), ``<<"EOF"``/``<<'EOF'``
(body not expanded), several per line, each with an optional fd prefix (``3<<EOF``).
The bodies follow the instruction's line, in the order the words name them.
"""

from __future__ import annotations

import logging
import re

from kanipy.dockerfile.forms import parse_words
from kanipy.dockerfile.instructions import Add, Copy, Heredoc, Onbuild, Run
from kanipy.dockerfile.lex import ExpansionError, ShellLexer
from kanipy.dockerfile.values import SyntaxProblem

log = logging.getLogger(__name__)

HEREDOC_KEYWORDS = frozenset({Run.keyword, Copy.keyword, Add.keyword})
_HEREDOC = re.compile(r"^([0-9]{0,9})<<(-?)([^<]*)$")


def takes_heredocs(text: str) -> bool:
    """Whether the instruction ``text`` (continuations joined) is followed by bodies."""
    keyword = text.split(None, 1)[0].upper()
    if keyword == Onbuild.keyword:
        rest = text.split(None, 1)[1] if " " in text or "\t" in text else ""
        keyword = rest.split(None, 1)[0].upper() if rest.strip() else ""
    return keyword in HEREDOC_KEYWORDS


def is_heredoc_word(word: str) -> bool:
    """``<<...`` (with an optional fd prefix), named or not."""
    return _HEREDOC.match(word) is not None


def heredoc_name(word: str) -> str | None:
    """The name a ``<<NAME`` word refers to (quotes removed), None for other words."""
    match = _HEREDOC.match(word)
    if match is None or not match.group(3):
        return None
    return ShellLexer("\\").process_word(match.group(3), {})


def heredocs_in(line: str, lexer: ShellLexer) -> list[Heredoc]:
    """The heredocs ``line`` opens, in order, with empty bodies."""
    docs: list[Heredoc] = []
    for word in parse_words(line, "\\"):
        match = _HEREDOC.match(word)
        if match is None or not match.group(3):
            continue
        rest = match.group(3)
        try:
            name = lexer.process_word(rest, {})
        except ExpansionError as exc:
            raise SyntaxProblem(f"bad heredoc name {rest!r}: {exc}") from None
        docs.append(
            Heredoc(
                name=name,
                content="",
                expand=name == rest,
                chomp=match.group(2) == "-",
                fd=int(match.group(1) or 0),
            )
        )
    return docs


def read_bodies(docs: list[Heredoc], lines: list[str], i: int) -> tuple[list[Heredoc], int]:
    """Each heredoc of ``docs`` with its body read from ``lines[i:]``; the next line index.

    A body ends at a line that is exactly its name (after leading tabs, for ``<<-``).
    """
    out: list[Heredoc] = []
    for doc in docs:
        content: list[str] = []
        while True:
            if i >= len(lines):
                raise SyntaxProblem(
                    f"unterminated heredoc {doc.name!r}: no line {doc.name!r} closes it"
                )
            raw = lines[i]
            i += 1
            candidate = raw.lstrip("\t") if doc.chomp else raw
            if candidate == doc.name:
                break
            content.append(raw + "\n")
        out.append(Heredoc(doc.name, "".join(content), doc.expand, doc.chomp, doc.fd))
    return out, i
