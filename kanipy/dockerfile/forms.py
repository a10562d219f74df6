"""The forms an instruction's arguments take: words, JSON (exec) or shell form, K=V pairs.

Word splitting follows BuildKit's ``parseWords``: split on unquoted whitespace, keeping
quotes and escapes in the words for expansion to remove later. Nothing is expanded here.
"""

from __future__ import annotations

import json
import logging
import re

from kanipy.dockerfile.instructions import Command
from kanipy.dockerfile.values import SyntaxProblem

log = logging.getLogger(__name__)

_WHITESPACE = re.compile(r"[\t\v\f\r ]+")


def parse_words(rest: str, escape: str) -> list[str]:
    """Split on unquoted whitespace, keeping quotes and escapes in the words."""
    words: list[str] = []
    word: list[str] = []
    quote = ""
    blank_ok = False
    in_word = False
    i = 0
    n = len(rest)
    while i < n:
        ch = rest[i]
        if not in_word:
            if ch.isspace():
                i += 1
                continue
            in_word = True
        if quote:
            if ch == quote:
                quote = ""
            elif ch == escape and quote != "'":
                if i + 1 == n:
                    i += 1
                    continue
                word.append(ch)
                i += 1
                ch = rest[i]
            word.append(ch)
            i += 1
            continue
        if ch.isspace():
            if blank_ok or word:
                words.append("".join(word))
            word, blank_ok, in_word = [], False, False
            i += 1
            continue
        if ch in ("'", '"'):
            quote, blank_ok = ch, True
        elif ch == escape:
            if i + 1 == n:
                i += 1
                continue
            word.append(ch)
            i += 1
            ch = rest[i]
        word.append(ch)
        i += 1
    if in_word and (blank_ok or word):
        words.append("".join(word))
    return words


def split_plain(rest: str) -> list[str]:
    """Words separated by whitespace, quotes not special (FROM, EXPOSE)."""
    return [w for w in _WHITESPACE.split(rest.strip()) if w]


def parse_json_array(rest: str) -> list[str] | None:
    """The exec form: a JSON array of strings, or None (shell form) when not JSON."""
    text = rest.lstrip()
    if not text.startswith("["):
        return None
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        # Not JSON, so the shell form, as for BuildKit; arrays nested past Python's stack
        # are taken the same way (Go's decoder also stops at a depth, 10000).
        return None
    if not isinstance(value, list):
        return None
    if not all(isinstance(item, str) for item in value):
        raise SyntaxProblem(
            "when using JSON array syntax, arrays must be comprised of strings only"
        )
    return value


def parse_command(keyword: str, rest: str) -> Command:
    """RUN, CMD, ENTRYPOINT, HEALTHCHECK CMD: exec form, else the text as one shell command."""
    args = parse_json_array(rest)
    if args is not None:
        return Command(tuple(args), True)
    if not rest.strip():
        raise SyntaxProblem(f"{keyword} requires at least one argument")
    return Command((rest,), False)


def json_or_plain(rest: str) -> list[str]:
    """A JSON array, else plain words (COPY, ADD, VOLUME)."""
    args = parse_json_array(rest)
    if args is not None:
        return args
    return split_plain(rest)


def parse_pairs(keyword: str, rest: str, escape: str) -> list[tuple[str, str]]:
    """``K=V ...`` or the legacy ``K V`` (ENV, LABEL): the first word decides."""
    words = parse_words(rest, escape)
    if not words:
        raise SyntaxProblem(f"{keyword} requires at least one argument")
    if "=" not in words[0]:
        parts = _WHITESPACE.split(rest.strip(), maxsplit=1)
        if len(parts) < 2:
            raise SyntaxProblem(f"{keyword} must have two arguments")
        return [(parts[0], parts[1])]
    pairs = []
    for word in words:
        if "=" not in word:
            raise SyntaxProblem(
                f"syntax error - can't find = in {word!r}. Must be of the form: name=value"
            )
        key, _, value = word.partition("=")
        if not key:
            raise SyntaxProblem(f"{keyword} names can not be blank")
        pairs.append((key, value))
    return pairs


def exactly_one(keyword: str, rest: str) -> str:
    """The whole argument text, which must not be empty (USER, WORKDIR, STOPSIGNAL, ...)."""
    if not rest.strip():
        raise SyntaxProblem(f"{keyword} requires exactly one argument")
    return rest.strip()
