"""The Dockerfile front end: parse, expand (BuildKit's rules), plan stages, .dockerignore.

Entry points for the build engine: ``plan_build`` (Dockerfile -> BuildPlan), ``StageScope``
(expand each instruction of a stage in order), ``parse_instructions`` (ONBUILD triggers),
``format_plan`` (``--dry-run``) and ``kanipy.dockerfile.ignore``.
"""

from __future__ import annotations

from kanipy.dockerfile.dryrun import format_plan
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
from kanipy.dockerfile.parse import parse_dockerfile, parse_instructions
from kanipy.dockerfile.scope import PROXY_ARGS, StageScope
from kanipy.dockerfile.stages import BuildPlan, Stage, StageRef, plan_build

__all__ = [
    "Add", "Arg", "BuildPlan", "Cmd", "Command", "Copy", "Entrypoint", "Env", "Expose",
    "From", "Healthcheck", "Heredoc", "Instruction", "Label", "Maintainer", "Mount", "Onbuild",
    "PROXY_ARGS", "Run", "Shell", "Stage", "StageRef", "StageScope", "StopSignal", "User",
    "Volume", "Workdir", "apply_chmod", "format_plan", "parse_dockerfile",
    "parse_instructions", "plan_build",
]


def apply_chmod(spec: str, mode: int, is_dir: bool) -> int:
    """The mode ``--chmod=spec`` gives a copied entry; kept here for old imports.

    What a mode does to a file is decided when it is copied, so the rule lives with the
    COPY handler (``kanipy.executor.handlers.copy.apply_chmod``). Imported on call: the
    executor imports this package.
    """
    from kanipy.executor.handlers.copy import apply_chmod as rule

    return rule(spec, mode, is_dir)
