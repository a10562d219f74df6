"""Dockerfile text -> typed instructions (syntax only; no variable is expanded here).

Instruction boundaries follow BuildKit's parser (frontend/dockerfile/parser): parser
directives at the top (``# escape=``), comment lines dropped even inside a continuation,
empty lines inside a continuation skipped rather than ending the instruction, and
heredocs (``<<EOF``, ``<<-EOF``, ``<<"EOF"``, several per line) read after the line for
RUN, COPY and ADD. dockerfile-parse agrees with this for plain files but ends an
instruction at an empty or comment line inside a continuation and reads heredoc bodies
as instructions, so we split lines ourselves; tests/dockerfile compare the two on files
where both rules apply.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from typing import Any

from kanipy.dockerfile.instructions import (
    Add,
    Arg,
    Cmd,
    Command,
    Copy,
    Entrypoint,
    Env,
    Expose,
    From,
    Healthcheck,
    Heredoc,
    Instruction,
    Label,
    Maintainer,
    Mount,
    Onbuild,
    Run,
    Shell,
    StopSignal,
    User,
    Volume,
    Workdir,
)
from kanipy.dockerfile.lex import ExpansionError, ShellLexer
from kanipy.errors import DockerfileError

log = logging.getLogger(__name__)

_DIRECTIVE = re.compile(r"^#\s*([a-zA-Z][a-zA-Z0-9]*)\s*=\s*(.+?)\s*$")
_HEREDOC = re.compile(r"^(\d*)<<(-?)([^<]*)$")
_WHITESPACE = re.compile(r"[\t\v\f\r ]+")
_STAGE_NAME = re.compile(r"^[a-z][a-z0-9\-_.]*$")
_HEREDOC_KEYWORDS = frozenset({"RUN", "COPY", "ADD"})


class SyntaxProblem(ValueError):
    """A malformed instruction; the caller adds file and line."""


@dataclass(frozen=True)
class LogicalLine:
    """One instruction's text: continuation lines joined, heredoc bodies alongside."""

    line: int
    text: str
    heredocs: tuple[Heredoc, ...] = ()


@dataclass(frozen=True)
class ParsedDockerfile:
    """The whole file: its escape character and its instructions, in order."""

    escape: str
    instructions: tuple[Instruction, ...]
    filename: str = "Dockerfile"


# --- line splitting --------------------------------------------------------------------


def _is_comment(line: str) -> bool:
    return line.lstrip(" \t").startswith("#")


def split_lines(text: str, filename: str = "Dockerfile") -> tuple[str, list[LogicalLine]]:
    """The escape character and the logical lines of a Dockerfile."""
    lines = text.replace("\r\n", "\n").split("\n")
    if lines and lines[0].startswith("\ufeff"):
        lines[0] = lines[0][1:]
    escape = "\\"
    seen: set[str] = set()
    i = 0
    # Parser directives: only at the very top, before any comment, blank line or instruction.
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
        heredocs: list[Heredoc] = []
        keyword = joined.split(None, 1)[0].upper()
        if keyword == "ONBUILD":
            rest = joined.split(None, 1)[1] if " " in joined or "\t" in joined else ""
            keyword = rest.split(None, 1)[0].upper() if rest.strip() else ""
        if keyword in _HEREDOC_KEYWORDS:
            try:
                docs = _heredocs_in(joined, lexer)
            except SyntaxProblem as exc:
                raise DockerfileError(str(exc), start, filename) from None
            for doc in docs:
                content: list[str] = []
                while True:
                    if i >= len(lines):
                        raise DockerfileError(
                            f"unterminated heredoc {doc.name!r}: no line {doc.name!r} "
                            "closes it",
                            start,
                            filename,
                        )
                    raw = lines[i]
                    i += 1
                    candidate = raw.lstrip("\t") if doc.chomp else raw
                    if candidate == doc.name:
                        break
                    content.append(raw + "\n")
                heredocs.append(
                    Heredoc(doc.name, "".join(content), doc.expand, doc.chomp, doc.fd)
                )
        out.append(LogicalLine(start, joined, tuple(heredocs)))
    return escape, out


