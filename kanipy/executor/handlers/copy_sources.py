"""Finding what a COPY/ADD source names: Go's wildcard rules, .dockerignore, clear misses.

BuildKit (tonistiigi/fsutil ``copy.ResolveWildcards``) splits a source at its
first component holding a wildcard, resolves the part before it inside the
root (following symlinks, never out of the root), then walks the rest of the
tree and keeps every path that ``filepath.Match`` accepts; a matched directory
is not entered further. Go's ``Match`` differs from Python's ``fnmatch``: ``*``
and ``?`` never cross ``/`` but do match a leading dot, ``[^...]`` negates a
class, and ``\\`` escapes the next character.
"""

from __future__ import annotations

import logging
import os
import posixpath
import re
import stat
from dataclasses import dataclass
from pathlib import Path

from kanipy.context import BuildContext
from kanipy.executor.step import StepError
from kanipy.fieldwise import Fieldwise
from kanipy.fs.rootfs import Rootfs

log = logging.getLogger(__name__)


@dataclass(frozen=True, repr=False, eq=False)
class Source(Fieldwise):
    """One thing to copy: ``host`` (inside its root, top-level links followed) and
    ``rel``, its path relative to that root as the user named it (for --parents)."""

    host: Path
    rel: str


def has_wildcard(text: str) -> bool:
    """True when ``text`` holds an unescaped ``*``, ``?`` or ``[`` (fsutil's test)."""
    i = 0
    while i < len(text):
        if text[i] == "\\":
            i += 2
            continue
        if text[i] in "*?[":
            return True
        i += 1
    return False


def go_match_regex(pattern: str) -> re.Pattern[str] | None:
    """A regex equivalent to Go's ``filepath.Match(pattern, name)``; None when the
    pattern is malformed (Go returns ErrBadPattern, and BuildKit treats it as no match)."""
    out: list[str] = []
    i, n = 0, len(pattern)
    while i < n:
        ch = pattern[i]
        if ch == "*":
            out.append("[^/]*")
        elif ch == "?":
            out.append("[^/]")
        elif ch == "\\":
            i += 1
            if i >= n:
                return None
            out.append(re.escape(pattern[i]))
        elif ch == "[":
            i += 1
            negate = i < n and pattern[i] == "^"
            if negate:
                i += 1
            items: list[str] = []
            while True:
                if i >= n:
                    return None
                if pattern[i] == "]" and items:
                    break
                lo, i = _class_char(pattern, i)
                if lo is None:
                    return None
                if i < n and pattern[i] == "-":
                    hi, i = _class_char(pattern, i + 1)
                    if hi is None or hi < lo:
                        return None
                    items.append(f"{re.escape(lo)}-{re.escape(hi)}")
                else:
                    items.append(re.escape(lo))
            # A class never matches the separator (Go: "[^/]" semantics for '/').
            body = "".join(items)
            out.append(f"[^/{body}]" if negate else f"(?!/)[{body}]")
        else:
            out.append(re.escape(ch))
        i += 1
    return re.compile("".join(out) + r"\Z", re.DOTALL)


def _class_char(pattern: str, i: int) -> tuple[str | None, int]:
    """One (possibly escaped) character of a ``[...]`` class and the index after it."""
    if i >= len(pattern) or pattern[i] in "-]":
        return None, i
    if pattern[i] == "\\":
        i += 1
        if i >= len(pattern):
            return None, i
    return pattern[i], i + 1


def _split_wildcards(clean: str) -> tuple[str, str]:
    """fsutil's splitWildcards: the components before the first wildcard, and the rest."""
    parts = clean.split("/") if clean else []
    for index, part in enumerate(parts):
        if has_wildcard(part):
            return "/".join(parts[:index]), "/".join(parts[index:])
    return clean, ""


class SourceFinder:
    """Resolves source patterns in one root; ``context`` set when the root is the
    build context, so that ``.dockerignore`` applies. A missing path named without a
    wildcard is a StepError (the stage loop says which instruction it comes from); a
    wildcard that matches nothing names no sources, as under BuildKit."""

    def __init__(self, root: Path, context: BuildContext | None, origin: str,
                 instruction: str) -> None:
        self.root = Rootfs(root)
        self.context = context
        self.origin = origin  # "the build context", "stage builder", ...
        self.instruction = instruction

    def excluded(self, rel: str) -> bool:
        return self.context is not None and self.context.excluded(rel)

    def walk_needed(self, rel: str) -> bool:
        """Whether an excluded directory holds re-included (``!pattern``) entries."""
        return self.context is None or self.context.ignore.must_walk(rel)

    def find(self, pattern: str) -> list[Source]:
        """The sources ``pattern`` names, in Go's walk order: none for a wildcard that
        matches nothing; a StepError for a path without a wildcard that is missing."""
        clean = posixpath.normpath("/" + pattern).lstrip("/")  # never above the root
        base, rest = _split_wildcards(clean)
        if not rest:
            return [self._single(pattern, clean)]
        regex = go_match_regex(rest)
        base_host = self.root.resolve(base or "/")
        found: list[Source] = []
        if regex is not None and os.path.isdir(base_host):
            self._walk(base_host, base, "", regex, found)
        if not found:
            # BuildKit copies with AllowWildcard and AllowEmptyWildcard: a wildcard that
            # matches nothing copies nothing and is no error (the classic builder failed).
            log.info("%s %s: matches nothing in %s; nothing is copied for it",
                     self.instruction, pattern, self.origin)
        return found

    def _walk(self, host: Path, base: str, prefix: str, regex: re.Pattern[str],
              found: list[Source]) -> None:
        with os.scandir(host) as it:
            entries = sorted(it, key=lambda e: e.name)
        for entry in entries:
            rel_in_walk = f"{prefix}{entry.name}"
            rel = posixpath.join(base, rel_in_walk) if base else rel_in_walk
            is_dir = entry.is_dir(follow_symlinks=False)
            if self.excluded(rel) and not (is_dir and self.walk_needed(rel)):
                continue
            if regex.match(rel_in_walk):
                # A matched link is followed inside the root, as BuildKit's rootPath does;
                # one whose target is not there is an error naming it, as a named one is.
                resolved = self.root.resolve(rel)
                if not os.path.exists(resolved):
                    raise StepError(
                        f"{self.instruction} failed: {rel!r} not found in {self.origin} (it "
                        "is a symbolic link whose target is not in the source)")
                found.append(Source(resolved, rel))
            elif is_dir:
                self._walk(Path(entry.path), base, rel_in_walk + "/", regex, found)

    def _single(self, pattern: str, rel: str) -> Source:
        host = self.root.resolve(rel or "/")
        exists = os.path.lexists(host)
        if exists and self.excluded(rel):
            is_dir = stat.S_ISDIR(os.stat(host).st_mode) if os.path.exists(host) else False
            if not (is_dir and self.walk_needed(rel)):
                raise StepError(
                    f"{self.instruction} failed: {pattern!r} not found: it is "
                    f"excluded by .dockerignore")
        if not exists or not os.path.exists(host):
            hint = ""
            if os.path.lexists(self.root.resolve(rel or "/", follow_final=False)):
                hint = " (it is a symbolic link whose target is not in the source)"
            raise StepError(
                f"{self.instruction} failed: {pattern!r} not found in "
                f"{self.origin}{hint}")
        return Source(host, rel or ".")

