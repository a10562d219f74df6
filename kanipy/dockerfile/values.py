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
_DURATION_PART = re.compile(r"([0-9]*)(?:\.([0-9]*))?(ns|us|µs|μs|ms|s|m|h)")
_DURATION_UNITS = {"ns": 1, "us": 10**3, "µs": 10**3, "μs": 10**3, "ms": 10**6, "s": 10**9,
                   "m": 60 * 10**9, "h": 3600 * 10**9}
# The largest uid/gid (``uid_t`` is 32 bits wide).
MAX_ID = 2**32 - 1
# Go's time.Duration is int64 nanoseconds.
_MAX_DURATION = 2**63 - 1
_SIGRTMIN, _SIGRTMAX = 34, 64
# moby/sys/signal's SignalMap for Linux.
_SIGNAL_NAMES = frozenset(
    "ABRT ALRM BUS CHLD CLD CONT FPE HUP ILL INT IO IOT KILL PIPE POLL PROF PWR QUIT SEGV "
    "STKFLT STOP SYS TERM TRAP TSTP TTIN TTOU URG USR1 USR2 VTALRM WINCH XCPU XFSZ RTMIN "
    "RTMAX".split()
) | {f"RTMIN+{n}" for n in range(1, 16)} | {f"RTMAX-{n}" for n in range(1, 15)}
# containerd's platforms package: the OS and architecture names it knows (isKnownOS,
# isKnownArch) and the spellings it normalises to them.
_KNOWN_OS = frozenset(
    "aix android darwin dragonfly freebsd hurd illumos ios js linux nacl netbsd openbsd plan9 "
    "solaris windows zos".split()
)
_KNOWN_ARCH = frozenset(
    "386 amd64 amd64p32 arm armbe arm64 arm64be ppc64 ppc64le loong64 mips mipsle mips64 "
    "mips64le mips64p32 mips64p32le ppc riscv riscv64 s390 s390x sparc sparc64 wasm".split()
)
_ARCH_ALIASES = {"i386": "386", "x86_64": "amd64", "x86-64": "amd64", "aarch64": "arm64",
                 "armhf": "arm", "armel": "arm"}
_PLATFORM_PART = re.compile(r"[A-Za-z0-9_-]+")
_PORT = re.compile(r"^([0-9]+)(?:-([0-9]+))?(?:/([A-Za-z]+))?$")
_DECIMAL = re.compile(r"[+-]?[0-9]+")
# More digits than any bound we check against; kept short of Python's int-from-str limit.
_HUGE = 10**30


class SyntaxProblem(ValueError):
    """A malformed instruction; the caller adds file and line."""


def decimal(text: str, *, signed: bool = True) -> int | None:
    """A number written in ASCII decimal digits (as Go's strconv reads them), None for
    anything else. Numbers too long to matter come back as a huge value of their sign, so
    that range checks fail on them without converting thousands of digits."""
    if not _DECIMAL.fullmatch(text) or (not signed and text[0] in "+-"):
        return None
    sign = -1 if text[0] == "-" else 1
    digits = text.lstrip("+-").lstrip("0")
    return sign * _HUGE if len(digits) > 30 else int(text)


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
    low = decimal(match.group(1)) or 0
    high = decimal(match.group(2) or match.group(1)) or 0
    proto = match.group(3)
    if not 0 < low <= 65535 or not 0 < high <= 65535 or high < low:
        raise SyntaxProblem(f"invalid port range {spec!r}")
    if proto and proto.lower() not in ("tcp", "udp", "sctp"):
        raise SyntaxProblem(f"invalid protocol in {spec!r}: tcp, udp or sctp")


def parse_duration(name: str, text: str) -> int:
    """Go's ``time.ParseDuration`` (``30s``, ``1m30s``, ``1.5h``) in nanoseconds, as
    BuildKit's ``parseOptInterval`` takes it: ``0`` (or empty) means the default, negative
    and under 1ms are errors, and the value must fit Go's int64 nanoseconds (about 292
    years), which is what the image config's Healthcheck holds."""
    if text in ("0", ""):
        return 0
    body = text[1:] if text[:1] in ("+", "-") else text
    if not body:
        raise SyntaxProblem(f"invalid duration --{name}={text} (e.g. 30s, 1m30s)")
    # Only HEALTHCHECK has durations: fractions (and decimal) load with it (issue 14).
    from fractions import Fraction

    pos, total = 0, Fraction(0)
    while pos < len(body):
        match = _DURATION_PART.match(body, pos)
        whole, fraction, unit = match.groups() if match else ("", None, "")
        if match is None or not (whole or fraction):
            raise SyntaxProblem(f"invalid duration --{name}={text} (e.g. 30s, 1m30s)")
        whole = whole.lstrip("0") or "0"
        if len(whole) > 20:  # more than int64 nanoseconds in any unit
            whole = str(_MAX_DURATION)
        # Exact arithmetic: a float loses nanoseconds long before int64 overflows; digits
        # past the 18th of a fraction cannot change a whole nanosecond.
        fraction = (fraction or "")[:18]
        number = Fraction(int(whole)) + Fraction(int(fraction or "0"), 10 ** len(fraction))
        total += number * _DURATION_UNITS[unit]
        if total > _MAX_DURATION:
            raise SyntaxProblem(
                f"duration --{name}={text} is too long: the most a duration can hold is "
                "2562047h47m16.854775807s"
            )
        pos = match.end()
    value = int(total)
    if text.startswith("-") and value:
        raise SyntaxProblem(f"--{name}={text} cannot be negative")
    if 0 < value < 10**6:
        raise SyntaxProblem(f"--{name}={text} cannot be less than 1ms")
    return value