def _trim_continuation(line: str, continuation: re.Pattern[str]) -> tuple[str, bool]:
    match = continuation.search(line)
    if match is None:
        return line, False
    return line[: match.start()], True


def _heredocs_in(line: str, lexer: ShellLexer) -> list[Heredoc]:
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


# --- word helpers (BuildKit's parseWords / extractBuilderFlags) ------------------------


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

    def __init__(self, keyword: str, words: list[str], spec: dict[str, str]) -> None:
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


_FLAG_SPECS: dict[str, dict[str, str]] = {
    "FROM": {"platform": "string"},
    "RUN": {"mount": "strings", "network": "string", "security": "string"},
    "COPY": {"from": "string", "chown": "string", "chmod": "string", "link": "bool",
             "parents": "bool", "exclude": "strings"},
    # BuildKit's ADD has no --from and no --parents; we reject them as Docker does.
    "ADD": {"chown": "string", "chmod": "string", "link": "bool", "exclude": "strings",
            "checksum": "string", "keep-git-dir": "bool", "unpack": "bool"},
    "HEALTHCHECK": {"interval": "string", "timeout": "string", "start-period": "string",
                    "start-interval": "string", "retries": "string"},
}


# --- forms -----------------------------------------------------------------------------


def parse_json_array(rest: str) -> list[str] | None:
    """The exec form: a JSON array of strings, or None (shell form) when not JSON."""
    text = rest.lstrip()
    if not text.startswith("["):
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return None
    if not isinstance(value, list):
        return None
    if not all(isinstance(item, str) for item in value):
        raise SyntaxProblem(
            "when using JSON array syntax, arrays must be comprised of strings only"
        )
    return value


def _command(keyword: str, rest: str) -> Command:
    args = parse_json_array(rest)
    if args is not None:
        return Command(tuple(args), True)
    if not rest.strip():
        raise SyntaxProblem(f"{keyword} requires at least one argument")
    return Command((rest,), False)


def _list(rest: str) -> list[str]:
    args = parse_json_array(rest)
    if args is not None:
        return args
    return [w for w in _WHITESPACE.split(rest.strip()) if w]


def _pairs(keyword: str, rest: str, escape: str) -> list[tuple[str, str]]:
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


# --- RUN --mount -----------------------------------------------------------------------

_MOUNT_TYPES = ("bind", "cache", "tmpfs", "secret", "ssh")
_MOUNT_KEYS = {
    "type", "target", "dst", "destination", "source", "src", "from", "readonly", "ro",
    "readwrite", "rw", "id", "sharing", "mode", "uid", "gid", "required", "size", "env",
}
_MOUNT_BOOLS = {"readonly", "ro", "readwrite", "rw", "required"}


