"""``.dockerignore``: Docker's pattern matcher (moby/patternmatcher) and file lookup.

Rules: lines starting with ``#`` are comments; each pattern is trimmed, cleaned like Go's
``filepath.Clean`` and anchored at the context root (a leading ``/`` is dropped); ``*`` and
``?`` never cross a ``/``; ``**`` matches any number of directories; ``[...]`` and ``\\``
escapes as in Go's ``filepath.Match``; ``!`` makes an exception; the last pattern that
matches a path (or one of its parent directories) wins, so an exception can re-include a
file under an excluded directory. ``<Dockerfile>.dockerignore`` next to the Dockerfile
takes precedence over the context's ``.dockerignore`` (Dockerfile reference,
".dockerignore file").
"""

from __future__ import annotations

import logging
import os
import posixpath
import re
from dataclasses import dataclass, field
from pathlib import Path

from kanipy.errors import ContextError
from kanipy.fieldwise import Fieldwise

log = logging.getLogger(__name__)

# Thompson NFA nodes (one pattern compiles to a few per character). A node
# either consumes one character that passes its test and goes on to ``out``,
# or splits to ``out`` and ``alt`` without consuming, or accepts.
_CHAR, _SPLIT, _ACCEPT = range(3)
# Character tests: one literal, anything but "/", anything, a [class].
_LITERAL, _NOT_SLASH, _ANY, _CLASS = range(4)
_DEAD = -1  # the DFA state with no NFA node left: nothing can match any more
# A pattern's DFA is built lazily, one state per new set of NFA nodes met; at
# most one state is added per character matched, and past this many the cache
# starts afresh (as RE2 does), so neither time nor memory can be driven up.
_MAX_STATES = 10_000
# Directory prefixes whose DFA state a matcher remembers (then it starts afresh), and
# the two results a remembered prefix can have besides a state.
_MAX_DIRS = 4096
_UNSEEN = -2
_PARENT_MATCHED = -3


