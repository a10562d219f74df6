"""Handlers for the instructions that change only the stage's state (no layer).

Each one's docstring starts with its syntax. Their semantics follow the
Dockerfile reference; where Docker's behaviour is subtle, the comment says so.
Their history text is the instruction as expanded.
"""

from __future__ import annotations

import dataclasses

from kanipy.dockerfile import (
    Arg,
    Cmd,
    Command,
    Entrypoint,
    Env,
    Expose,
    Healthcheck,
    Instruction,
    Label,
    Maintainer,
    Onbuild,
    Shell,
    StopSignal,
    User,
    Volume,
)
from kanipy.executor.step import NOTHING, StageContext, StageState, StepResult
from kanipy.oci.config import ImageConfig


def _meta(ins: Instruction, state: StageState, config: ImageConfig, *, cmd_set: bool = False
          ) -> StepResult:
    """A metadata step's result: the new config, no paths, the instruction as history."""
    text = ins.render()
    new_state = dataclasses.replace(state, config=config, cmd_set=state.cmd_set or cmd_set)
    return StepResult(state=new_state, changed=NOTHING, created_by=text,
                      cache_inputs={"instruction": text})


def command_argv(command: Command, shell: list[str]) -> list[str]:
    """Exec form as given; shell form behind the stage's SHELL (``/bin/sh -c`` by default)."""
    if command.exec_form:
        return list(command.args)
    return [*shell, command.args[0]]


def handle_env(ins: Env, state: StageState, ctx: StageContext) -> StepResult:
    """``ENV KEY=VALUE ...``: an existing key is replaced in place, a new one appended."""
    return _meta(ins, state, state.config.with_env(list(ins.pairs)))


def handle_arg(ins: Arg, state: StageState, ctx: StageContext) -> StepResult:
    """``ARG NAME[=default] ...``: the names join the stage's ARGs with their values.

    Expansion already gave each its value (``--build-arg``, else the default,
    else a heading ARG or a platform ARG; None for none). ARG values never reach
    the image config's Env. BuildKit writes an empty-layer history entry
    ``ARG NAME=value``; kanipy writes none, so that build-arg values (tokens) never
    reach an image's history.
    """
    args = dict(state.args)
    for name, value in ins.pairs:
        args[name] = value
    return StepResult(state=dataclasses.replace(state, args=args), changed=NOTHING,
                      created_by=None, cache_inputs={"instruction": ins.render()})


def handle_label(ins: Label, state: StageState, ctx: StageContext) -> StepResult:
    """``LABEL key=value ...``: merged into the inherited labels, later values winning."""
    return _meta(ins, state, state.config.with_labels(dict(ins.pairs)))


def handle_expose(ins: Expose, state: StageState, ctx: StageContext) -> StepResult:
    """``EXPOSE 80 443/tcp 53/udp 8000-8002``: ports added to ExposedPorts."""
    ports = dict(state.config.exposed_ports)
    for port in ins.exposed_ports():
        ports[port] = {}
    return _meta(ins, state, state.config.with_config(exposed_ports=dict(sorted(ports.items()))))


def handle_user(ins: User, state: StageState, ctx: StageContext) -> StepResult:
    """``USER name|uid[:group|gid]``: resolved when a RUN needs it, stored as written."""
    return _meta(ins, state, state.config.with_config(user=ins.user))


def handle_volume(ins: Volume, state: StageState, ctx: StageContext) -> StepResult:
    """``VOLUME ["/data"]`` or ``VOLUME /data /logs``."""
    volumes = dict(state.config.volumes)
    for path in ins.paths:
        volumes[path] = {}
    return _meta(ins, state, state.config.with_config(volumes=volumes))


def handle_cmd(ins: Cmd, state: StageState, ctx: StageContext) -> StepResult:
    """``CMD ["exe", "arg"]`` or ``CMD command`` (shell form runs through SHELL).

    Marks the state so that a later ENTRYPOINT of this stage keeps it.
    """
    config = state.config.with_config(cmd=command_argv(ins.command, state.shell))
    return _meta(ins, state, config, cmd_set=True)


def handle_entrypoint(ins: Entrypoint, state: StageState, ctx: StageContext) -> StepResult:
    """``ENTRYPOINT ["exe", "arg"]`` or ``ENTRYPOINT command``.

    Dockerfile reference: when CMD comes from the base image, ENTRYPOINT resets
    it; a CMD set earlier in this same stage is kept (``state.cmd_set``, set by
    handle_cmd).
    """
    config = state.config.with_config(entrypoint=command_argv(ins.command, state.shell))
    if not state.cmd_set:
        config = config.with_config(cmd=None)
    return _meta(ins, state, config)


def handle_shell(ins: Shell, state: StageState, ctx: StageContext) -> StepResult:
    """``SHELL ["executable", "param"]``: the shell later shell forms run through."""
    return _meta(ins, state, state.config.with_config(shell=list(ins.args)))


def handle_stopsignal(ins: StopSignal, state: StageState, ctx: StageContext) -> StepResult:
    """``STOPSIGNAL SIGTERM``."""
    return _meta(ins, state, state.config.with_config(stop_signal=ins.signal))


def handle_healthcheck(ins: Healthcheck, state: StageState, ctx: StageContext) -> StepResult:
    """``HEALTHCHECK [--interval=…] CMD …`` or ``HEALTHCHECK NONE`` (durations in ns)."""
    check: dict[str, object] = {"Test": list(ins.test)}
    for key, value in (("Interval", ins.interval), ("Timeout", ins.timeout),
                       ("StartPeriod", ins.start_period),
                       ("StartInterval", ins.start_interval), ("Retries", ins.retries)):
        if value is not None:
            check[key] = value
    return _meta(ins, state, state.config.with_config(healthcheck=check))


def handle_onbuild(ins: Onbuild, state: StageState, ctx: StageContext) -> StepResult:
    """``ONBUILD <instruction>``: recorded; it runs in stages built FROM this image."""
    triggers = [*state.config.on_build, ins.expression]
    return _meta(ins, state, state.config.with_config(on_build=triggers))


def handle_maintainer(ins: Maintainer, state: StageState, ctx: StageContext) -> StepResult:
    """``MAINTAINER name`` (deprecated): sets the image's author."""
    return _meta(ins, state, state.config.with_metadata(author=ins.name))
