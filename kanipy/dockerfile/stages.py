"""The stage graph: heading ARGs, FROM expansion, stage references, ``--target``.

``plan_build`` turns a Dockerfile into the stages a target needs, in dependency order.
Rules (Dockerfile reference, "Understand how ARG and FROM interact" and "Multi-stage
builds"): ARGs before the first FROM are visible only to FROM lines and are imported into
a stage with a bare ``ARG NAME``; the automatic platform ARGs are visible to FROM lines
too; stage names are case-insensitive; ``COPY --from`` and ``RUN --mount from=`` name a
stage by name or index, and anything else there is an image reference.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field

from kanipy.dockerfile.instructions import Arg, Copy, Env, From, Instruction, Run
from kanipy.dockerfile.lex import ExpansionError, ExpansionSyntaxError, ShellLexer
from kanipy.dockerfile.parse import parse_dockerfile
from kanipy.dockerfile.scope import PROXY_ARGS, StageScope
from kanipy.dockerfile.values import check_platform, decimal
from kanipy.errors import DockerfileError
from kanipy.fieldwise import Fieldwise
from kanipy.oci.descriptor import Platform

log = logging.getLogger(__name__)

# Build args that need no ARG line to be "used": no unused-arg warning for them.
_BUILTIN_ARGS = PROXY_ARGS | {"SOURCE_DATE_EPOCH"}


@dataclass(frozen=True, repr=False, eq=False)
class StageRef(Fieldwise):
    """A reference to an earlier stage, by its position in the file."""

    index: int

    def __str__(self) -> str:
        return f"stage {self.index}"


@dataclass
class Stage:
    """One ``FROM`` and the instructions up to the next one.

    ``base`` is the FROM image after expansion: an image reference, ``"scratch"``, or a
    ``StageRef``. ``instructions`` excludes the FROM itself (that is ``from_instruction``)
    and are not yet expanded. ``depends_on``: indexes of the stages this one needs.
    ``images`` lists the image references named by ``COPY --from`` / ``RUN --mount from=``
    (not stages), for the engine to pull.
    """

    index: int
    name: str | None
    base: str | StageRef
    base_text: str
    platform: str | None
    from_instruction: From
    instructions: list[Instruction]
    depends_on: list[int] = field(default_factory=list)
    images: list[str] = field(default_factory=list)

    @property
    def label(self) -> str:
        return self.name if self.name is not None else str(self.index)


@dataclass
class BuildPlan:
    """The stages to build (``stages``, dependency order) and what planning learnt."""

    stages: list[Stage]
    all_stages: list[Stage]
    meta_args: dict[str, str | None]
    build_args: dict[str, str]
    platform_args: dict[str, str]
    unused_build_args: list[str]
    escape: str
    filename: str
    target: Stage

    def stage(self, ref: str | int | StageRef) -> Stage:
        """A stage by index, StageRef or (case-insensitive) name."""
        if isinstance(ref, StageRef):
            return self.all_stages[ref.index]
        if isinstance(ref, int):
            return self.all_stages[ref]
        for stage in self.all_stages:
            if stage.name == ref.lower():
                return stage
        raise KeyError(ref)


def platform_args(target: Platform, build: Platform) -> dict[str, str]:
    """The automatic platform ARGs (Dockerfile reference, "Automatic platform ARGs")."""
    return {
        "TARGETPLATFORM": str(target),
        "TARGETOS": target.os,
        "TARGETARCH": target.architecture,
        "TARGETVARIANT": target.variant or "",
        "BUILDPLATFORM": str(build),
        "BUILDOS": build.os,
        "BUILDARCH": build.architecture,
        "BUILDVARIANT": build.variant or "",
    }


def plan_build(
    text: str,
    *,
    filename: str = "Dockerfile",
    build_args: dict[str, str] | None = None,
    target: str | None = None,
    target_platform: Platform | None = None,
    build_platform: Platform | None = None,
) -> BuildPlan:
    """Parse ``text`` and plan the stages ``target`` (default: the last stage) needs."""
    build_args = dict(build_args or {})
    target_platform = target_platform or Platform()
    build_platform = build_platform or target_platform
    parsed = parse_dockerfile(text, filename)
    if not parsed.instructions:
        raise DockerfileError("the Dockerfile is empty: it needs at least one FROM", None, filename)
    lexer = ShellLexer(parsed.escape)
    auto = platform_args(target_platform, build_platform)
    meta: dict[str, str | None] = {}
    declared: set[str] = set()

    def meta_env() -> dict[str, str]:
        env = dict(auto)
        env.update({k: v for k, v in meta.items() if v is not None})
        return env

    def expand(word: str, env: dict[str, str], line: int) -> str:
        try:
            return lexer.process_word(word, env)
        except ExpansionError as exc:
            raise DockerfileError(str(exc), line, filename) from None

    # Split into heading ARGs and stages.
    groups: list[tuple[From, list[Instruction]]] = []
    for ins in parsed.instructions:
        if isinstance(ins, From):
            groups.append((ins, []))
        elif groups:
            groups[-1][1].append(ins)
        elif isinstance(ins, Arg):
            env = meta_env()  # every default sees the state before this line
            values: list[tuple[str, str | None]] = []
            for name, default in ins.pairs:
                if name in build_args:
                    values.append((name, build_args[name]))
                else:
                    values.append(
                        (name, None if default is None else expand(default, env, ins.line))
                    )
            meta.update(values)
            declared.update(name for name, _ in ins.pairs)
        else:
            raise DockerfileError(
                f"{ins.keyword} before the first FROM: only ARG may come before FROM "
                "(no build stage in current context)",
                ins.line,
                filename,
            )
    if not groups:
        raise DockerfileError("no FROM instruction: there is nothing to build from", None, filename)

    all_stages: list[Stage] = []
    names: dict[str, int] = {}
    for index, (frm, _) in enumerate(groups):
        if frm.name:
            name = expand(frm.name, meta_env(), frm.line).lower()
            if name in names:
                raise DockerfileError(
                    f"duplicate stage name {name!r} (first used on line "
                    f"{groups[names[name]][0].line})",
                    frm.line,
                    filename,
                )
            names[name] = index
    for index, (frm, body) in enumerate(groups):
        env = meta_env()
        base_text = expand(frm.image, env, frm.line)
        if not base_text:
            raise DockerfileError(
                f"FROM {frm.image} expands to an empty name: nothing to build from "
                "(set the ARG or give it a default)",
                frm.line,
                filename,
            )
        platform = expand(frm.platform, env, frm.line) if frm.platform is not None else None
        if platform is not None:
            try:
                platform = check_platform(platform, target_platform.os,
                                          target_platform.architecture)
                Platform.parse(platform)
            except ValueError as exc:
                raise DockerfileError(f"FROM --platform: {exc}", frm.line, filename) from None
        ref = _stage_ref(base_text, index, names, len(groups), frm.line, filename, from_line=True)
        base: str | StageRef = ref if ref is not None else base_text
        if base_text == "scratch":
            base = "scratch"
        stage_name = next((n for n, i in names.items() if i == index), None)
        all_stages.append(
            Stage(index, stage_name, base, base_text, platform, frm, list(body),
                  [ref.index] if ref is not None else [])
        )

    plan = BuildPlan(
        stages=[],
        all_stages=all_stages,
        meta_args=meta,
        build_args=build_args,
        platform_args=auto,
        unused_build_args=[],
        escape=parsed.escape,
        filename=filename,
        target=all_stages[-1],
    )
    scopes: dict[int, StageScope] = {}
    for stage in all_stages:
        scopes[stage.index] = _find_dependencies(plan, stage, names, len(groups), scopes)

    if target is not None:
        if target.lower() not in names:
            known = ", ".join(sorted(names)) or "none: no stage has a name"
            raise DockerfileError(
                f"target stage {target!r} could not be found (stages: {known})", None, filename
            )
        plan.target = all_stages[names[target.lower()]]
    needed: set[int] = set()
    pending = [plan.target.index]
    while pending:
        index = pending.pop()
        if index not in needed:
            needed.add(index)
            pending.extend(all_stages[index].depends_on)
    # Every dependency is an earlier stage, so file order is a dependency order.
    plan.stages = [s for s in all_stages if s.index in needed]
    scopes = {}
    for stage in plan.stages:
        scopes[stage.index] = _check_syntax(plan, stage, scopes)
    for stage in plan.stages:
        for ins in stage.instructions:
            if isinstance(ins, Arg):
                declared.update(name for name, _ in ins.pairs)
    plan.unused_build_args = sorted(
        k for k in build_args
        if k not in declared and k not in _BUILTIN_ARGS and not k.startswith("BUILDKIT_")
    )
    return plan


def _stage_ref(value: str, current: int, names: dict[str, int], total: int, line: int,
               filename: str, *, from_line: bool = False) -> StageRef | None:
    """The stage ``value`` names (by name or index), None for an image reference."""
    what = "FROM" if from_line else "--from"
    index: int | None = None
    if value.lower() in names:
        index = names[value.lower()]
    elif (number := decimal(value)) is not None:
        # BuildKit takes whatever strconv.Atoi reads as a stage index, never as an image.
        index = number
        if not 0 <= index < total:
            raise DockerfileError(
                f"{what}={value}: there is no stage {value} (stages are numbered from 0 "
                f"to {total - 1} in the order of their FROM lines)", line, filename,
            )
    if index is None:
        return None
    if index == current:
        raise DockerfileError(f"{what} {value}: a stage cannot use itself", line, filename)
    if index > current:
        raise DockerfileError(
            f"{what} {value}: that stage is defined later in the file; a stage can only use "
            "an earlier one",
            line,
            filename,
        )
    return StageRef(index)


def stage_scope(plan: BuildPlan, stage: Stage, base_env: list[str] | None,
                parents: Mapping[int, StageScope]) -> StageScope:
    """A new scope for ``stage``. A stage built FROM an earlier one starts with the
    ARGs that stage declared, with their values (Docker's "Build variables": a build
    argument declared in a stage is inherited by its child stages), and, when the base
    image's Env is not given, with the Env the earlier stage ended with; ``parents``
    maps a stage index to the scope that stage ended with."""
    parent = parents.get(stage.base.index) if isinstance(stage.base, StageRef) else None
    if base_env is None:
        base_env = parent.image_env() if parent is not None else []
    scope = StageScope(plan, stage, base_env)
    if parent is not None:
        scope.args = dict(parent.args)
    return scope


def _check_syntax(plan: BuildPlan, stage: Stage, parents: Mapping[int, StageScope]
                  ) -> StageScope:
    """Expand every instruction of a stage that will be built, without the base image's
    Env, and report the words no Env could expand (BuildKit finds them while converting
    the whole file, before building anything); what depends on values waits for the
    engine, which knows the base image's Env. Returns the scope the stage ends with."""
    scope = stage_scope(plan, stage, None, parents)
    for ins in stage.instructions:
        try:
            scope.resolve(ins)
        except DockerfileError as err:
            if isinstance(err.__cause__, ExpansionSyntaxError):
                raise
    return scope