class GlobMatcher:
    """One ``.dockerignore`` pattern, matched in time linear in the path.

    The pattern means what moby/patternmatcher's regular expression means
    (``*`` is ``[^/]*``, ``?`` is ``[^/]``, ``**/`` is ``(.*/)?``, a final
    ``**`` is ``.*``, ``[...]`` a class, ``\\x`` a literal ``x``), but it is
    matched by a DFA built lazily from the pattern's Thompson NFA, the way Go's
    RE2 engine runs Docker's: Python's backtracking ``re`` took time
    exponential in the number of ``**`` (``**/**/**/**/**/**/**/**/x`` against
    a 40-deep path: 43 s, issue 11), and polynomial in the number of ``*``.
    """

    def __init__(self, pattern: str) -> None:
        self.pattern = pattern
        self._kind: list[int] = []
        self._test: list[tuple[int, object]] = []
        self._out: list[int] = []
        self._alt: list[int] = []
        self._start_nodes = (self._build(pattern),)
        self._reset()

    # -- the NFA ---------------------------------------------------------------------

    def _node(self, kind: int, test: tuple[int, object] = (_ANY, None)) -> int:
        self._kind.append(kind)
        self._test.append(test)
        self._out.append(-1)
        self._alt.append(-1)
        return len(self._kind) - 1

    def _build(self, pattern: str) -> int:
        """The NFA of ``pattern``; returns its start node. Built from the end, so
        each piece knows the node that follows it."""
        pieces = list(_pieces(pattern))
        following = self._node(_ACCEPT)
        for kind, arg in reversed(pieces):
            if kind == "char":
                node = self._node(_CHAR, arg)  # type: ignore[arg-type]
                self._out[node] = following
            elif kind == "star":  # [^/]*
                node = self._loop((_NOT_SLASH, None), following)
            elif kind == "any-tail":  # .*
                node = self._loop((_ANY, None), following)
            else:  # "any-dirs": (.*/)?
                slash = self._node(_CHAR, (_LITERAL, "/"))
                self._out[slash] = following
                node = self._node(_SPLIT)
                self._out[node] = self._loop((_ANY, None), slash)
                self._alt[node] = following
            following = node
        return following

    def _loop(self, test: tuple[int, object], following: int) -> int:
        split = self._node(_SPLIT)
        char = self._node(_CHAR, test)
        self._out[char] = split
        self._out[split] = char
        self._alt[split] = following
        return split

    def _closure(self, nodes: tuple[int, ...] | list[int]) -> int:
        """The DFA state for the NFA nodes reachable from ``nodes`` without consuming."""
        seen: set[int] = set()
        stack = list(nodes)
        while stack:
            node = stack.pop()
            if node in seen:
                continue
            seen.add(node)
            if self._kind[node] == _SPLIT:
                stack.append(self._alt[node])
                stack.append(self._out[node])
        key = frozenset(n for n in seen if self._kind[n] != _SPLIT)
        if not key:
            return _DEAD
        state = self._ids.get(key)
        if state is None:
            state = len(self._states)
            self._ids[key] = state
            self._states.append(tuple(sorted(n for n in key if self._kind[n] == _CHAR)))
            self._accepting.append(any(self._kind[n] == _ACCEPT for n in key))
            self._moves.append({})
        return state

    def _reset(self) -> None:
        # The states reached after each directory prefix, without and with ``parents``;
        # dropped with the states they name.
        self._after_dir: tuple[dict[str, int], dict[str, int]] = ({}, {})
        self._ids: dict[frozenset[int], int] = {}
        self._states: list[tuple[int, ...]] = []
        self._accepting: list[bool] = []
        self._moves: list[dict[str, int]] = []
        self._start = self._closure(self._start_nodes)

    def _move(self, state: int, ch: str) -> int:
        targets = []
        for node in self._states[state]:
            how, arg = self._test[node]
            if (how == _ANY or (how == _NOT_SLASH and ch != "/")
                    or (how == _LITERAL and ch == arg)
                    or (how == _CLASS and arg.fullmatch(ch) is not None)):  # type: ignore[attr-defined]
                targets.append(self._out[node])
        nxt = self._closure(targets)
        self._moves[state][ch] = nxt
        return nxt

    # -- matching --------------------------------------------------------------------

    def _run(self, path: str, parents: bool) -> bool:
        if len(self._states) > _MAX_STATES:
            self._reset()
        state = self._start
        cut = path.rfind("/") + 1
        if cut:
            # Paths come a directory at a time (a COPY asks about every file of a tree):
            # where the DFA stands after "dir/" is remembered, so only the last name is
            # run (issue 14: per-file costs).
            key = path[:cut]
            cache = self._after_dir[parents]
            state = cache.get(key, _UNSEEN)
            if state == _UNSEEN:
                state = self._advance(self._start, key, parents)
                if len(cache) >= _MAX_DIRS:
                    cache.clear()
                cache[key] = state
            if state == _PARENT_MATCHED:
                return True
        state = self._advance(state, path[cut:], parents)
        if state == _PARENT_MATCHED:
            return True
        return state != _DEAD and self._accepting[state]

    def _advance(self, state: int, text: str, parents: bool) -> int:
        """The DFA state after ``text`` from ``state``; _PARENT_MATCHED when, with
        ``parents``, the path up to a "/" in ``text`` matched."""
        if state == _DEAD:
            return _DEAD
        accepting = self._accepting
        moves = self._moves
        for ch in text:
            if parents and ch == "/" and accepting[state]:
                return _PARENT_MATCHED  # the directory so far matches: a parent is excluded
            nxt = moves[state].get(ch)
            state = self._move(state, ch) if nxt is None else nxt
            if state == _DEAD:
                return _DEAD
        return state

    def matches(self, path: str) -> bool:
        """Whether the whole of ``path`` matches."""
        return self._run(path, parents=False)

    def matches_or_parent(self, path: str) -> bool:
        """Whether ``path`` or one of its parent directories matches, in one pass."""
        return self._run(path, parents=True)

    @property
    def states_built(self) -> int:
        """DFA states built so far (a measure of the work matching has cost)."""
        return len(self._states)


