"""Logical lines -> typed instructions: one parser per keyword, in the ``PARSERS`` table.

Syntax only; no variable is expanded here (that is ``expand.py``). Each entry of the
table declares the flags its instruction accepts and the function that reads the rest of
the line; lines, heredocs, flags, mounts and argument forms have their own modules.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from kanipy.dockerfile.flags import Flags, FlagSpec, extract_flags
from kanipy.dockerfile.forms import (
    exactly_one,
    json_or_plain,
    parse_command,
    parse_json_array,
    parse_pairs,
    parse_words,
    split_plain,
)
from kanipy.dockerfile.heredocs import heredoc_name, is_heredoc_word
from kanipy.dockerfile.instructions import (
    Add,
    Arg,
    Cmd,
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
    Onbuild,
    Run,
    Shell,
    StopSignal,
    User,
    Volume,
    Workdir,
    check_table,
)
from kanipy.dockerfile.lex import ExpansionError, ShellLexer
from kanipy.dockerfile.lines import LogicalLine, split_lines
from kanipy.dockerfile.mounts import parse_mount
from kanipy.dockerfile.values import (
    SyntaxProblem,
    check_chmod,
    check_owner,
    check_port,
    check_signal,
    parse_duration,
    parse_retries,
)
from kanipy.errors import DockerfileError
from kanipy.fieldwise import Fieldwise

log = logging.getLogger(__name__)

_STAGE_NAME = re.compile(r"^[a-z][a-z0-9\-_.]*$")
# Not allowed as ONBUILD triggers (Dockerfile reference, "ONBUILD").
_NOT_TRIGGERS = (Onbuild.keyword, From.keyword, Maintainer.keyword)


@dataclass(frozen=True, repr=False, eq=False)
class ParsedDockerfile(Fieldwise):
    """The whole file: its escape character and its instructions, in order."""

    escape: str
    instructions: tuple[Instruction, ...]
    filename: str = "Dockerfile"


@dataclass(frozen=True, repr=False, eq=False)
class Parts(Fieldwise):
    """One instruction taken apart for its parser: flags checked, the text after them."""

    keyword: str
    logical: LogicalLine
    flags: Flags
    rest: str
    escape: str
    nested: bool  # inside ONBUILD

    def common(self) -> dict[str, Any]:
        """The fields every instruction has."""
        return {"keyword": self.keyword, "line": self.logical.line,
                "original": self.logical.text}


@dataclass(frozen=True, repr=False, eq=False)
class Parser(Fieldwise):
    """How one keyword is parsed: the flags it accepts and the function for the rest."""

    parse: Callable[[Parts], Instruction]
    flags: FlagSpec = field(default_factory=dict)


# --- one parser per instruction --------------------------------------------------------


def _parse_from(parts: Parts) -> From:
    """``FROM [--platform=P] image [AS name]``."""
    words = split_plain(parts.rest)
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
    return From(**parts.common(), image=words[0], name=name,
                platform=parts.flags.string("platform"))


def _parse_run(parts: Parts) -> Run:
    """``RUN [--mount=...] [--network=...] [--security=...] command``."""
    flags = parts.flags
    heredocs = parts.logical.heredocs
    mounts = tuple(parse_mount(spec) for spec in flags.strings("mount"))
    network = flags.string("network")
    if network is not None and "$" not in network and network not in (
        "none", "host", "default"
    ):
        raise SyntaxProblem(f"unsupported --network={network} (none, host or default)")
    security = flags.string("security")
    if security is not None and security not in ("sandbox", "insecure"):
        raise SyntaxProblem(f"unsupported --security={security} (sandbox or insecure)")
    command = parse_command(parts.keyword, parts.rest)
    if command.exec_form and not command.args:
        raise SyntaxProblem("RUN [] has no command: name the program to run, "
                            'RUN ["executable", "arg"]')
    if heredocs and command.exec_form:
        raise SyntaxProblem("heredocs are not allowed with the exec form of RUN")
    return Run(**parts.common(), command=command, mounts=mounts, network=network,
               security=security, heredocs=heredocs)


def _parse_cmd(parts: Parts) -> Cmd:
    """``CMD ["exe", "arg"]`` or ``CMD command``."""
    return Cmd(**parts.common(), command=parse_command(parts.keyword, parts.rest))


def _parse_entrypoint(parts: Parts) -> Entrypoint:
    """``ENTRYPOINT ["exe", "arg"]`` or ``ENTRYPOINT command``."""
    return Entrypoint(**parts.common(), command=parse_command(parts.keyword, parts.rest))


def _parse_shell(parts: Parts) -> Shell:
    """``SHELL ["executable", "parameters"]``."""
    args = parse_json_array(parts.rest)
    if args is None:
        raise SyntaxProblem(
            'SHELL requires the arguments to be in JSON form: SHELL ["sh", "-c"]'
        )
    if not args:
        raise SyntaxProblem("SHELL requires at least one argument")
    return Shell(**parts.common(), args=tuple(args))


def _parse_env(parts: Parts) -> Env:
    """``ENV K=V ...`` or ``ENV K V``."""
    return Env(**parts.common(), pairs=tuple(parse_pairs(parts.keyword, parts.rest,
                                                         parts.escape)))


def _parse_label(parts: Parts) -> Label:
    """``LABEL k=v ...`` or ``LABEL k v``."""
    return Label(**parts.common(), pairs=tuple(parse_pairs(parts.keyword, parts.rest,
                                                           parts.escape)))


def _parse_arg(parts: Parts) -> Arg:
    """``ARG NAME[=default] ...``."""
    words = parse_words(parts.rest, parts.escape)
    if not words:
        raise SyntaxProblem("ARG requires at least one argument")
    pairs: list[tuple[str, str | None]] = []
    for word in words:
        name, has_value, value = word.partition("=")
        if not name:
            raise SyntaxProblem("ARG names can not be blank")
        pairs.append((name, value if has_value else None))
    return Arg(**parts.common(), pairs=tuple(pairs))


def _parse_expose(parts: Parts) -> Expose:
    """``EXPOSE PORT[-PORT][/PROTO] ...``; literal ports are checked now."""
    ports = split_plain(parts.rest)
    if not ports:
        raise SyntaxProblem("EXPOSE requires at least one argument")
    for port in ports:
        if "$" not in port:
            check_port(port)
    return Expose(**parts.common(), ports=tuple(ports))


def _parse_user(parts: Parts) -> User:
    """``USER user[:group]``."""
    return User(**parts.common(), user=exactly_one(parts.keyword, parts.rest))


def _parse_workdir(parts: Parts) -> Workdir:
    """``WORKDIR /path``."""
    return Workdir(**parts.common(), path=exactly_one(parts.keyword, parts.rest))


def _parse_stopsignal(parts: Parts) -> StopSignal:
    """``STOPSIGNAL signal``."""
    signal = exactly_one(parts.keyword, parts.rest)
    if "$" not in signal:  # else checked once expanded (expand.py)
        check_signal(ShellLexer(parts.escape).process_word(signal, {}))
    return StopSignal(**parts.common(), signal=signal)


def _parse_maintainer(parts: Parts) -> Maintainer:
    """``MAINTAINER name``."""
    return Maintainer(**parts.common(), name=exactly_one(parts.keyword, parts.rest))


def _parse_volume(parts: Parts) -> Volume:
    """``VOLUME ["/a", "/b"]`` or ``VOLUME /a /b``."""
    paths = json_or_plain(parts.rest)
    if not paths or any(not p.strip() for p in paths):
        raise SyntaxProblem("VOLUME specified can not be an empty string")
    return Volume(**parts.common(), paths=tuple(paths))


def _copy_fields(parts: Parts) -> dict[str, Any]:
    """What COPY and ADD share: sources (paths and heredocs), destination, common flags."""
    keyword, flags = parts.keyword, parts.flags
    args = json_or_plain(parts.rest)
    if len(args) < 2:
        raise SyntaxProblem(
            f"{keyword} requires at least two arguments, but only {len(args)} "
            f"{'was' if len(args) == 1 else 'were'} provided. Destination could not be determined"
        )
    *srcs, dest = args
    if is_heredoc_word(dest):
        raise SyntaxProblem(f"{keyword}: a heredoc cannot be the destination")
    by_name: dict[str, Heredoc] = {doc.name: doc for doc in parts.logical.heredocs}
    sources: list[str] = []
    inline: list[Heredoc] = []
    for src in srcs:
        name = heredoc_name(src)
        if name is not None:
            if name not in by_name:
                # An ONBUILD trigger from an image config is one line, without the body.
                raise SyntaxProblem(f"unterminated heredoc {name!r}: no body follows it")
            inline.append(by_name[name])
        else:
            sources.append(src)
    chmod = flags.string("chmod")
    if chmod is not None and "$" not in chmod:
        check_chmod(chmod)
    chown = flags.string("chown")
    if chown is not None and "$" not in chown:
        check_owner("--chown", chown)
    return dict(
        parts.common(),
        sources=tuple(sources),
        dest=dest,
        heredocs=tuple(inline),
        chown=chown,
        chmod=chmod,
        link=bool(flags.boolean("link")),
        excludes=tuple(flags.strings("exclude")),
    )


def _parse_copy(parts: Parts) -> Copy:
    """``COPY [flags] src... dest`` (sources may be ``<<NAME`` heredocs)."""
    fields = _copy_fields(parts)
    from_ = parts.flags.string("from")
    if from_ is not None and not from_.strip():
        raise SyntaxProblem("COPY --from needs a stage name, index or image")
    return Copy(**fields, from_=from_, parents=bool(parts.flags.boolean("parents")))


def _parse_add(parts: Parts) -> Add:
    """``ADD [flags] src... dest``: COPY's sources plus URLs and git repositories."""
    flags = parts.flags
    return Add(
        **_copy_fields(parts),
        checksum=flags.string("checksum"),
        keep_git_dir=bool(flags.boolean("keep-git-dir")),
        unpack=flags.boolean("unpack"),
    )


