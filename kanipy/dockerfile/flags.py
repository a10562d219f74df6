"""An instruction's leading ``--flag[=value]`` words, checked against what it accepts.

Follows BuildKit's ``extractBuilderFlags`` (quotes removed, ``--`` ends the flags) and
``BFlags`` (unknown, duplicate, valueless and non-boolean flags are errors). Which flags an
instruction accepts is declared beside its parser, in ``parse.py``'s table.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Literal

from kanipy.dockerfile.values import SyntaxProblem

log = logging.getLogger(__name__)

FlagKind = Literal["string", "bool", "strings"]
# flag name (without ``--``) -> kind; ``strings`` may repeat and collects every value
FlagSpec = Mapping[str, FlagKind]


def extract_flags(rest: str) -> tuple[list[str], str]:
    """Leading ``--flag[=value]`` words (quotes removed) and the text after them."""
    flags: list[str] = []
    i, n = 0, len(rest)
    while True:
        while i < n and rest[i].isspace():
            i += 1
        if not rest.startswith("--", i):
            return flags, rest[i:]
        word: list[str] = []
        quote = ""
        blank_ok = False
        while i < n:
            ch = rest[i]
            if quote:
                if ch == quote:
                    quote = ""
                else:
                    if ch == "\\" and i + 1 < n:
                        i += 1
                        ch = rest[i]
                    word.append(ch)
                i += 1
                continue
            if ch.isspace():
                break
            if ch in ("'", '"'):
                quote, blank_ok = ch, True
            else:
                if ch == "\\" and i + 1 < n:
                    i += 1
                    ch = rest[i]
                word.append(ch)
            i += 1
        text = "".join(word)
        if text == "--":
            return flags, rest[i:].lstrip()
        if blank_ok or text:
            flags.append(text)


class Flags:
    """Parsed flags of one instruction, validated against what it accepts (BuildKit BFlags)."""

    def __init__(self, keyword: str, words: list[str], spec: FlagSpec) -> None:
        self.values: dict[str, str | bool | list[str]] = {}
        for word in words:
            name, has_value, value = word[2:].partition("=")
            kind = spec.get(name)
            if kind is None:
                raise SyntaxProblem(f"unknown flag: --{name} (for {keyword})")
            if kind == "strings":
                existing = self.values.setdefault(name, [])
                assert isinstance(existing, list)
                if not has_value:
                    raise SyntaxProblem(f"missing a value on flag: --{name}")
                existing.append(value)
                continue
            if name in self.values:
                raise SyntaxProblem(f"duplicate flag specified: --{name}")
            if kind == "bool":
                if value.lower() not in ("", "true", "false") or (has_value and not value):
                    raise SyntaxProblem(f"expecting boolean value for flag --{name}, not: {value}")
                self.values[name] = value.lower() != "false"
            else:
                if not has_value:
                    raise SyntaxProblem(f"missing a value on flag: --{name}")
                self.values[name] = value

    def string(self, name: str) -> str | None:
        value = self.values.get(name)
        return value if isinstance(value, str) else None

    def boolean(self, name: str) -> bool | None:
        value = self.values.get(name)
        return value if isinstance(value, bool) else None

    def strings(self, name: str) -> list[str]:
        value = self.values.get(name)
        return list(value) if isinstance(value, list) else []