def _pieces(pattern: str) -> list[tuple[str, object]]:
    """patternmatcher's reading of one pattern, piece by piece: ``("char", test)``,
    ``("star", None)``, ``("any-dirs", None)`` for ``**/`` (or a ``**`` not at the
    end) and ``("any-tail", None)`` for a final ``**``."""
    pieces: list[tuple[str, object]] = []
    i, n = 0, len(pattern)
    while i < n:
        ch = pattern[i]
        if ch == "*":
            if i + 1 < n and pattern[i + 1] == "*":
                i += 1
                if i + 1 < n and pattern[i + 1] == "/":
                    i += 1  # treat "**/" as "**"
                piece = "any-tail" if i + 1 >= n else "any-dirs"
                if piece == "any-dirs" and pieces and pieces[-1][0] == "any-dirs":
                    pass  # (.*/)?(.*/)? matches what one (.*/)? does
                else:
                    pieces.append((piece, None))
            else:
                pieces.append(("star", None))
        elif ch == "?":
            pieces.append(("char", (_NOT_SLASH, None)))
        elif ch == "\\":
            if i + 1 < n:
                i += 1
            pieces.append(("char", (_LITERAL, pattern[i])))
        elif ch == "[":
            end = pattern.find("]", i + 1)
            if end < 0:
                raise ValueError("unterminated [ (a character class needs its closing ])")
            body = pattern[i + 1 : end]
            if body.startswith("!"):
                body = "^" + body[1:]
            try:
                regex = re.compile("[" + body.replace("\\", "\\\\") + "]", re.DOTALL)
            except re.error as exc:
                raise ValueError(f"bad character class [{pattern[i + 1:end]}]: {exc}") from None
            pieces.append(("char", (_CLASS, regex)))
            i = end
        else:
            pieces.append(("char", (_LITERAL, ch)))
        i += 1
    return pieces


@dataclass(frozen=True, repr=False, eq=False)
class IgnorePattern(Fieldwise):
    """One cleaned pattern: ``text`` without ``!``, ``exclusion`` for ``!`` exceptions."""

    text: str
    exclusion: bool
    matcher: GlobMatcher = field(compare=False)
    segments: tuple[GlobMatcher | None, ...] = field(compare=False)  # None: has ``**``

    def matches(self, path: str) -> bool:
        return self.matcher.matches(path)


def _clean(path: str) -> str:
    cleaned = posixpath.normpath(path)
    if cleaned.startswith("//"):
        cleaned = cleaned[1:]
    return cleaned


def _segment_matcher(segment: str) -> GlobMatcher | None:
    if "**" in segment:
        return None
    return GlobMatcher(segment)


class DockerIgnore:
    """A matcher built from ``.dockerignore`` lines.

    An invalid pattern (an unterminated ``[``) raises ValueError naming it.
    """

    def __init__(self, patterns: list[str]) -> None:
        self.patterns: list[IgnorePattern] = []
        for raw in patterns:
            exclusion = raw.startswith("!")
            text = raw[1:] if exclusion else raw
            text = _clean(text)
            try:
                matcher = GlobMatcher(text)
                segments = tuple(_segment_matcher(s) for s in text.split("/"))
            except ValueError as exc:
                raise ValueError(f"invalid pattern {raw!r}: {exc}") from None
            self.patterns.append(IgnorePattern(text, exclusion, matcher, segments))
        self.has_exceptions = any(p.exclusion for p in self.patterns)

    @classmethod
    def from_text(cls, text: str, source: str = ".dockerignore") -> DockerIgnore:
        """Parse a ``.dockerignore`` file's content (moby/patternmatcher/ignorefile).

        ``source`` names the file in errors: an invalid pattern is a ContextError
        (exit 2) saying ``SOURCE:LINE``.
        """
        patterns: list[str] = []
        lines: list[int] = []
        for number, line in enumerate(text.splitlines()):
            if number == 0:
                line = line.removeprefix("\ufeff")
            if line.startswith("#"):
                continue
            line = line.strip()
            if not line:
                continue
            invert = line.startswith("!")
            if invert:
                line = line[1:].strip()
            if line:
                line = _clean(line)
                if len(line) > 1 and line.startswith("/"):
                    line = line[1:]
            patterns.append("!" + line if invert else line)
            lines.append(number + 1)
        try:
            return cls(patterns)
        except ValueError:
            pass
        for raw, number in zip(patterns, lines, strict=True):
            try:
                cls([raw])
            except ValueError as exc:
                raise ContextError(f"{source}:{number}: {exc}") from None
        raise AssertionError("unreachable: one pattern failed above")

    def excludes(self, relpath: str) -> bool:
        """True when ``relpath`` (relative to the context root, ``/``-separated) is left out."""
        path = _clean(relpath.lstrip("/")) if relpath else "."
        matched = False
        for pattern in self.patterns:
            # Only a pattern that could change the outcome is tried (as Docker does).
            if pattern.exclusion != matched:
                continue
            # The path or one of its parent directories (patternmatcher's
            # MatchesOrParentMatches), in one pass over the path.
            if pattern.matcher.matches_or_parent(path):
                matched = not pattern.exclusion
        return matched

    def must_walk(self, reldir: str) -> bool:
        """Whether the walk must enter directory ``reldir``.

        True when it is not excluded, or when an exception (``!pattern``) could re-include
        something inside it; False lets a caller skip a large ignored tree unread.
        """
        if not self.excludes(reldir):
            return True
        parts = _clean(reldir.lstrip("/")).split("/")
        for pattern in self.patterns:
            if not pattern.exclusion:
                continue
            if _could_match_inside(pattern, parts, ending_above=True):
                return True
        return False

    def may_match_below(self, reldir: str) -> bool:
        """Whether a pattern could match a path strictly inside directory ``reldir``
        ("" is the context root).

        When none can, every path below ``reldir`` is excluded exactly when ``reldir``
        is (a path's parents are matched too), so a walk of a directory that is not
        excluded can stop asking (issue 14: a COPY of 100,000 files asked per file).
        """
        if not self.patterns:
            return False
        path = _clean(reldir.lstrip("/")) if reldir else "."
        if path == "." or self.excludes(path):
            return True
        parts = path.split("/")
        return any(_could_match_inside(p, parts, ending_above=False) for p in self.patterns)


