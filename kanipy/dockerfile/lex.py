"""Word expansion with BuildKit's rules: quotes, the escape character and ``$`` forms.

This is the lexer Docker applies to the words of ADD, COPY, ENV, EXPOSE, FROM, LABEL,
STOPSIGNAL, USER, VOLUME, WORKDIR and ARG defaults (Dockerfile reference, "Environment
replacement"). Supported forms: ``$V``, ``${V}``, ``${V:-w}``, ``${V-w}``, ``${V:+w}``,
``${V+w}``, ``${V:?msg}``, ``${V?msg}``, ``${V#p}``, ``${V##p}``, ``${V%s}``, ``${V%%s}``,
``${V/p/r}`` and ``${V//p/r}``. Single quotes are literal; inside double quotes the escape
character only escapes ``"``, ``$`` and itself; outside quotes it escapes any character.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping

log = logging.getLogger(__name__)

_SPECIAL_PARAMS = frozenset("@*#?-$!0")
# How deep ``${V:-${W:-...}}`` may nest. BuildKit's lexer recurses without a limit (Go
# stacks grow); ours recurses too, and a limit far above any real Dockerfile's nesting
# keeps it within Python's stack with a clear error instead of a RecursionError.
MAX_NESTING = 64
# How many characters the variables of one word may bring in. ``ENV A=$A$A`` repeated
# doubles a value per line; without a bound 40 lines take all memory. Far above any real
# value: the kernel refuses a single argument or variable over 128 KiB (MAX_ARG_STRLEN).
MAX_EXPANSION = 2**20


class ExpansionError(ValueError):
    """A word that cannot be expanded: bad syntax, or ``${V:?msg}`` on an unset V.

    Carries no line; the caller knows the instruction and turns it into a DockerfileError.
    """


class ExpansionSyntaxError(ExpansionError):
    """A word that no environment could expand (``${V``, ``${V:0:1}``, nesting past the
    limit): found while planning, before anything is built, as BuildKit finds it."""


class _Words:
    """Splits the expanded text into words the way BuildKit's ``wordsStruct`` does:
    whitespace that came from unquoted text (or an unquoted ``$V``) separates words."""

    def __init__(self) -> None:
        self.word: list[str] = []
        self.words: list[str] = []
        self.in_word = False

    def add_char(self, ch: str) -> None:
        if ch.isspace():
            if self.in_word and "".join(self.word):
                self.words.append("".join(self.word))
                self.word = []
                self.in_word = False
        else:
            self.add_raw(ch)

    def add_raw(self, text: str) -> None:
        self.word.append(text)
        self.in_word = True

    def add_string(self, text: str) -> None:
        for ch in text:
            self.add_char(ch)

    def finish(self) -> list[str]:
        if "".join(self.word):
            self.words.append("".join(self.word))
            self.word = []
            self.in_word = False
        return self.words


class _Scan:
    """One pass over one word; a fresh one per call keeps the lexer reentrant."""

    def __init__(
        self, text: str, env: Mapping[str, str], escape: str, heredoc: bool = False
    ) -> None:
        self.heredoc = heredoc
        self.text = text
        self.pos = 0
        self.env = env
        self.escape = escape
        self.depth = 0
        self.substituted = 0

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def next(self) -> str:
        if self.pos >= len(self.text):
            return ""
        ch = self.text[self.pos]
        self.pos += 1
        return ch

    # --- the grammar -------------------------------------------------------------------

    def process(self, stop: str = "", raw_escapes: bool = False) -> tuple[str, list[str]]:
        result: list[str] = []
        words = _Words()
        while self.pos < len(self.text):
            ch = self.peek()
            if stop and ch == stop:
                self.next()
                return "".join(result), words.finish()
            if self.heredoc and ch != "$":
                # Heredoc bodies: quotes are literal; the escape only protects $ and itself,
                # as in a shell here-document with an unquoted delimiter.
                self.next()
                if ch == self.escape and self.peek() in ("$", self.escape):
                    ch = self.next()
                result.append(ch)
                continue
            if ch == "'":
                tmp = self.single_quote()
                result.append(tmp)
                words.add_raw(tmp)
            elif ch == '"':
                tmp = self.double_quote()
                result.append(tmp)
                words.add_raw(tmp)
            elif ch == "$":
                tmp = self.dollar()
                result.append(tmp)
                words.add_string(tmp)
            else:
                ch = self.next()
                if ch == self.escape:
                    if raw_escapes:
                        # Patterns (${V#p}, ${V/p/r}) keep the escape so the matcher sees it.
                        words.add_raw(ch)
                        result.append(ch)
                    ch = self.next()
                    if not ch:  # an escape at the very end is dropped
                        break
                    words.add_raw(ch)
                else:
                    words.add_char(ch)
                result.append(ch)
        if stop:
            raise ExpansionSyntaxError(
                f"unexpected end of statement while looking for matching {stop}"
            )
        return "".join(result), words.finish()

    def single_quote(self) -> str:
        self.next()
        out: list[str] = []
        while True:
            ch = self.next()
            if not ch:
                raise ExpansionSyntaxError(
                    "unexpected end of statement while looking for matching single-quote"
                )
            if ch == "'":
                return "".join(out)
            out.append(ch)

    def double_quote(self) -> str:
        self.next()
        out: list[str] = []
        while True:
            ch = self.peek()
            if not ch:
                raise ExpansionSyntaxError(
                    "unexpected end of statement while looking for matching double-quote"
                )
            if ch == '"':
                self.next()
                return "".join(out)
            if ch == "$":
                out.append(self.dollar())
                continue
            ch = self.next()
            if ch == self.escape:
                nxt = self.peek()
                if not nxt:
                    continue
                if nxt in ('"', "$", self.escape):
                    ch = self.next()
            out.append(ch)

    def name(self) -> str:
        """A variable name: letters, digits and _, or a run of digits, or one special char."""
        start = self.pos
        ch = self.peek()
        if ch and ch.isdigit():
            while self.peek() and self.peek().isdigit():
                self.next()
            return self.text[start : self.pos]
        if ch and ch in _SPECIAL_PARAMS:
            return self.next()
        while True:
            ch = self.peek()
            if not ch or not (ch.isalnum() or ch == "_"):
                break
            self.next()
        return self.text[start : self.pos]

    def dollar(self) -> str:
        value = self.substitution()
        self.substituted += len(value)
        if self.substituted > MAX_EXPANSION:
            raise ExpansionError(
                f"the variables in this word expand to more than {MAX_EXPANSION // 2**20} MiB: "
                "a value that grows with each use (ENV A=$A$A)?"
            )
        return value

    def substitution(self) -> str:
        """``$V`` or ``${...}``: the text it stands for."""
        self.next()  # the $
        if self.peek() != "{":
            name = self.name()
            return self.env.get(name, "") if name else "$"
        if self.depth >= MAX_NESTING:
            raise ExpansionSyntaxError(
                f"variable substitutions nest more than {MAX_NESTING} deep: "
                "use an ARG or ENV to hold the inner value"
            )
        self.depth += 1
        try:
            return self.braced()
        finally:
            self.depth -= 1

    def braced(self) -> str:
        """``${...}``, from its ``{``."""
        self.next()  # the {
        ch = self.peek()
        if not ch:
            raise ExpansionSyntaxError("syntax error: missing '}'")
        if ch in "{}:":
            raise ExpansionSyntaxError("syntax error: bad substitution")
        name = self.name()
        op = self.next()
        if op == "}":
            return self.env.get(name, "")
        if op == "/":
            return self.replace(name)
        null_is_unset = False
        mods = op
        if op == ":":
            null_is_unset = True
            op = self.next()
            mods += op
        if op not in ("+", "-", "?", "#", "%"):
            if not op:
                raise ExpansionSyntaxError("syntax error: missing '}'")
            raise ExpansionSyntaxError(f"unsupported modifier ({mods}) in substitution")
        raw = op in "#%"
        if null_is_unset and raw:
            raise ExpansionSyntaxError(f"unsupported modifier ({mods}) in substitution")
        try:
            word, _ = self.process("}", raw_escapes=raw)
        except ExpansionError:
            if not self.peek():
                raise ExpansionSyntaxError("syntax error: missing '}'") from None
            raise
        is_set = name in self.env
        value = self.env.get(name, "")
        if op == "-":
            return word if not is_set or (null_is_unset and value == "") else value
        if op == "+":
            return "" if not is_set or (null_is_unset and value == "") else word
        if op == "?":
            if not is_set:
                raise ExpansionError(f"{name}: {word or 'is not allowed to be unset'}")
            if null_is_unset and value == "":
                raise ExpansionError(f"{name}: {word or 'is not allowed to be empty'}")
            return value
        greedy = word.startswith(op)
        if greedy:
            word = word[1:]
        if op == "#":
            return _trim_prefix(word, value, greedy, self.escape)
        return _trim_suffix(word, value, greedy, self.escape)

    def replace(self, name: str) -> str:
        replace_all = self.peek() == "/"
        if replace_all:
            self.next()
        pattern, _ = self.process("/", raw_escapes=True)
        replacement, _ = self.process("}", raw_escapes=True)
        value = self.env.get(name, "")
        glob = _Glob(pattern, self.escape)
        backwards = value[::-1]
        out: list[str] = []
        pos = 0
        while pos <= len(value):
            found = glob.search(value, pos, backwards)
            if found is None:
                break
            start, end = found
            out += [value[pos:start], replacement]
            if end == start:  # an empty match: step over one character, as re.sub does
                out.append(value[end : end + 1])
                pos = end + 1
            else:
                pos = end
            if not replace_all:
                break
        return "".join(out) + value[pos:]


def _pattern_parts(pattern: str, escape: str) -> list[str]:
    """A shell pattern (``*``, ``?``, ``[...]``, escapes) as regex parts, one per
    character matched, or ``.*`` for a ``*`` (a run of them counts once)."""
    out: list[str] = []
    i = 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "*":
            if not out or out[-1] != ".*":
                out.append(".*")
        elif ch == "?":
            out.append(".")
        elif ch == escape and i + 1 < len(pattern):
            i += 1
            out.append(re.escape(pattern[i]))
        elif ch == "[":
            # A ] right after [ (or [!) is a member, not the end (POSIX bracket expressions).
            first = i + 2 if pattern[i + 1 : i + 2] in ("!", "^") else i + 1
            end = pattern.find("]", first + 1)
            if end < 0:
                out.append(re.escape(ch))
            else:
                body = pattern[i + 1 : end]
                negate = body[:1] in ("!", "^")
                if negate:
                    body = body[1:]
                out.append(f"[{'^' if negate else ''}{_bracket_body(body)}]")
                i = end
        else:
            out.append(re.escape(ch))
        i += 1
    return out


def _bracket_body(body: str) -> str:
    """A shell bracket expression's characters and ``a-z`` ranges as a regex set.

    Every character is escaped, so what Python's set syntax would read otherwise
    (``[``, ``&&``, ``--``, ``~~``, ``||``, ``^``) matches literally, as in the shell.
    """
    out: list[str] = []
    i = 0
    while i < len(body):
        if i + 2 < len(body) and body[i + 1] == "-":
            out.append(f"{re.escape(body[i])}-{re.escape(body[i + 2])}")
            i += 3
        else:
            out.append(re.escape(body[i]))
            i += 1
    return "".join(out)


def _compile(parts: list[str], pattern: str) -> re.Pattern[str]:
    """Regex ``parts`` compiled; a pattern that cannot be one (a reversed range such as
    ``[z-a]``) is an error, as it is for BuildKit's Go regexp."""
    try:
        return re.compile("".join(parts), re.DOTALL)
    except re.error as exc:
        raise ExpansionError(f"invalid pattern {pattern!r} in substitution: {exc}") from None


class _Glob:
    """A shell pattern, matched piece by piece: the fixed-length pieces between its
    ``*`` are found with regex searches, never by backtracking over the stars.

    A match from a given start may end at several places; ``end`` gives the nearest or
    the farthest, as a lazy or greedy ``*`` would (``#``/``%`` or ``##``/``%%``; a
    replacement takes the farthest). Placing each middle piece at its first occurrence
    leaves the most room to the last, so the nearest end is the last piece's first
    occurrence after them and the farthest its last occurrence. The cost grows with the
    value's length times the pattern's, where regex backtracking over several stars grew
    with a power of the length (``${V/a*a*x/}`` on a long run of ``a``).
    """

    def __init__(self, pattern: str, escape: str, *, reverse: bool = False) -> None:
        parts = _pattern_parts(pattern, escape)
        if reverse:
            parts.reverse()
        pieces: list[list[str]] = [[]]
        for part in parts:
            if part == ".*":
                pieces.append([])
            else:
                pieces[-1].append(part)
        self.pieces = [_compile(piece, pattern) for piece in pieces]
        self.sizes = [len(piece) for piece in pieces]
        # The last piece read backwards, to find its last occurrence in the reversed value.
        self.last_backwards = _compile(pieces[-1][::-1], pattern)

    def end(self, value: str, start: int, farthest: bool, backwards: str = "") -> int | None:
        """Where a match that begins at ``start`` ends, or None when none begins there.

        ``backwards`` is ``value[::-1]`` when the caller already has it.
        """
        if not self.pieces[0].match(value, start):
            return None
        pos = start + self.sizes[0]
        if len(self.pieces) == 1:
            return pos
        for piece in self.pieces[1:-1]:
            found = piece.search(value, pos)
            if found is None:
                return None
            pos = found.end()
        if not self.sizes[-1]:  # the pattern ends with a *
            return len(value) if farthest else pos
        if not farthest:
            found = self.pieces[-1].search(value, pos)
            return None if found is None else found.end()
        backwards = backwards or value[::-1]
        found = self.last_backwards.search(backwards, 0, len(value) - pos)
        return None if found is None else len(value) - found.start()

    def search(self, value: str, pos: int, backwards: str = "") -> tuple[int, int] | None:
        """The leftmost match at or after ``pos``, farthest end, as ``(start, end)``.

        Only the first place where the first piece matches can start a match: from a
        later place, the rest of the pattern has less of the value to be found in.
        """
        start = pos
        if self.sizes[0]:
            found = self.pieces[0].search(value, pos)
            if found is None:
                return None
            start = found.start()
        end = self.end(value, start, True, backwards)
        return None if end is None else (start, end)


def _trim_prefix(pattern: str, value: str, greedy: bool, escape: str) -> str:
    end = _Glob(pattern, escape).end(value, 0, greedy)
    return value if end is None else value[end:]


def _trim_suffix(pattern: str, value: str, greedy: bool, escape: str) -> str:
    # A suffix is a prefix of the reversed value under the reversed pattern (BuildKit
    # trims suffixes the same way).
    end = _Glob(pattern, escape, reverse=True).end(value[::-1], 0, greedy)
    return value if end is None else value[: len(value) - end]


class ShellLexer:
    """Expands words for one Dockerfile (its escape character is fixed per file)."""

    def __init__(self, escape: str = "\\") -> None:
        self.escape = escape

    def process_word(self, word: str, env: Mapping[str, str]) -> str:
        """One word, whitespace kept (WORKDIR, USER, ENV values, ...)."""
        return _Scan(word, env, self.escape).process()[0]

    def process_words(self, word: str, env: Mapping[str, str]) -> list[str]:
        """Several words: unquoted whitespace (also from an unquoted ``$V``) splits them."""
        return _Scan(word, env, self.escape).process()[1]

    def process_heredoc(self, content: str, env: Mapping[str, str]) -> str:
        """A heredoc body with an unquoted delimiter: ``$`` forms expanded, quotes kept."""
        return _Scan(content, env, self.escape, heredoc=True).process()[0]
