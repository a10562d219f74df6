"""The step contract: what an instruction handler receives, returns and declares.

A handler is a function ``(instruction, state, ctx) -> StepResult``. It never
mutates its inputs: the new ``StageState`` comes back in the result, with
everything the stage loop needs to finish the step:

* ``changed = frozenset()``: metadata only; no layer, an ``empty_layer`` history entry;
* ``changed = {paths}``: COPY/ADD/WORKDIR touched exactly these image paths;
* ``changed = None``: anything may have changed (RUN); the whole tree is diffed;
* ``excluded``: image paths the snapshot must leave out (a RUN's mount points);
* ``created_by``: the history text, None for no history entry (ARG);
* ``cache_inputs``: the expanded inputs a layer cache key is made of.

The table entry (``StepRule``) says beforehand what kind of step an
instruction is, so that the loop can take a snapshot before a tree step and
needs no instruction-specific branch. A handler raises ``StepError`` without
a location; the loop adds ``FILE:LINE``.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, Protocol

from kanipy.context import BuildContext
from kanipy.dockerfile import PROXY_ARGS, BuildPlan, Stage
from kanipy.errors import BuildError, DockerfileError, KanipyError
from kanipy.fieldwise import Fieldwise
from kanipy.fs.rootfs import Rootfs
from kanipy.oci.config import ImageConfig

if TYPE_CHECKING:
    from kanipy.executor.runner import Runner

NOTHING: frozenset[PurePosixPath] = frozenset()


@dataclass(frozen=True, repr=False, eq=False)
class StageState(Fieldwise):
    """The image a stage has built so far, as far as instructions can see it.

    ``args`` are the ARGs this stage declared, with their values (None: declared
    without one); with ``config.env`` they are all that expansion reads.
    ``proxy_args`` are the predefined proxy ARGs given as build args, which a
    RUN sees without an ARG line (Dockerfile reference, "Predefined ARGs").
    """

    config: ImageConfig
    args: Mapping[str, str | None] = field(default_factory=dict)
    proxy_args: Mapping[str, str] = field(default_factory=dict)
    # True once this stage ran a CMD: ENTRYPOINT then keeps it (see handle_entrypoint).
    cmd_set: bool = False

    @classmethod
    def initial(cls, config: ImageConfig, build_args: Mapping[str, str],
                inherited: Mapping[str, str | None] | None = None) -> StageState:
        """A stage's state before its first instruction: its base's config and, for a
        stage built FROM an earlier stage, the ARGs that stage declared with their values
        (Docker's "Build variables": a build argument declared in a stage is inherited by
        its child stages; BuildKit starts the child from the parent's state)."""
        return cls(config=config, args=dict(inherited or {}),
                   proxy_args={k: v for k, v in build_args.items() if k in PROXY_ARGS})

    @property
    def workdir(self) -> str:
        return self.config.working_dir or "/"

    @property
    def shell(self) -> list[str]:
        return self.config.shell or ["/bin/sh", "-c"]

    @property
    def user(self) -> str:
        return self.config.user or ""

    def run_args(self) -> dict[str, str]:
        """The ARG values a RUN sees on top of the image Env (never stored in the image):
        the proxy build args and this stage's set ARGs, minus names ENV has set."""
        out = dict(self.proxy_args)
        out.update({k: v for k, v in self.args.items() if v is not None})
        for item in self.config.env:
            out.pop(item.partition("=")[0], None)
        return out


@dataclass(frozen=True, repr=False, eq=False)
class StepResult(Fieldwise):
    """Everything the stage loop needs from a handler (see the module docstring)."""

    state: StageState
    changed: frozenset[PurePosixPath] | None
    created_by: str | None
    cache_inputs: Mapping[str, Any] = field(default_factory=dict)
    excluded: frozenset[PurePosixPath] = NOTHING


class StepKind(enum.Enum):
    """What the stage loop does around a step, declared by its table entry."""

    METADATA = "metadata"  # config only: never a layer
    PATHS = "paths"  # known paths: those are archived
    TREE = "tree"  # anything may change: snapshot before, diff the whole tree after

    @property
    def snapshot_before(self) -> bool:
        return self is StepKind.TREE


class SourceRoots(Protocol):
    """The roots of what ``COPY --from`` and ``RUN --mount from=`` read besides the context."""

    def stage_root(self, index: int) -> Path:
        """The finished root of the earlier stage ``index``; KeyError if it was not built."""
        ...

    def image_root(self, text: str) -> Path:
        """The unpacked root of the image ``text`` names (pulled once per build)."""
        ...


@dataclass(frozen=True, repr=False, eq=False)
class StageNames(Fieldwise):
    """How a ``--from`` value names a stage: by index or (case-insensitive) name."""

    current: int  # the index of the stage being built
    labels: tuple[str, ...]  # every stage's label (its name, else its index), by index
    names: Mapping[str, int]

    @classmethod
    def of(cls, plan: BuildPlan, stage: Stage) -> StageNames:
        return cls(
            current=stage.index,
            labels=tuple(s.label for s in plan.all_stages),
            names={s.name: s.index for s in plan.all_stages if s.name is not None},
        )

    def find(self, text: str) -> int | None:
        """The index of the stage ``text`` names; None when it names an image."""
        if text.isascii() and text.isdigit():
            index = int(text)
            return index if index < len(self.labels) else None
        return self.names.get(text.lower())


@dataclass(frozen=True, repr=False, eq=False)
class StageContext(Fieldwise):
    """What handlers may use besides the instruction and the state; fixed for a stage.

    No file name or line: a handler raises ``StepError`` and the stage loop says
    where.
    """

    rootfs: Rootfs
    context: BuildContext
    runner: Runner
    on_output: Callable[[bytes], None]
    roots: SourceRoots
    stages: StageNames
    scratch_dir: Path  # per-step temporary files (heredoc scripts, downloads)
    run_cache_dir: Path  # where RUN --mount=type=cache directories live
    secrets: Mapping[str, bytes] = field(default_factory=dict)


class StepError(KanipyError):
    """A step failed; the stage loop reports it at the instruction as ``FILE:LINE: message``.

    ``kind`` is the error the user gets, with its exit code: BuildError for a
    step that failed, DockerfileError for an instruction kanipy cannot carry out.
    ``exit_status`` is a failed RUN command's status, passed on to the BuildError.
    """

    def __init__(self, message: str, kind: type[BuildError] | type[DockerfileError] = BuildError,
                 *, exit_status: int | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.exit_code = kind.exit_code
        self.exit_status = exit_status

    def located(self, filename: str, line: int | None) -> KanipyError:
        if issubclass(self.kind, DockerfileError):
            return self.kind(self.message, line, filename)
        where = f"{filename}:{line}" if line is not None else filename
        return self.kind(f"{where}: {self.message}", exit_status=self.exit_status)


Handler = Callable[[Any, StageState, StageContext], StepResult]


@dataclass(frozen=True, repr=False, eq=False)
class StepRule(Fieldwise):
    """One entry of the handler table: the handler and what the loop does around it."""

    handler: Handler
    kind: StepKind