def _parse_healthcheck(parts: Parts) -> Healthcheck:
    """``HEALTHCHECK [flags] CMD command`` or ``HEALTHCHECK NONE``."""
    flags = parts.flags
    words = parts.rest.split(None, 1)
    if not words:
        raise SyntaxProblem("HEALTHCHECK requires an argument: CMD command or NONE")
    kind = words[0].upper()
    if kind == "NONE":
        if len(words) > 1:
            raise SyntaxProblem("HEALTHCHECK NONE takes no arguments")
        if flags.values:
            raise SyntaxProblem("HEALTHCHECK NONE takes no flags")
        return Healthcheck(**parts.common(), test=("NONE",))
    if kind != "CMD":
        raise SyntaxProblem(f"unknown type {words[0]!r} in HEALTHCHECK (try CMD)")
    if len(words) < 2 or not words[1].strip():
        raise SyntaxProblem("missing command after HEALTHCHECK CMD")
    command = parse_command("HEALTHCHECK", words[1])
    if command.exec_form and not command.args:
        raise SyntaxProblem("missing command after HEALTHCHECK CMD")
    test = ("CMD", *command.args) if command.exec_form else ("CMD-SHELL", command.args[0])
    durations: dict[str, Any] = {}
    for name in ("interval", "timeout", "start-period", "start-interval"):
        value = flags.string(name)
        durations[name.replace("-", "_")] = None if value is None else parse_duration(name, value)
    text = flags.string("retries")
    retries = None if text is None else parse_retries(text)
    return Healthcheck(**parts.common(), test=test, retries=retries, **durations)