def parse_mount(spec: str) -> Mount:
    """One ``--mount`` value (CSV ``key=value`` fields), validated as BuildKit does."""
    fields: dict[str, str] = {}
    for part in _split_csv(spec):
        key, has_value, value = part.partition("=")
        key = key.strip().lower()
        if key not in _MOUNT_KEYS:
            raise SyntaxProblem(f"unexpected key {key!r} in --mount={spec}")
        if not has_value:
            if key not in _MOUNT_BOOLS:
                raise SyntaxProblem(f"--mount field {key!r} needs a value ({key}=...)")
            value = "true"
        fields[key] = value
    mtype = fields.get("type", "bind").lower()
    if mtype not in _MOUNT_TYPES:
        raise SyntaxProblem(
            f"unsupported mount type {mtype!r} in --mount={spec} (one of {', '.join(_MOUNT_TYPES)})"
        )

    def boolean(*names: str) -> bool | None:
        for name in names:
            if name in fields:
                value = fields[name].lower()
                if value not in ("true", "false", "1", "0"):
                    raise SyntaxProblem(f"invalid value {fields[name]!r} for {name} in --mount")
                return value in ("true", "1")
        return None

    def integer(name: str, base: int = 10) -> int | None:
        if name not in fields:
            return None
        try:
            return int(fields[name], base)
        except ValueError:
            raise SyntaxProblem(f"invalid {name} {fields[name]!r} in --mount={spec}") from None

    target = fields.get("target") or fields.get("dst") or fields.get("destination")
    readonly = boolean("readonly", "ro")
    readwrite = boolean("readwrite", "rw")
    if readonly is None:
        readonly = (mtype == "bind") if readwrite is None else not readwrite
    sharing = fields.get("sharing")
    if sharing is not None and sharing not in ("shared", "private", "locked"):
        raise SyntaxProblem(f"unsupported sharing value {sharing!r} (shared, private or locked)")
    if sharing is not None and mtype != "cache":
        raise SyntaxProblem("sharing is only valid for cache mounts")
    ident = fields.get("id")
    if mtype == "cache":
        sharing = sharing or "shared"
    if mtype in ("bind", "cache", "tmpfs") and not target:
        raise SyntaxProblem(f"--mount={spec}: a {mtype} mount needs a target")
    if mtype == "secret" and not target and "env" not in fields:
        if not ident:
            raise SyntaxProblem(f"--mount={spec}: a secret mount needs an id or a target")
        target = f"/run/secrets/{ident}"
    if mtype == "secret" and not ident and target:
        ident = target.rstrip("/").rsplit("/", 1)[-1]
    if mtype == "ssh":
        ident = ident or "default"
    if mtype == "cache" and not ident:
        ident = target
    mode = integer("mode", 8)
    if mode is None:
        mode = {"cache": 0o755, "secret": 0o400, "ssh": 0o600}.get(mtype)
    return Mount(
        type=mtype,
        target=target,
        source=fields.get("source") or fields.get("src"),
        from_=fields.get("from"),
        readonly=readonly,
        id=ident,
        sharing=sharing,
        mode=mode,
        uid=integer("uid"),
        gid=integer("gid"),
        required=bool(boolean("required")),
        size=fields.get("size"),
        env=fields.get("env"),
        spec=spec,
    )


def _split_csv(text: str) -> list[str]:
    """Comma-separated fields; double quotes protect commas (Go encoding/csv)."""
    out: list[str] = []
    field: list[str] = []
    quoted = False
    for ch in text:
        if ch == '"':
            quoted = not quoted
        elif ch == "," and not quoted:
            out.append("".join(field))
            field = []
        else:
            field.append(ch)
    if quoted:
        raise SyntaxProblem(f"unterminated quote in --mount={text}")
    out.append("".join(field))
    return [f for f in out if f.strip()]


# --- validators shared with expansion (scope.py calls them on expanded values) ---------

_CHMOD_SYMBOLIC = re.compile(r"^[ugoa]*[-+=][rwxXst]*([-+=][rwxXst]*)*$")
_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_DURATION_UNITS = {"ns": 1, "us": 10**3, "µs": 10**3, "ms": 10**6, "s": 10**9, "m": 60 * 10**9,
                   "h": 3600 * 10**9}
_PORT = re.compile(r"^(\d+)(?:-(\d+))?(?:/([A-Za-z]+))?$")


def check_chmod(value: str) -> None:
    """Octal (``0755``) or symbolic (``u+x,g-w``) as Dockerfile 1.14+ accepts."""
    if re.fullmatch(r"[0-7]{1,4}", value):
        return
    if all(_CHMOD_SYMBOLIC.match(part) for part in value.split(",")):
        return
    raise SyntaxProblem(f"invalid --chmod={value}: expected octal (0755) or symbolic (u+x,g-w)")


def check_port(spec: str) -> None:
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


