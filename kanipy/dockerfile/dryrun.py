"""The ``--dry-run`` view: the stages that will be built and each instruction expanded."""

from __future__ import annotations

import logging
from collections.abc import Mapping

from kanipy.dockerfile.scope import StageScope
from kanipy.dockerfile.stages import BuildPlan, stage_scope
from kanipy.errors import DockerfileError

log = logging.getLogger(__name__)


def format_plan(plan: BuildPlan, base_envs: Mapping[int, list[str]] | None = None) -> str:
    """One line per instruction: ``[stage 1/2 builder] 3: RUN make``.

    ``base_envs`` maps a stage index to its base image's Env when known (the engine knows
    it after pulling); without it a stage starts from an empty Env (a stage built FROM an
    earlier stage: that stage's Env and ARGs), so a word that needs the base image's Env
    shows as the error it would raise, and the plan goes on.
    """
    base_envs = base_envs or {}
    lines: list[str] = []
    total = len(plan.stages)
    scopes: dict[int, StageScope] = {}
    if plan.unused_build_args:
        lines.append(f"# build args not consumed: {', '.join(plan.unused_build_args)}")
    for position, stage in enumerate(plan.stages, start=1):
        head = f"[stage {position}/{total} {stage.label}]"
        env = base_envs.get(stage.index)
        scope = stage_scope(plan, stage, list(env) if env is not None else None, scopes)
        scopes[stage.index] = scope
        frm = scope.resolve(stage.from_instruction)
        lines.append(f"{head} {frm.line}: {frm.render()}")
        for ins in stage.instructions:
            try:
                text = scope.resolve(ins).render()
            except DockerfileError as exc:
                text = f"{ins.original}  # cannot expand yet: {exc.reason}"
            for i, part in enumerate(text.split("\n")):
                prefix = f"{head} {ins.line}:" if i == 0 else f"{' ' * len(head)}   |"
                lines.append(f"{prefix} {part}")
    return "\n".join(lines) + "\n"
