"""What an instruction handler receives and returns.

A handler is a function ``(instruction, state, ctx) -> StepResult``. It never
mutates its inputs: the new image config comes back in the result, with what
the step changed on disk (STYLE.md, "Kaniko: take the structure"):

* ``changed = frozenset()``: metadata only; no layer, an ``empty_layer`` history entry;
* ``changed = {paths}``: COPY/ADD/WORKDIR touched exactly these image paths;
* ``changed = None``: anything may have changed (RUN); the whole tree is diffed.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from kanipy.context import BuildContext
from kanipy.dockerfile import BuildPlan, Stage, StageScope
from kanipy.fs.rootfs import Rootfs
from kanipy.oci.config import ImageConfig

if TYPE_CHECKING:
    from kanipy.executor.options import BuildOptions
    from kanipy.executor.runner import Runner


@dataclass(frozen=True)
class StageState:
    """The image a stage has built so far, as far as instructions can see it."""

    config: ImageConfig
    # True once this stage ran a CMD: ENTRYPOINT then keeps it (see handle_entrypoint).
    cmd_set: bool = False

    @property
    def workdir(self) -> str:
        return self.config.working_dir or "/"

    @property
    def shell(self) -> list[str]:
        return self.config.shell or ["/bin/sh", "-c"]

    @property
    def user(self) -> str:
        return self.config.user or ""


@dataclass(frozen=True)
class StepResult:
    config: ImageConfig
    changed: frozenset[PurePosixPath] | None
    # Docker's history text for the step (``created_by``); None: the instruction's own text.
    created_by: str | None = None


@dataclass
class StageContext:
    """What handlers may use besides the instruction and the state.

    ``stage_roots`` maps stage indexes to the root directories of stages built
    earlier (COPY --from reads them directly); ``image_root`` pulls an image
    named by COPY --from and returns its unpacked root.
    """

    plan: BuildPlan
    stage: Stage
    scope: StageScope
    rootfs: Rootfs
    context: BuildContext
    runner: Runner
    options: BuildOptions
    stage_roots: Mapping[int, Path]
    image_root: Callable[[str], Path]
    on_output: Callable[[bytes], None]
    secrets: Mapping[str, bytes] = field(default_factory=dict)
    scratch_dir: Path | None = None  # per-step temporary files (heredoc scripts)


Handler = Callable[..., StepResult]
