"""What a value in an instruction may be: the checks parsing and expansion share.

A literal value is checked when it is parsed; a value with a ``$`` in it is checked once
expanded (``expand.py``). Every check raises ``SyntaxProblem``, to which the caller adds
the file and line.
"""

from __future__ import annotations

import logging
import re

log = logging.getLogger(__name__)

_CHMOD_SYMBOLIC = re.compile(r"^[ugoa]*[-+=][rwxXst]*([-+=][rwxXst]*)*$")
_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_DURATION_UNITS = {"ns": 1, "us": 10**3, "µs": 10**3, "ms": 10**6, "s": 10**9, "m": 60 * 10**9,
                   "h": 3600 * 10**9}
_PORT = re.compile(r"^(\d+)(?:-(\d+))?(?:/([A-Za-z]+))?$")


class SyntaxProblem(ValueError):
    """A malformed instruction; the caller adds file and line."""


def check_chmod(value: str) -> None:
    """Octal (``0755``) or symbolic (``u+x,g-w``) as Dockerfile 1.14+ accepts."""
    if re.fullmatch(r"[0-7]{1,4}", value):
        return
    if all(_CHMOD_SYMBOLIC.match(part) for part in value.split(",")):
        return
    raise SyntaxProblem(f"invalid --chmod={value}: expected octal (0755) or symbolic (u+x,g-w)")


def check_port(spec: str) -> None:
    """``PORT[-PORT][/PROTO]`` with ports 1-65535 and tcp, udp or sctp (EXPOSE)."""
    match = _PORT.match(spec)
    if match is None:
        raise SyntaxProblem(f"invalid port {spec!r}: expected PORT[-PORT][/PROTO]")
    low, high, proto = int(match.group(1)), int(match.group(2) or match.group(1)), match.group(3)
    if not 0 < low <= 65535 or not 0 < high <= 65535 or high < low:
        raise SyntaxProblem(f"invalid port range {spec!r}")
    if proto and proto.lower() not in ("tcp", "udp", "sctp"):
        raise SyntaxProblem(f"invalid protocol in {spec!r}: tcp, udp or sctp")


def parse_duration(name: str, text: str) -> int:
    """Go's ``time.ParseDuration`` (``30s``, ``1m30s``, ``1.5h``) in nanoseconds."""
    if text in ("0", ""):
        return 0
    pos, total = 0, 0.0
    while pos < len(text):
        match = _DURATION_PART.match(text, pos)
        if match is None:
            raise SyntaxProblem(f"invalid duration --{name}={text} (e.g. 30s, 1m30s)")
        total += float(match.group(1)) * _DURATION_UNITS[match.group(2)]
        pos = match.end()
    value = int(total)
    if 0 < value < 10**6:
        raise SyntaxProblem(f"--{name}={text} cannot be less than 1ms")
    return value