def check_platform(text: str, default_os: str, default_arch: str) -> str:
    """A ``--platform`` value as containerd's ``platforms.Parse`` reads it, as
    ``OS/ARCH[/VARIANT]``: one known OS (``linux``) or architecture (``arm64``) alone is
    completed from the defaults, as BuildKit does from its own platform."""
    example = "expected OS/ARCH[/VARIANT], such as linux/amd64 or linux/arm/v7"
    parts = text.split("/")
    if len(parts) > 3 or not all(_PLATFORM_PART.fullmatch(part) for part in parts):
        raise SyntaxProblem(f"invalid platform {text!r}: {example}")
    os_name = parts[0].lower()
    os_name = "darwin" if os_name == "macos" else os_name
    if len(parts) == 1:
        arch = _ARCH_ALIASES.get(os_name, os_name)
        if os_name in _KNOWN_OS:
            return f"{os_name}/{default_arch}"
        if arch in _KNOWN_ARCH:
            return f"{default_os}/{parts[0].lower()}"
        raise SyntaxProblem(f"invalid platform {text!r}: unknown operating system or "
                            f"architecture; {example}")
    arch = parts[1].lower()
    if os_name not in _KNOWN_OS:
        raise SyntaxProblem(f"invalid platform {text!r}: unknown operating system "
                            f"{parts[0]!r} (linux, windows, darwin, freebsd, ...)")
    if _ARCH_ALIASES.get(arch, arch) not in _KNOWN_ARCH:
        raise SyntaxProblem(f"invalid platform {text!r}: unknown architecture {parts[1]!r} "
                            "(amd64, arm64, arm, 386, ppc64le, s390x, riscv64, ...)")
    return text


def parse_retries(text: str) -> int:
    """``HEALTHCHECK --retries``: Go's ``strconv.ParseInt(v, 10, 32)``, not negative; empty
    means the default (0)."""
    if text == "":
        return 0
    number = decimal(text)
    if number is None or not -(2**31) <= number < 2**31:
        raise SyntaxProblem(f"invalid --retries={text}: expected a whole number")
    if number < 0:
        raise SyntaxProblem(f"--retries cannot be negative ({number})")
    return number


def check_signal(value: str) -> None:
    """A stop signal as Docker's ``signal.ParseSignal`` reads it on Linux: a name with or
    without ``SIG`` (any case), ``RTMIN+n``/``RTMAX-n``, or a number 1-64."""
    number = decimal(value)
    if number is not None:
        if not 1 <= number <= _SIGRTMAX:
            raise SyntaxProblem(
                f"invalid signal {value!r}: signal numbers go from 1 to {_SIGRTMAX}"
            )
        return
    name = value.upper()
    if name.startswith("SIG"):
        name = name[3:]
    if name not in _SIGNAL_NAMES:
        raise SyntaxProblem(
            f"invalid signal {value!r}: give a signal name (SIGTERM, SIGINT, SIGQUIT, ...) "
            f"or a number from 1 to {_SIGRTMAX}"
        )


def check_owner(flag: str, value: str) -> None:
    """``--chown=user[:group]``: a part that is a number must be a uid/gid (0 to 2^32-1);
    a name is looked up in the image when the instruction runs."""
    for part in value.split(":", 1):
        number = decimal(part)
        if number is not None and not 0 <= number <= MAX_ID:
            raise SyntaxProblem(
                f"invalid {flag}={value}: user and group ids go from 0 to {MAX_ID}, "
                f"{part} is out of range"
            )


def parse_id(key: str, value: str, base: int = 10) -> int:
    """A ``RUN --mount`` uid, gid or mode as BuildKit's ``strconv.ParseUint(v, base, 32)``."""
    digits = "[0-7]+" if base == 8 else "[0-9]+"
    if not re.fullmatch(digits, value):
        what = "an octal mode (0755)" if base == 8 else "a number from 0 to " + str(MAX_ID)
        raise SyntaxProblem(f"invalid value {value!r} for {key} in --mount: expected {what}")
    number = int(value, base) if len(value.lstrip("0")) <= 30 else _HUGE
    if number > MAX_ID:
        raise SyntaxProblem(
            f"invalid value {value!r} for {key} in --mount: it must be at most {MAX_ID}"
        )
    return number


def check_no_nul(value: str) -> None:
    """No path, argument or environment variable can hold a NUL (the kernel takes C
    strings)."""
    if "\0" in value:
        raise SyntaxProblem(
            f"{value.replace(chr(0), '<NUL>')[:120]!r} contains a NUL character once "
            "expanded (from the base image's Env or a build arg): no path, name or variable "
            "can hold one"
        )