def _find_dependencies(plan: BuildPlan, stage: Stage, names: dict[str, int], total: int,
                       parents: Mapping[int, StageScope]) -> StageScope:
    """Follow ARG/ENV through the stage (without the base image's Env) to resolve
    ``COPY --from`` and ``RUN --mount from=`` values to stages or images. Returns the
    scope the stage ends with (a child stage inherits its ARGs)."""
    scope = stage_scope(plan, stage, None, parents)
    for ins in stage.instructions:
        if isinstance(ins, (Arg, Env)):
            try:
                scope.resolve(ins)
            except DockerfileError:
                # May depend on the base image's Env; the engine reports it when it runs.
                continue
        values: list[str] = []
        if isinstance(ins, Copy) and ins.from_ is not None:
            values.append(ins.from_)
        elif isinstance(ins, Run):
            values += [m.from_ for m in ins.mounts if m.from_ is not None]
        for raw in values:
            try:
                value = scope.expand(raw)
            except ExpansionError as exc:
                raise DockerfileError(str(exc), ins.line, plan.filename) from None
            if not value:
                raise DockerfileError(f"--from={raw} expands to an empty name", ins.line,
                                      plan.filename)
            ref = _stage_ref(value, stage.index, names, total, ins.line, plan.filename)
            if ref is None:
                if value not in stage.images:
                    stage.images.append(value)
            elif ref.index not in stage.depends_on:
                stage.depends_on.append(ref.index)
    return scope
