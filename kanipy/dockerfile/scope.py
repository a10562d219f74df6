"""Per-stage ARG/ENV state and the expansion of an instruction's words.

Docker expands variables in ADD, COPY, ENV, EXPOSE, FROM, LABEL, STOPSIGNAL, USER, VOLUME,
WORKDIR and ARG (Dockerfile reference, "Environment replacement"), plus the values of
``COPY --from/--chown/--chmod/--exclude``, ``ADD --checksum`` and ``RUN --mount``. RUN, CMD,
ENTRYPOINT, SHELL, HEALTHCHECK, MAINTAINER and ONBUILD are left as written: a shell-form
command is expanded by the shell at run time, an exec form never. All words of one
instruction see the state from before it (``ENV A=1 B=$A`` gives B the previous A).
"""

from __future__ import annotations

import dataclasses
import logging
from typing import TYPE_CHECKING

from kanipy.dockerfile.instructions import (
    Add,
    Arg,
    Copy,
    Env,
    Expose,
    From,
    Heredoc,
    Instruction,
    Label,
    Run,
    StopSignal,
    User,
    Volume,
    Workdir,
)
from kanipy.dockerfile.lex import ExpansionError, ShellLexer
from kanipy.dockerfile.parse import SyntaxProblem, check_chmod, check_port, parse_mount
from kanipy.errors import DockerfileError

if TYPE_CHECKING:
    from kanipy.dockerfile.stages import BuildPlan, Stage

log = logging.getLogger(__name__)

# Dockerfile reference, "Predefined ARGs": usable in RUN without an ARG line, never stored
# in the image or its history.
PROXY_ARGS = frozenset({
    "HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "FTP_PROXY", "ftp_proxy",
    "NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy",
})


def parse_env_list(env: list[str]) -> dict[str, str]:
    """An image config's ``Env`` (``KEY=VALUE`` strings) as an ordered dict."""
    out: dict[str, str] = {}
    for item in env:
        key, _, value = item.partition("=")
        if key:
            out[key] = value
    return out