def apply_chmod(spec: str, mode: int, is_dir: bool) -> int:
    """The permission bits ``spec`` (octal or symbolic) gives a file that had ``mode``."""
    if re.fullmatch(r"[0-7]{1,4}", spec):
        return int(spec, 8)
    for clause in spec.split(","):
        who_match = re.match(r"[ugoa]*", clause)
        assert who_match is not None
        who = who_match.group(0) or "a"
        rest = clause[len(who_match.group(0)) :]
        for op, perms in re.findall(r"([-+=])([rwxXst]*)", rest):
            bits = 0
            for target, shift in (("u", 6), ("g", 3), ("o", 0)):
                if target not in who and "a" not in who:
                    continue
                for perm, value in (("r", 4), ("w", 2), ("x", 1)):
                    if perm in perms:
                        bits |= value << shift
                if "X" in perms and (is_dir or mode & 0o111):
                    bits |= 1 << shift
                if "s" in perms and target in "ug":
                    bits |= 0o4000 if target == "u" else 0o2000
            if "t" in perms:
                bits |= 0o1000
            if op == "+":
                mode |= bits
            elif op == "-":
                mode &= ~bits
            else:
                mask = 0
                for target, shift in (("u", 6), ("g", 3), ("o", 0)):
                    if target in who or "a" in who:
                        mask |= 0o7 << shift
                mode = (mode & ~mask) | bits
    return mode & 0o7777


# --- typed instructions ----------------------------------------------------------------


def _exactly_one(keyword: str, rest: str) -> str:
    if not rest.strip():
        raise SyntaxProblem(f"{keyword} requires exactly one argument")
    return rest.strip()