def _parse_onbuild(parts: Parts) -> Onbuild:
    """``ONBUILD <instruction>``: the trigger is parsed now, run by a later build."""
    rest = parts.rest
    if parts.nested:
        raise SyntaxProblem("ONBUILD ONBUILD isn't allowed")
    if not rest:
        raise SyntaxProblem("ONBUILD requires at least one argument")
    inner_keyword = rest.split(None, 1)[0].upper()
    if inner_keyword in _NOT_TRIGGERS:
        raise SyntaxProblem(f"{inner_keyword} isn't allowed as an ONBUILD trigger")
    if parts.logical.heredocs:
        raise SyntaxProblem("heredocs are not supported in ONBUILD triggers")
    inner = LogicalLine(parts.logical.line, rest)
    trigger = _build(inner_keyword, inner, parts.escape, nested=True)
    return Onbuild(**parts.common(), expression=rest, trigger=trigger)


_COPY_FLAGS: FlagSpec = {"chown": "string", "chmod": "string", "link": "bool",
                         "exclude": "strings"}

PARSERS: Mapping[str, Parser] = MappingProxyType({
    From.keyword: Parser(_parse_from, {"platform": "string"}),
    Run.keyword: Parser(_parse_run, {"mount": "strings", "network": "string",
                                     "security": "string"}),
    Cmd.keyword: Parser(_parse_cmd),
    Label.keyword: Parser(_parse_label),
    Maintainer.keyword: Parser(_parse_maintainer),
    Expose.keyword: Parser(_parse_expose),
    Env.keyword: Parser(_parse_env),
    # BuildKit's ADD has no --from and no --parents; we reject them as Docker does.
    Add.keyword: Parser(_parse_add, {**_COPY_FLAGS, "checksum": "string",
                                     "keep-git-dir": "bool", "unpack": "bool"}),
    Copy.keyword: Parser(_parse_copy, {**_COPY_FLAGS, "from": "string", "parents": "bool"}),
    Entrypoint.keyword: Parser(_parse_entrypoint),
    Volume.keyword: Parser(_parse_volume),
    User.keyword: Parser(_parse_user),
    Workdir.keyword: Parser(_parse_workdir),
    Arg.keyword: Parser(_parse_arg),
    # BuildKit gives ONBUILD no flags of its own: ``ONBUILD --x ...`` is an unknown flag.
    Onbuild.keyword: Parser(_parse_onbuild),
    StopSignal.keyword: Parser(_parse_stopsignal),
    Healthcheck.keyword: Parser(_parse_healthcheck, {
        "interval": "string", "timeout": "string", "start-period": "string",
        "start-interval": "string", "retries": "string"}),
    Shell.keyword: Parser(_parse_shell),
})
check_table("parse", PARSERS)


