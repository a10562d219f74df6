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
import posixpath
import re
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

_REGEX_SPECIAL = set(".+()|{}$^")


@dataclass(frozen=True)
class IgnorePattern:
    """One cleaned pattern: ``text`` without ``!``, ``exclusion`` for ``!`` exceptions."""

    text: str
    exclusion: bool
    regex: re.Pattern[str]
    segments: tuple[re.Pattern[str] | None, ...]  # None: a segment containing ``**``

    def matches(self, path: str) -> bool:
        return self.regex.match(path) is not None


def _clean(path: str) -> str:
    cleaned = posixpath.normpath(path)
    if cleaned.startswith("//"):
        cleaned = cleaned[1:]
    return cleaned


def _compile(pattern: str) -> str:
    """patternmatcher's translation of one pattern to a regular expression."""
    out = ["^"]
    i, n = 0, len(pattern)
    while i < n:
        ch = pattern[i]
        if ch == "*":
            if i + 1 < n and pattern[i + 1] == "*":
                i += 1
                if i + 1 < n and pattern[i + 1] == "/":
                    i += 1  # treat "**/" as "**"
                if i + 1 >= n:
                    out.append(".*")
                else:
                    out.append("(.*/)?")
            else:
                out.append("[^/]*")
        elif ch == "?":
            out.append("[^/]")
        elif ch in _REGEX_SPECIAL:
            out.append("\\" + ch)
        elif ch == "\\":
            if i + 1 < n:
                i += 1
                out.append(re.escape(pattern[i]))
            else:
                out.append("\\\\")
        elif ch == "[":
            end = pattern.find("]", i + 1)
            body = pattern[i + 1 : end] if end > 0 else ""
            if end < 0:
                raise ValueError(f"syntax error in pattern {pattern!r}: unterminated [")
            if body.startswith("!"):
                body = "^" + body[1:]
            out.append("[" + body.replace("\\", "\\\\") + "]")
            i = end
        else:
            out.append(re.escape(ch))
        i += 1
    out.append("$")
    return "".join(out)


def _segment_regex(segment: str) -> re.Pattern[str] | None:
    if "**" in segment:
        return None
    return re.compile(_compile(segment))


class DockerIgnore:
    """A matcher built from ``.dockerignore`` lines."""

    def __init__(self, patterns: list[str]) -> None:
        self.patterns: list[IgnorePattern] = []
        for raw in patterns:
            exclusion = raw.startswith("!")
            text = raw[1:] if exclusion else raw
            text = _clean(text)
            try:
                regex = re.compile(_compile(text), re.DOTALL)
            except (re.error, ValueError) as exc:
                raise ValueError(f"invalid .dockerignore pattern {raw!r}: {exc}") from None
            segments = tuple(_segment_regex(s) for s in text.split("/"))
            self.patterns.append(IgnorePattern(text, exclusion, regex, segments))
        self.has_exceptions = any(p.exclusion for p in self.patterns)

    @classmethod
    def from_text(cls, text: str) -> DockerIgnore:
        """Parse a ``.dockerignore`` file's content (moby/patternmatcher/ignorefile)."""
        patterns: list[str] = []
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
        return cls(patterns)

    def excludes(self, relpath: str) -> bool:
        """True when ``relpath`` (relative to the context root, ``/``-separated) is left out."""
        path = _clean(relpath.lstrip("/")) if relpath else "."
        parent = posixpath.dirname(path)
        parents = parent.split("/") if parent else []
        matched = False
        for pattern in self.patterns:
            # Only a pattern that could change the outcome is tried (as Docker does).
            if pattern.exclusion != matched:
                continue
            hit = pattern.matches(path)
            if not hit and parents:
                for i in range(1, len(parents) + 1):
                    if pattern.matches("/".join(parents[:i])):
                        hit = True
                        break
            if hit:
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
            if _could_match_inside(pattern.segments, parts):
                return True
        return False


def _could_match_inside(segments: tuple[re.Pattern[str] | None, ...], parts: list[str]) -> bool:
    for segment, part in zip(segments, parts, strict=False):
        if segment is None:
            return True  # "**" can stand for any depth
        if not segment.match(part):
            return False
    return True


def load_ignore(context_dir: str | Path, dockerfile_path: str | Path | None = None) -> DockerIgnore:
    """The ignore rules for a build: ``<Dockerfile>.dockerignore`` beside the Dockerfile
    wins over ``<context>/.dockerignore``; neither present means nothing is ignored."""
    candidates: list[Path] = []
    if dockerfile_path is not None:
        dockerfile = Path(dockerfile_path)
        candidates.append(dockerfile.with_name(dockerfile.name + ".dockerignore"))
    candidates.append(Path(context_dir) / ".dockerignore")
    for candidate in candidates:
        if candidate.is_file():
            log.debug("using ignore file %s", candidate)
            return DockerIgnore.from_text(candidate.read_text(encoding="utf-8"))
    return DockerIgnore([])
