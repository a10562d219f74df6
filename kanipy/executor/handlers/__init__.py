"""Instruction handlers, one per Dockerfile instruction, and the table that picks them.

The table is keyed by the instruction keyword, as the parse and expansion phases
key theirs, and each entry says what kind of step the instruction is (see
``kanipy.executor.step``). FROM has no entry: the stage loop starts with it.
"""

from __future__ import annotations

from kanipy.dockerfile.instructions import check_table
from kanipy.executor.handlers.copy import handle_add, handle_copy
from kanipy.executor.handlers.metadata import (
    handle_arg,
    handle_cmd,
    handle_entrypoint,
    handle_env,
    handle_expose,
    handle_healthcheck,
    handle_label,
    handle_maintainer,
    handle_onbuild,
    handle_shell,
    handle_stopsignal,
    handle_user,
    handle_volume,
)
from kanipy.executor.handlers.run import handle_run
from kanipy.executor.handlers.workdir import handle_workdir
from kanipy.executor.step import StepKind, StepRule

METADATA, PATHS, TREE = StepKind.METADATA, StepKind.PATHS, StepKind.TREE

HANDLERS: dict[str, StepRule] = {
    "ADD": StepRule(handle_add, PATHS),
    "ARG": StepRule(handle_arg, METADATA),
    "CMD": StepRule(handle_cmd, METADATA),
    "COPY": StepRule(handle_copy, PATHS),
    "ENTRYPOINT": StepRule(handle_entrypoint, METADATA),
    "ENV": StepRule(handle_env, METADATA),
    "EXPOSE": StepRule(handle_expose, METADATA),
    "HEALTHCHECK": StepRule(handle_healthcheck, METADATA),
    "LABEL": StepRule(handle_label, METADATA),
    "MAINTAINER": StepRule(handle_maintainer, METADATA),
    "ONBUILD": StepRule(handle_onbuild, METADATA),
    "RUN": StepRule(handle_run, TREE),
    "SHELL": StepRule(handle_shell, METADATA),
    "STOPSIGNAL": StepRule(handle_stopsignal, METADATA),
    "USER": StepRule(handle_user, METADATA),
    "VOLUME": StepRule(handle_volume, METADATA),
    "WORKDIR": StepRule(handle_workdir, PATHS),
}

# The stage loop runs FROM itself; every other instruction must have an entry.
check_table("execute", HANDLERS, exempt=frozenset({"FROM"}))
