"""Per-stage ARG/ENV state: what the words of each instruction of a stage are expanded in.

``StageScope.resolve`` expands an instruction by its keyword's entry in ``expand.py``'s
table, with the state from before the instruction, and ARG and ENV advance the state.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from kanipy.dockerfile.expand import EXPANDERS
from kanipy.dockerfile.instructions import Heredoc, Instruction
from kanipy.dockerfile.lex import ExpansionError, ShellLexer
from kanipy.dockerfile.values import SyntaxProblem, check_no_nul
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
        expander = EXPANDERS[ins.keyword]
        try:
            out = expander.apply(self, ins, env)
            for name in expander.fields:
                _check_no_nul(getattr(out, name))
        except (ExpansionError, SyntaxProblem) as exc:
            raise self._error(exc, ins) from exc  # the cause tells syntax from values
        return out

    def arg_value(self, name: str, default: str | None, env: dict[str, str]) -> str | None:
        """An ARG's value: --build-arg wins; then the default; then a heading or platform
        ARG; then the value it already has (declared earlier in the stage or inherited
        from the parent stage): BuildKit's bare ``ARG NAME`` leaves a set value alone."""
        plan = self.plan
        if name in plan.build_args:
            return plan.build_args[name]
        if default is not None:
            return self.lexer.process_word(default, env)
        if plan.meta_args.get(name) is not None:
            return plan.meta_args[name]
        if name in plan.platform_args:
            return plan.platform_args[name]
        return self.args.get(name)


def _check_no_nul(value: object) -> None:
    """A Dockerfile line cannot hold a NUL (``lines.py``), but a value from the base
    image's Env can bring one into a path, a name or a variable: refused the same way."""
    if isinstance(value, str):
        check_no_nul(value)
    elif isinstance(value, tuple):
        for item in value:
            _check_no_nul(item)


def heredoc_file_content(doc: Heredoc) -> str:
    """What a COPY heredoc source writes: the body, tab-stripped for ``<<-``."""
    return doc.stripped_content
