"""Instruction handlers, one per Dockerfile instruction, and the table that picks them."""

from __future__ import annotations

from kanipy.dockerfile import (
    Add,
    Arg,
    Cmd,
    Copy,
    Entrypoint,
    Env,
    Expose,
    Healthcheck,
    Label,
    Maintainer,
    Onbuild,
    Run,
    Shell,
    StopSignal,
    User,
    Volume,
    Workdir,
)
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
from kanipy.executor.step import Handler

HANDLERS: dict[type, Handler] = {
    Add: handle_add,
    Arg: handle_arg,
    Cmd: handle_cmd,
    Copy: handle_copy,
    Entrypoint: handle_entrypoint,
    Env: handle_env,
    Expose: handle_expose,
    Healthcheck: handle_healthcheck,
    Label: handle_label,
    Maintainer: handle_maintainer,
    Onbuild: handle_onbuild,
    Run: handle_run,
    Shell: handle_shell,
    StopSignal: handle_stopsignal,
    User: handle_user,
    Volume: handle_volume,
    Workdir: handle_workdir,
}
