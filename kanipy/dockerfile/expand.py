"""The expansion phase: for each keyword, which words expand and by which BuildKit rule.

Docker expands variables in ADD, COPY, ENV, EXPOSE, FROM, LABEL, STOPSIGNAL, USER, VOLUME,
WORKDIR and ARG (Dockerfile reference, "Environment replacement"), plus the values of
``COPY --from/--chown/--chmod/--exclude``, ``ADD --checksum`` and ``RUN --mount``. RUN's
command, CMD, ENTRYPOINT, SHELL, HEALTHCHECK, MAINTAINER and ONBUILD are left as written:
a shell-form command is expanded by the shell at run time, an exec form never. All words
of one instruction see the state from before it (``ENV A=1 B=$A`` gives B the previous A).

``EXPANDERS`` maps each keyword to an ``Expander``: the instruction's fields that expand,
each with its ``WordRule``, and either a function or, for plain fields, the generic expansion
of those fields. ``StageScope.resolve`` looks the instruction's keyword up here.
"""

from __future__ import annotations

import dataclasses
import enum
import logging
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

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
from kanipy.dockerfile.mounts import parse_mount
from kanipy.dockerfile.values import (
    SyntaxProblem,
    check_chmod,
    check_owner,
    check_port,
    check_signal,
)

if TYPE_CHECKING:
    from kanipy.dockerfile.scope import StageScope

log = logging.getLogger(__name__)


class WordRule(enum.Enum):
    """How a field's words are expanded (BuildKit's shell lexer, ``lex.py``)."""

    WORD = "one word: quotes removed, never split (ProcessWord)"
    WORDS = "split into words on unquoted whitespace (ProcessWords)"
    HEREDOC = "an unquoted heredoc's body: $ forms expanded, quotes kept"


# (scope, instruction, the environment from before it) -> the expanded instruction
Expand = Callable[["StageScope", Any, dict[str, str]], Instruction]
Check = Callable[[Any], None]


@dataclasses.dataclass(frozen=True)
class Expander:
    """How one keyword's instruction is expanded.

    ``fields`` names the instruction's fields that expand, with their rule; empty means
    the instruction is left as written (``note`` says why). Without ``function``, the
    ``fields`` (strings, and tuples of them) are expanded in order and ``check`` then
    looks at the result.
    """

    fields: Mapping[str, WordRule]
    function: Expand | None = None
    check: Check | None = None
    note: str = ""

    def apply(self, scope: StageScope, ins: Instruction, env: dict[str, str]) -> Instruction:
        """``ins`` with its words expanded in ``env``; may advance ``scope``'s state."""
        if self.function is not None:
            return self.function(scope, ins, env)
        if not self.fields:
            return ins
        values = {name: _expand_value(scope, getattr(ins, name), rule, env)
                  for name, rule in self.fields.items()}
        out = dataclasses.replace(ins, **values)
        if self.check is not None:
            self.check(out)
        return out


def _expand_value(scope: StageScope, value: Any, rule: WordRule, env: dict[str, str]) -> Any:
    """One field: a string is one word; a tuple is expanded item by item (under WORDS an
    item may become several words); None stays None."""
    if value is None:
        return None
    if isinstance(value, str):
        return scope.lexer.process_word(value, env)
    if rule is WordRule.WORDS:
        words: list[str] = []
        for item in value:
            words += scope.lexer.process_words(item, env)
        return tuple(words)
    return tuple(_expand_value(scope, item, rule, env) for item in value)


def _as_written(note: str) -> Expander:
    return Expander(fields=MappingProxyType({}), note=note)


# --- the instructions that need more than their fields expanded -----------------------


def _expand_from(scope: StageScope, ins: From, env: dict[str, str]) -> From:
    # Planning expanded the FROM line already, with the heading ARGs (stages.py).
    return dataclasses.replace(ins, image=scope.stage.base_text, platform=scope.stage.platform)


def _expand_arg(scope: StageScope, ins: Arg, env: dict[str, str]) -> Arg:
    pairs = [(name, scope.arg_value(name, default, env)) for name, default in ins.pairs]
    for name, value in pairs:
        scope.args[name] = value
    return dataclasses.replace(ins, pairs=tuple(pairs))


