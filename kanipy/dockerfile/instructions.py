"""Typed Dockerfile instructions: what each one says, before and after expansion.

Values only; parsing lives in ``parse.py`` and expansion in ``expand.py``. Every
instruction keeps its first line number and ``original`` text (as written, continuation
lines joined) for history entries, cache keys and error messages.

Each class names its keyword (``Run.keyword == "RUN"``): the one key of every phase's
table (parse, expand, execute), checked against ``INSTRUCTION_TYPES`` by ``check_table``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field

from kanipy.fieldwise import Fieldwise

log = logging.getLogger(__name__)


@dataclass(frozen=True, repr=False, eq=False, kw_only=True)
class Instruction(Fieldwise):
    """Common part: ``keyword`` upper-case, ``line`` 1-based, ``original`` as written."""

    keyword: str = ""  # each concrete class sets its own: ``Run.keyword == "RUN"``
    line: int
    original: str

    def render(self) -> str:
        """The instruction as text (after expansion, when called on a resolved one)."""
        return self.original


@dataclass(frozen=True, repr=False, eq=False)
class Heredoc(Fieldwise):
    """One here-document: ``<<NAME``, ``<<-NAME`` (``chomp``), ``<<"NAME"`` (no expansion).

    ``content`` is the body as written, every line ending in a newline; ``chomp`` tells the
    user wrote ``<<-`` and leading tabs are to be stripped (``stripped_content``).
    ``fd`` is the file descriptor prefix (``3<<EOF``), 0 when none.
    """

    name: str
    content: str
    expand: bool = True
    chomp: bool = False
    fd: int = 0

    @property
    def stripped_content(self) -> str:
        if not self.chomp:
            return self.content
        return "".join(line.lstrip("\t") for line in self.content.splitlines(keepends=True))


@dataclass(frozen=True, repr=False, eq=False)
class Command(Fieldwise):
    """RUN/CMD/ENTRYPOINT/HEALTHCHECK command: exec form (JSON) or shell form.

    Shell form keeps the text as one element (``args == (text,)``): Docker passes it to the
    shell untouched (the shell, not the builder, expands variables), and so do we.
    """

    args: tuple[str, ...]
    exec_form: bool

    def render(self) -> str:
        return json.dumps(list(self.args)) if self.exec_form else self.args[0]


@dataclass(frozen=True, repr=False, eq=False)
class Mount(Fieldwise):
    """One ``RUN --mount=...`` (Dockerfile reference, "RUN --mount").

    Defaults follow the reference: bind mounts are read-only unless ``rw``; cache mounts
    default to mode 0o755, sharing ``shared``, id = target; secret mounts default to
    /run/secrets/<id>, mode 0o400; ssh to id ``default`` and mode 0o600.
    """

    type: str
    target: str | None = None
    source: str | None = None
    from_: str | None = None
    readonly: bool = False
    id: str | None = None
    sharing: str | None = None
    mode: int | None = None
    uid: int | None = None
    gid: int | None = None
    required: bool = False
    size: str | None = None
    env: str | None = None
    spec: str = ""


@dataclass(frozen=True, repr=False, eq=False, kw_only=True)
class From(Instruction):
    """``FROM [--platform=P] image [AS name]``; ``name`` lower-cased (case-insensitive)."""

    keyword: str = "FROM"
    image: str
    name: str | None = None
    platform: str | None = None

    def render(self) -> str:
        text = f"FROM {self.image}"
        if self.platform:
            text = f"FROM --platform={self.platform} {self.image}"
        return f"{text} AS {self.name}" if self.name else text


@dataclass(frozen=True, repr=False, eq=False, kw_only=True)
class Run(Instruction):
    """``RUN [--mount=...] [--network=...] [--security=...] command``.

    Heredocs, as BuildKit runs them (frontend/dockerfile2llb ``dispatchRun``):

    * the command is just one heredoc (``RUN <<EOF``): if its body starts with ``#!`` it is
      written to an executable file (BuildKit uses ``/dev/pipes/<NAME>``) and that file is
      executed; otherwise the (tab-stripped, for ``<<-``) body is the script given to the
      shell as ``SHELL... <body>`` (i.e. ``/bin/sh -c "<body>"``). ``expand`` is ignored:
      the shell does its own expansion.
    * anything else (``RUN python3 <<EOF``, ``RUN cat <<A >a <<B >b``): the shell gets the
      whole text ``command + "\\n" + body + NAME`` for each heredoc, and handles the
      heredocs itself. ``shell_script()`` builds that text.
    """

    keyword: str = "RUN"
    command: Command
    mounts: tuple[Mount, ...] = ()
    network: str | None = None
    security: str | None = None
    heredocs: tuple[Heredoc, ...] = ()

    def shell_script(self) -> str:
        """The text to pass to the shell for a shell-form RUN (heredocs included)."""
        text = self.command.args[0]
        if not self.heredocs:
            return text
        only = self.heredocs[0]
        if len(self.heredocs) == 1 and _is_lone_heredoc(text, only):
            return only.stripped_content
        for doc in self.heredocs:
            text += "\n" + doc.content + doc.name
        return text

    def heredoc_executable(self) -> Heredoc | None:
        """The heredoc to write to a file and execute (single heredoc starting ``#!``)."""
        if len(self.heredocs) == 1 and _is_lone_heredoc(self.command.args[0], self.heredocs[0]):
            if self.heredocs[0].content.startswith("#!"):
                return self.heredocs[0]
        return None

    def render(self) -> str:
        parts = ["RUN"]
        parts += [f"--mount={m.spec}" for m in self.mounts]
        if self.network:
            parts.append(f"--network={self.network}")
        if self.security:
            parts.append(f"--security={self.security}")
        parts.append(self.command.render())
        text = " ".join(parts)
        for doc in self.heredocs:
            text += "\n" + doc.content + doc.name
        return text


def _is_lone_heredoc(text: str, doc: Heredoc) -> bool:
    word = text.strip()
    return word.lstrip("0123456789").startswith("<<") and doc.name in word and " " not in word


@dataclass(frozen=True, repr=False, eq=False, kw_only=True)
class Cmd(Instruction):
    """``CMD ["exe", "arg"]`` or ``CMD command`` (never expanded by the builder)."""

    keyword: str = "CMD"
    command: Command

    def render(self) -> str:
        return f"CMD {self.command.render()}"


@dataclass(frozen=True, repr=False, eq=False, kw_only=True)
class Entrypoint(Instruction):
    """``ENTRYPOINT ["exe", "arg"]`` or ``ENTRYPOINT command`` (never expanded)."""

    keyword: str = "ENTRYPOINT"
    command: Command

    def render(self) -> str:
        return f"ENTRYPOINT {self.command.render()}"


@dataclass(frozen=True, repr=False, eq=False, kw_only=True)
class Shell(Instruction):
    """``SHELL ["executable", "parameters"]`` (JSON form only)."""

    keyword: str = "SHELL"
    args: tuple[str, ...]

    def render(self) -> str:
        return f"SHELL {json.dumps(list(self.args))}"


@dataclass(frozen=True, repr=False, eq=False, kw_only=True)
class Env(Instruction):
    """``ENV K=V ...`` or the legacy ``ENV K V``; all values see the state before the line."""

    keyword: str = "ENV"
    pairs: tuple[tuple[str, str], ...]

    def render(self) -> str:
        return "ENV " + " ".join(f"{k}={json.dumps(v) if _needs_quote(v) else v}"
                                 for k, v in self.pairs)


@dataclass(frozen=True, repr=False, eq=False, kw_only=True)
class Arg(Instruction):
    """``ARG NAME[=default] ...``; a default of None means declared without one."""

    keyword: str = "ARG"
    pairs: tuple[tuple[str, str | None], ...]

    def render(self) -> str:
        return "ARG " + " ".join(
            k if v is None else f"{k}={json.dumps(v) if _needs_quote(v) else v}"
            for k, v in self.pairs
        )


@dataclass(frozen=True, repr=False, eq=False, kw_only=True)
class Label(Instruction):
    """``LABEL k=v ...`` (or legacy ``LABEL k v``)."""

    keyword: str = "LABEL"
    pairs: tuple[tuple[str, str], ...]

    def render(self) -> str:
        return "LABEL " + " ".join(f"{k}={json.dumps(v)}" for k, v in self.pairs)


def _needs_quote(value: str) -> bool:
    return value == "" or any(c.isspace() or c in "\"'$\\" for c in value)


@dataclass(frozen=True, repr=False, eq=False, kw_only=True)
class Expose(Instruction):
    """``EXPOSE 80 443/tcp 8000-8010/udp``; after expansion see ``exposed_ports()``."""

    keyword: str = "EXPOSE"
    ports: tuple[str, ...]

    def exposed_ports(self) -> list[str]:
        """Image-config keys (``80/tcp``), one per port, ranges expanded as Docker does."""
        out: list[str] = []
        for spec in self.ports:
            port, _, proto = spec.partition("/")
            proto = (proto or "tcp").lower()
            low, _, high = port.partition("-")
            for number in range(int(low), int(high or low) + 1):
                out.append(f"{number}/{proto}")
        return out

    def render(self) -> str:
        return "EXPOSE " + " ".join(self.ports)


@dataclass(frozen=True, repr=False, eq=False, kw_only=True)
class User(Instruction):
    """``USER user[:group]``."""

    keyword: str = "USER"
    user: str

    def render(self) -> str:
        return f"USER {self.user}"


@dataclass(frozen=True, repr=False, eq=False, kw_only=True)
class Workdir(Instruction):
    """``WORKDIR /path`` (relative paths are relative to the previous WORKDIR)."""

    keyword: str = "WORKDIR"
    path: str

    def render(self) -> str:
        return f"WORKDIR {self.path}"


@dataclass(frozen=True, repr=False, eq=False, kw_only=True)
class Volume(Instruction):
    """``VOLUME ["/a", "/b"]`` or ``VOLUME /a /b``."""

    keyword: str = "VOLUME"
    paths: tuple[str, ...]

    def render(self) -> str:
        return "VOLUME " + json.dumps(list(self.paths))


@dataclass(frozen=True, repr=False, eq=False, kw_only=True)
class Copy(Instruction):
    """``COPY [--from] [--chown] [--chmod] [--link] [--parents] [--exclude] src... dest``.

    ``heredocs`` are inline sources (``COPY <<EOF /dst``): each is a file named after the
    heredoc with the heredoc's content; unquoted ones have their content expanded.
    ``sources`` lists only the paths (or URLs, for ADD) among the sources.
    """

    keyword: str = "COPY"
    sources: tuple[str, ...]
    dest: str
    heredocs: tuple[Heredoc, ...] = ()
    from_: str | None = None
    chown: str | None = None
    chmod: str | None = None
    link: bool = False
    parents: bool = False
    excludes: tuple[str, ...] = ()

    def _flag_text(self) -> list[str]:
        parts: list[str] = []
        if self.from_ is not None:
            parts.append(f"--from={self.from_}")
        if self.chown is not None:
            parts.append(f"--chown={self.chown}")
        if self.chmod is not None:
            parts.append(f"--chmod={self.chmod}")
        if self.link:
            parts.append("--link")
        if self.parents:
            parts.append("--parents")
        parts += [f"--exclude={e}" for e in self.excludes]
        return parts

    def render(self) -> str:
        srcs = [f"<<{d.name}" for d in self.heredocs] + list(self.sources)
        text = " ".join([self.keyword, *self._flag_text(), *srcs, self.dest])
        for doc in self.heredocs:
            text += "\n" + doc.content + doc.name
        return text


@dataclass(frozen=True, repr=False, eq=False, kw_only=True)
class Add(Copy):
    """``ADD`` = COPY's flags plus ``--checksum``, ``--keep-git-dir``, ``--unpack``."""

    keyword: str = "ADD"
    checksum: str | None = None
    keep_git_dir: bool = False
    unpack: bool | None = None

    def _flag_text(self) -> list[str]:
        parts = super()._flag_text()
        if self.checksum is not None:
            parts.append(f"--checksum={self.checksum}")
        if self.keep_git_dir:
            parts.append("--keep-git-dir")
        if self.unpack is not None:
            parts.append(f"--unpack={'true' if self.unpack else 'false'}")
        return parts


@dataclass(frozen=True, repr=False, eq=False, kw_only=True)
class Healthcheck(Instruction):
    """``HEALTHCHECK [flags] CMD command`` or ``HEALTHCHECK NONE``; durations in ns.

    ``test`` is the image-config form: ``["NONE"]``, ``["CMD", ...]`` or ``["CMD-SHELL", s]``.
    """

    keyword: str = "HEALTHCHECK"
    test: tuple[str, ...]
    interval: int | None = None
    timeout: int | None = None
    start_period: int | None = None
    start_interval: int | None = None
    retries: int | None = None

    def render(self) -> str:
        if self.test == ("NONE",):
            return "HEALTHCHECK NONE"
        flags = []
        for name, value in (("interval", self.interval), ("timeout", self.timeout),
                            ("start-period", self.start_period),
                            ("start-interval", self.start_interval)):
            if value is not None:
                flags.append(f"--{name}={value / 1e9:g}s")
        if self.retries is not None:
            flags.append(f"--retries={self.retries}")
        cmd = json.dumps(list(self.test[1:])) if self.test[0] == "CMD" else self.test[1]
        return " ".join(["HEALTHCHECK", *flags, "CMD", cmd])


@dataclass(frozen=True, repr=False, eq=False, kw_only=True)
class StopSignal(Instruction):
    """``STOPSIGNAL SIGTERM`` (a name or a number)."""

    keyword: str = "STOPSIGNAL"
    signal: str

    def render(self) -> str:
        return f"STOPSIGNAL {self.signal}"


@dataclass(frozen=True, repr=False, eq=False, kw_only=True)
class Maintainer(Instruction):
    """``MAINTAINER name`` (deprecated; sets the config's Author)."""

    keyword: str = "MAINTAINER"
    name: str

    def render(self) -> str:
        return f"MAINTAINER {self.name}"


@dataclass(frozen=True, repr=False, eq=False, kw_only=True)
class Onbuild(Instruction):
    """``ONBUILD <instruction>``: ``expression`` is what goes into the config's OnBuild list."""

    keyword: str = "ONBUILD"
    expression: str
    trigger: Instruction = field(compare=False)

    def render(self) -> str:
        return f"ONBUILD {self.expression}"


# Every instruction a Dockerfile may hold, in the Dockerfile reference's order.
INSTRUCTION_TYPES: tuple[type[Instruction], ...] = (
    From, Run, Cmd, Label, Maintainer, Expose, Env, Add, Copy, Entrypoint, Volume, User,
    Workdir, Arg, Onbuild, StopSignal, Healthcheck, Shell,
)
KEYWORDS: frozenset[str] = frozenset(cls.keyword for cls in INSTRUCTION_TYPES)


def check_table(phase: str, table: Mapping[str, object],
                exempt: frozenset[str] = frozenset()) -> None:
    """Fail at import when a phase's table (parse, expand, execute) misses a keyword or
    has one no class names: a new instruction cannot be parsed and then never run.

    ``exempt``: keywords the phase handles outside its table (the stage loop runs FROM).
    """
    missing = sorted(KEYWORDS - exempt - table.keys())
    unknown = sorted(table.keys() - KEYWORDS)
    if missing or unknown:
        raise RuntimeError(
            f"the {phase} table does not match the instruction classes: "
            f"missing {missing or 'none'}, unknown {unknown or 'none'}"
        )