class StageScope:
    """The words one stage sees, instruction by instruction.

    Build one per stage with the base image's config Env, then call ``resolve`` on each
    instruction in order: it returns the instruction with its words expanded and advances
    the ARG/ENV state. ``env`` is the image Env so far; ``run_environment()`` the ARG
    values a RUN also sees (never stored in the image).
    """

    def __init__(self, plan: BuildPlan, stage: Stage, base_env: list[str]) -> None:
        self.plan = plan
        self.stage = stage
        self.env: dict[str, str] = parse_env_list(base_env)
        self.args: dict[str, str | None] = {}
        self.lexer = ShellLexer(plan.escape)

    # --- state -----------------------------------------------------------------------

    def expansion_env(self) -> dict[str, str]:
        """ARGs that are set, overridden by ENV (ENV always wins over ARG of the same name)."""
        out = {k: v for k, v in self.args.items() if v is not None}
        out.update(self.env)
        return out

    def run_environment(self) -> dict[str, str]:
        """ARG values a RUN sees in its environment on top of ``env``.

        The stage's set ARGs not shadowed by ENV, plus the predefined proxy ARGs given as
        build args (usable without an ARG line).
        """
        out = {k: v for k, v in self.plan.build_args.items() if k in PROXY_ARGS}
        out.update({k: v for k, v in self.args.items() if v is not None})
        for key in self.env:
            out.pop(key, None)
        return out

    def image_env(self) -> list[str]:
        """``env`` as an image config's Env list."""
        return [f"{k}={v}" for k, v in self.env.items()]

    # --- expansion -------------------------------------------------------------------

    def _error(self, exc: Exception, ins: Instruction) -> DockerfileError:
        return DockerfileError(str(exc), ins.line, self.plan.filename)

    def expand(self, word: str, env: dict[str, str] | None = None) -> str:
        """One word with the current state (raises ExpansionError)."""
        return self.lexer.process_word(word, self.expansion_env() if env is None else env)

    def resolve(self, ins: Instruction) -> Instruction:
        """``ins`` with its words expanded per Docker's rules; ARG and ENV update the state."""
        env = self.expansion_env()
        try:
            return self._resolve(ins, env)
        except (ExpansionError, SyntaxProblem) as exc:
            raise self._error(exc, ins) from None

    def _resolve(self, ins: Instruction, env: dict[str, str]) -> Instruction:
        word = self.lexer.process_word
        replace = dataclasses.replace
        if isinstance(ins, Arg):
            pairs: list[tuple[str, str | None]] = []
            for name, default in ins.pairs:
                value = self._arg_value(name, default, env)
                pairs.append((name, value))
            for name, value in pairs:
                self.args[name] = value
            return replace(ins, pairs=tuple(pairs))
        if isinstance(ins, Env):
            env_pairs = [(word(k, env), word(v, env)) for k, v in ins.pairs]
            for key, value in env_pairs:
                if not key:
                    raise SyntaxProblem("ENV names can not be blank")
                self.env[key] = value
            return replace(ins, pairs=tuple(env_pairs))
        if isinstance(ins, Label):
            return replace(ins, pairs=tuple((word(k, env), word(v, env)) for k, v in ins.pairs))
        if isinstance(ins, From):
            return replace(ins, image=self.stage.base_text, platform=self.stage.platform)
        if isinstance(ins, Run):
            mounts = tuple(parse_mount(word(m.spec, env)) for m in ins.mounts)
            return replace(ins, mounts=mounts)
        if isinstance(ins, Copy):
            return self._resolve_copy(ins, env)
        if isinstance(ins, Expose):
            ports: list[str] = []
            for spec in ins.ports:
                ports += self.lexer.process_words(spec, env)
            for port in ports:
                check_port(port)
            return replace(ins, ports=tuple(ports))
        if isinstance(ins, User):
            return replace(ins, user=word(ins.user, env))
        if isinstance(ins, Workdir):
            return replace(ins, path=word(ins.path, env))
        if isinstance(ins, StopSignal):
            return replace(ins, signal=word(ins.signal, env))
        if isinstance(ins, Volume):
            paths = tuple(word(p, env) for p in ins.paths)
            if any(not p for p in paths):
                raise SyntaxProblem("VOLUME specified can not be an empty string")
            return replace(ins, paths=paths)
        return ins

    def _arg_value(self, name: str, default: str | None, env: dict[str, str]) -> str | None:
        """--build-arg wins; then the default; then a heading ARG or a platform ARG."""
        plan = self.plan
        if name in plan.build_args:
            return plan.build_args[name]
        if default is not None:
            return self.lexer.process_word(default, env)
        if name in plan.meta_args:
            return plan.meta_args[name]
        return plan.platform_args.get(name)

    def _resolve_copy(self, ins: Copy, env: dict[str, str]) -> Copy:
        word = self.lexer.process_word

        def opt(value: str | None) -> str | None:
            return None if value is None else word(value, env)

        chmod = opt(ins.chmod)
        if chmod is not None:
            check_chmod(chmod)
        docs = tuple(
            dataclasses.replace(d, content=self.lexer.process_heredoc(d.stripped_content, env),
                                chomp=False, expand=False)
            if d.expand else d
            for d in ins.heredocs
        )
        fields: dict[str, object] = {
            "sources": tuple(word(s, env) for s in ins.sources),
            "dest": word(ins.dest, env),
            "heredocs": docs,
            "from_": opt(ins.from_),
            "chown": opt(ins.chown),
            "chmod": chmod,
            "excludes": tuple(word(e, env) for e in ins.excludes),
        }
        if isinstance(ins, Add):
            fields["checksum"] = opt(ins.checksum)
        return dataclasses.replace(ins, **fields)  # type: ignore[arg-type]


def heredoc_file_content(doc: Heredoc) -> str:
    """What a COPY heredoc source writes: the body, tab-stripped for ``<<-``."""
    return doc.stripped_content
