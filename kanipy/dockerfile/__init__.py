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
    "Volume", "Workdir", "format_plan", "parse_dockerfile",
    "parse_instructions", "plan_build",
]