# --- the whole file --------------------------------------------------------------------


def _build(keyword: str, logical: LogicalLine, escape: str, nested: bool) -> Instruction:
    parts = logical.text.split(None, 1)
    flag_words, rest = extract_flags(parts[1] if len(parts) > 1 else "")
    parser = PARSERS.get(keyword)
    # Flags are checked before the keyword is known to exist, as BuildKit does.
    flags = Flags(keyword, flag_words, parser.flags if parser is not None else {})
    if parser is None:
        raise SyntaxProblem(f"unknown instruction: {keyword}")
    return parser.parse(Parts(keyword, logical, flags, rest.strip(), escape, nested))


def build_instruction(logical: LogicalLine, escape: str, filename: str) -> Instruction:
    """The typed instruction of one logical line; errors name ``filename`` and the line."""
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
        try:
            if keyword in _NOT_TRIGGERS:
                raise SyntaxProblem(f"{keyword} isn't allowed as an ONBUILD trigger")
            if "\0" in text:
                raise SyntaxProblem("it contains a NUL character (\\0)")
            out.append(_build(keyword, logical, escape, nested=True))
        except (SyntaxProblem, ExpansionError) as exc:
            raise DockerfileError(
                f"the base image's ONBUILD trigger {logical.text[:80]!r} cannot run: {exc}",
                line, filename) from None
    return out