def _build(keyword: str, logical: LogicalLine, escape: str, nested: bool) -> Instruction:
    line, text = logical.line, logical.text
    parts = text.split(None, 1)
    rest_all = parts[1] if len(parts) > 1 else ""
    flag_words, rest = extract_flags(rest_all)
    rest = rest.strip()
    flags = Flags(keyword, flag_words, _FLAG_SPECS.get(keyword, {}))
    common: dict[str, Any] = {"keyword": keyword, "line": line, "original": text}
    if keyword == "FROM":
        words = _list_plain(rest)
        if len(words) not in (1, 3) or (len(words) == 3 and words[1].lower() != "as"):
            raise SyntaxProblem(
                "FROM requires either one or three arguments (FROM image [AS name])"
            )
        name = words[2].lower() if len(words) == 3 else None
        if name is not None and "$" not in name and not _STAGE_NAME.match(name):
            raise SyntaxProblem(
                f"invalid name for build stage: {words[2]!r}, name can't start with a number "
                "or contain symbols"
            )
        return From(**common, image=words[0], name=name, platform=flags.string("platform"))
    if keyword == "RUN":
        heredocs = logical.heredocs
        mounts = tuple(parse_mount(spec) for spec in flags.strings("mount"))
        network = flags.string("network")
        if network is not None and "$" not in network and network not in (
            "none", "host", "default"
        ):
            raise SyntaxProblem(f"unsupported --network={network} (none, host or default)")
        security = flags.string("security")
        if security is not None and security not in ("sandbox", "insecure"):
            raise SyntaxProblem(f"unsupported --security={security} (sandbox or insecure)")
        command = _command(keyword, rest)
        if heredocs and command.exec_form:
            raise SyntaxProblem("heredocs are not allowed with the exec form of RUN")
        return Run(**common, command=command, mounts=mounts, network=network,
                   security=security, heredocs=heredocs)
    if keyword == "CMD":
        return Cmd(**common, command=_command(keyword, rest))
    if keyword == "ENTRYPOINT":
        return Entrypoint(**common, command=_command(keyword, rest))
    if keyword == "SHELL":
        args = parse_json_array(rest)
        if args is None:
            raise SyntaxProblem(
                'SHELL requires the arguments to be in JSON form: SHELL ["sh", "-c"]'
            )
        if not args:
            raise SyntaxProblem("SHELL requires at least one argument")
        return Shell(**common, args=tuple(args))
    if keyword == "ENV":
        return Env(**common, pairs=tuple(_pairs(keyword, rest, escape)))
    if keyword == "LABEL":
        return Label(**common, pairs=tuple(_pairs(keyword, rest, escape)))
    if keyword == "ARG":
        words = parse_words(rest, escape)
        if not words:
            raise SyntaxProblem("ARG requires at least one argument")
        pairs: list[tuple[str, str | None]] = []
        for word in words:
            name, has_value, value = word.partition("=")
            if not name:
                raise SyntaxProblem("ARG names can not be blank")
            pairs.append((name, value if has_value else None))
        return Arg(**common, pairs=tuple(pairs))
    if keyword == "EXPOSE":
        ports = _list_plain(rest)
        if not ports:
            raise SyntaxProblem("EXPOSE requires at least one argument")
        for port in ports:
            if "$" not in port:
                check_port(port)
        return Expose(**common, ports=tuple(ports))
    if keyword == "USER":
        return User(**common, user=_exactly_one(keyword, rest))
    if keyword == "WORKDIR":
        return Workdir(**common, path=_exactly_one(keyword, rest))
    if keyword == "STOPSIGNAL":
        return StopSignal(**common, signal=_exactly_one(keyword, rest))
    if keyword == "MAINTAINER":
        return Maintainer(**common, name=_exactly_one(keyword, rest))
    if keyword == "VOLUME":
        paths = _list(rest)
        if not paths or any(not p.strip() for p in paths):
            raise SyntaxProblem("VOLUME specified can not be an empty string")
        return Volume(**common, paths=tuple(paths))
    if keyword in ("COPY", "ADD"):
        return _copy(keyword, common, flags, rest, logical.heredocs)
    if keyword == "HEALTHCHECK":
        return _healthcheck(common, flags, rest)
    if keyword == "ONBUILD":
        if nested:
            raise SyntaxProblem("ONBUILD ONBUILD isn't allowed")
        if not rest:
            raise SyntaxProblem("ONBUILD requires at least one argument")
        inner_keyword = rest.split(None, 1)[0].upper()
        if inner_keyword in ("ONBUILD", "FROM", "MAINTAINER"):
            raise SyntaxProblem(f"{inner_keyword} isn't allowed as an ONBUILD trigger")
        if logical.heredocs:
            raise SyntaxProblem("heredocs are not supported in ONBUILD triggers")
        inner = LogicalLine(line, rest)
        trigger = _build(inner_keyword, inner, escape, nested=True)
        if flag_words:
            # ONBUILD's own flags were taken as the trigger's: BuildKit gives ONBUILD none.
            raise SyntaxProblem(f"unknown flag: {flag_words[0].split('=')[0]} (for ONBUILD)")
        return Onbuild(**common, expression=rest, trigger=trigger)
    raise SyntaxProblem(f"unknown instruction: {keyword}")


def _list_plain(rest: str) -> list[str]:
    return [w for w in _WHITESPACE.split(rest.strip()) if w]


def _copy(keyword: str, common: dict[str, Any], flags: Flags, rest: str,
          heredocs: tuple[Heredoc, ...]) -> Copy:
    args = _list(rest)
    if len(args) < 2:
        raise SyntaxProblem(
            f"{keyword} requires at least two arguments, but only {len(args)} "
            f"{'was' if len(args) == 1 else 'were'} provided. Destination could not be determined"
        )
    *srcs, dest = args
    if _HEREDOC.match(dest):
        raise SyntaxProblem(f"{keyword}: a heredoc cannot be the destination")
    by_name = {doc.name: doc for doc in heredocs}
    sources: list[str] = []
    inline: list[Heredoc] = []
    for src in srcs:
        match = _HEREDOC.match(src)
        if match and match.group(3):
            name = ShellLexer("\\").process_word(match.group(3), {})
            inline.append(by_name[name])
        else:
            sources.append(src)
    chmod = flags.string("chmod")
    if chmod is not None and "$" not in chmod:
        check_chmod(chmod)
    fields: dict[str, Any] = dict(
        common,
        sources=tuple(sources),
        dest=dest,
        heredocs=tuple(inline),
        chown=flags.string("chown"),
        chmod=chmod,
        link=bool(flags.boolean("link")),
        excludes=tuple(flags.strings("exclude")),
    )
    if keyword == "COPY":
        from_ = flags.string("from")
        if from_ is not None and not from_.strip():
            raise SyntaxProblem("COPY --from needs a stage name, index or image")
        return Copy(**fields, from_=from_, parents=bool(flags.boolean("parents")))
    return Add(
        **fields,
        checksum=flags.string("checksum"),
        keep_git_dir=bool(flags.boolean("keep-git-dir")),
        unpack=flags.boolean("unpack"),
    )