def _could_match_inside(pattern: IgnorePattern, parts: list[str], *,
                        ending_above: bool) -> bool:
    """Whether ``pattern`` could match a path of more components than ``parts`` that
    starts with them; a pattern that ends at their depth or above counts as
    ``ending_above`` says (a parent's match reaches inside for ``must_walk``'s
    exceptions; ``may_match_below`` has those parents matched already)."""
    if "[" in pattern.text or "\\" in pattern.text or pattern.text.startswith("/"):
        return True  # a class or an escape can match "/": components do not line up
    for depth, segment in enumerate(pattern.segments):
        if segment is None:
            return True  # "**" can stand for any depth
        if depth == len(parts):
            return True  # the pattern goes on below the directory
        if not segment.matches(parts[depth]):
            return False
    return ending_above


def load_ignore(context_dir: str | Path, dockerfile_path: str | Path | None = None) -> DockerIgnore:
    """The ignore rules for a build: ``<Dockerfile>.dockerignore`` beside the Dockerfile
    wins over ``<context>/.dockerignore``; neither present means nothing is ignored.

    An ignore file in the context is context content: one that is a symlink
    leading out of the context is refused rather than read, as BuildKit reads
    it from the context only. A file that is not UTF-8 or holds an invalid
    pattern is a ContextError naming it and the line.
    """
    context = Path(os.path.abspath(context_dir))
    candidates: list[Path] = []
    if dockerfile_path is not None:
        dockerfile = Path(dockerfile_path)
        candidates.append(dockerfile.with_name(dockerfile.name + ".dockerignore"))
    candidates.append(context / ".dockerignore")
    for candidate in candidates:
        if not candidate.is_file():
            continue
        named = Path(os.path.normpath(os.path.abspath(candidate)))
        shown = str(named.relative_to(context)) if named.is_relative_to(context) else str(named)
        real = Path(os.path.realpath(candidate))
        if named.is_relative_to(context) and not real.is_relative_to(os.path.realpath(context)):
            raise ContextError(f"{shown} leads outside the build context (to {real}); "
                               "an ignore file must be inside the context")
        log.debug("using ignore file %s", candidate)
        data = real.read_bytes()
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            line = data.count(b"\n", 0, exc.start) + 1
            raise ContextError(f"{shown}:{line}: not valid UTF-8 (byte 0x{data[exc.start]:02x}); "
                               "save the file as UTF-8") from None
        return DockerIgnore.from_text(text, shown)
    return DockerIgnore([])