def _expand_env(scope: StageScope, ins: Env, env: dict[str, str]) -> Env:
    word = scope.lexer.process_word
    pairs = [(word(k, env), word(v, env)) for k, v in ins.pairs]
    for key, value in pairs:
        if not key:
            raise SyntaxProblem("ENV names can not be blank")
        scope.env[key] = value
    return dataclasses.replace(ins, pairs=tuple(pairs))


def _expand_run(scope: StageScope, ins: Run, env: dict[str, str]) -> Run:
    mounts = tuple(parse_mount(scope.lexer.process_word(m.spec, env)) for m in ins.mounts)
    return dataclasses.replace(ins, mounts=mounts)


def _expand_copy(scope: StageScope, ins: Copy, env: dict[str, str]) -> Copy:
    word = scope.lexer.process_word

    def opt(value: str | None) -> str | None:
        return None if value is None else word(value, env)

    chmod = opt(ins.chmod)
    if chmod is not None:
        check_chmod(chmod)
    chown = opt(ins.chown)
    if chown is not None:
        check_owner("--chown", chown)
    docs = tuple(
        dataclasses.replace(d, content=scope.lexer.process_heredoc(d.stripped_content, env),
                            chomp=False, expand=False)
        if d.expand else d
        for d in ins.heredocs
    )
    fields: dict[str, object] = {
        "sources": tuple(word(s, env) for s in ins.sources),
        "dest": word(ins.dest, env),
        "heredocs": docs,
        "from_": opt(ins.from_),
        "chown": chown,
        "chmod": chmod,
        "excludes": tuple(word(e, env) for e in ins.excludes),
    }
    if isinstance(ins, Add):
        fields["checksum"] = opt(ins.checksum)
    return dataclasses.replace(ins, **fields)  # type: ignore[arg-type]


def _check_expose(ins: Expose) -> None:
    for port in ins.ports:
        check_port(port)


def _check_stopsignal(ins: StopSignal) -> None:
    # BuildKit checks the signal once expanded (dispatchStopSignal).
    check_signal(ins.signal)


def _check_volume(ins: Volume) -> None:
    if any(not p for p in ins.paths):
        raise SyntaxProblem("VOLUME specified can not be an empty string")


_W = WordRule.WORD
_COPY_FIELDS = {"sources": _W, "dest": _W, "heredocs": WordRule.HEREDOC, "from_": _W,
                "chown": _W, "chmod": _W, "excludes": _W}
_SHELL_EXPANDS = "the shell expands a shell-form command when it runs; an exec form never"

EXPANDERS: Mapping[str, Expander] = MappingProxyType({
    From.keyword: Expander({"image": _W, "platform": _W}, _expand_from,
                           note="expanded while planning, with the heading ARGs"),
    Run.keyword: Expander({"mounts": _W}, _expand_run,
                          note=f"each --mount value, parsed again; {_SHELL_EXPANDS}"),
    Cmd.keyword: _as_written(_SHELL_EXPANDS),
    Label.keyword: Expander({"pairs": _W}),
    Maintainer.keyword: _as_written("Docker leaves MAINTAINER as written"),
    Expose.keyword: Expander({"ports": WordRule.WORDS}, check=_check_expose),
    Env.keyword: Expander({"pairs": _W}, _expand_env),
    Add.keyword: Expander({**_COPY_FIELDS, "checksum": _W}, _expand_copy),
    Copy.keyword: Expander(_COPY_FIELDS, _expand_copy),
    Entrypoint.keyword: _as_written(_SHELL_EXPANDS),
    Volume.keyword: Expander({"paths": _W}, check=_check_volume),
    User.keyword: Expander({"user": _W}),
    Workdir.keyword: Expander({"path": _W}),
    Arg.keyword: Expander({"pairs": _W}, _expand_arg,
                          note="defaults only; a --build-arg value is taken as given"),
    Onbuild.keyword: _as_written("the trigger is expanded by the build that runs it"),
    StopSignal.keyword: Expander({"signal": _W}, check=_check_stopsignal),
    Healthcheck.keyword: _as_written(_SHELL_EXPANDS),
    Shell.keyword: _as_written("Docker leaves SHELL as written"),
})
check_table("expand", EXPANDERS)