def _healthcheck(common: dict[str, Any], flags: Flags, rest: str) -> Healthcheck:
    parts = rest.split(None, 1)
    if not parts:
        raise SyntaxProblem("HEALTHCHECK requires an argument: CMD command or NONE")
    kind = parts[0].upper()
    if kind == "NONE":
        if len(parts) > 1:
            raise SyntaxProblem("HEALTHCHECK NONE takes no arguments")
        if flags.values:
            raise SyntaxProblem("HEALTHCHECK NONE takes no flags")
        return Healthcheck(**common, test=("NONE",))
    if kind != "CMD":
        raise SyntaxProblem(f"unknown type {parts[0]!r} in HEALTHCHECK (try CMD)")
    if len(parts) < 2 or not parts[1].strip():
        raise SyntaxProblem("missing command after HEALTHCHECK CMD")
    command = _command("HEALTHCHECK", parts[1])
    test = ("CMD", *command.args) if command.exec_form else ("CMD-SHELL", command.args[0])
    durations: dict[str, Any] = {}
    for name in ("interval", "timeout", "start-period", "start-interval"):
        value = flags.string(name)
        durations[name.replace("-", "_")] = None if value is None else parse_duration(name, value)
    retries: int | None = None
    text = flags.string("retries")
    if text is not None:
        try:
            retries = int(text)
        except ValueError:
            raise SyntaxProblem(f"invalid --retries={text}: expected a whole number") from None
        if retries < 0:
            raise SyntaxProblem(f"--retries cannot be negative ({retries})")
    return Healthcheck(**common, test=test, retries=retries, **durations)


def build_instruction(logical: LogicalLine, escape: str, filename: str) -> Instruction:
    keyword = logical.text.split(None, 1)[0].upper()
    try:
        return _build(keyword, logical, escape, nested=False)
    except (SyntaxProblem, ExpansionError) as exc:
        raise DockerfileError(str(exc), logical.line, filename) from None


def parse_dockerfile(text: str, filename: str = "Dockerfile") -> ParsedDockerfile:
    """All instructions of a Dockerfile, typed, unexpanded."""
    try:
        escape, lines = split_lines(text, filename)
    except SyntaxProblem as exc:
        raise DockerfileError(str(exc), None, filename) from None
    instructions = tuple(build_instruction(line, escape, filename) for line in lines)
    return ParsedDockerfile(escape, instructions, filename)


def parse_instructions(lines: list[str], filename: str = "Dockerfile", *, escape: str = "\\",
                       line: int | None = None) -> list[Instruction]:
    """Instructions from single-line texts, e.g. ONBUILD triggers from a base image config.

    ``line`` (the FROM line of the stage that runs them) is used for error messages.
    """
    out: list[Instruction] = []
    for text in lines:
        logical = LogicalLine(line or 0, text.strip())
        if not logical.text:
            continue
        keyword = logical.text.split(None, 1)[0].upper()
        if keyword in ("ONBUILD", "FROM", "MAINTAINER"):
            raise DockerfileError(f"{keyword} isn't allowed as an ONBUILD trigger", line, filename)
        out.append(build_instruction(logical, escape, filename))
    return out

