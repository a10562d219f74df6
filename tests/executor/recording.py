"""Stand-ins for what handlers use besides a directory: a runner that records, fixed roots.

With these, handler rules are checked on a real directory (a test's tmp_path
as the root) in milliseconds: no RUN is executed, no image pulled.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from kanipy.context import BuildContext
from kanipy.dockerfile import BuildPlan, Stage, plan_build
from kanipy.dockerfile.ignore import DockerIgnore
from kanipy.executor.handlers import HANDLERS
from kanipy.executor.runner import RunOutcome, RunSpec
from kanipy.executor.stage import expand_instruction
from kanipy.executor.step import StageContext, StageNames, StageState, StepResult
from kanipy.fs.rootfs import Rootfs
from kanipy.oci.config import ImageConfig, new_config
from kanipy.oci.descriptor import Platform

PASSWD = "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n"
GROUP = "root:x:0:\napp:x:1000:\nextra:x:1001:app\n"


@dataclass
class RecordingRunner:
    """A ``Runner`` that records each RunSpec instead of running it.

    ``touch`` image paths are created (with their parents) in the step's root,
    ``effect`` is called with the spec while the step "runs" (mounts are then
    in place), and the step ends with ``status`` and ``excluded``.
    """

    status: int = 0
    touch: tuple[str, ...] = ()
    excluded: frozenset[PurePosixPath] = frozenset()
    effect: Callable[[RunSpec], None] | None = None
    specs: list[RunSpec] = field(default_factory=list)

    def run(self, spec: RunSpec, on_output: Callable[[bytes], None]) -> RunOutcome:
        self.specs.append(spec)
        for image_path in self.touch:
            host = spec.root / image_path.lstrip("/")
            host.parent.mkdir(parents=True, exist_ok=True)
            host.touch()
        if self.effect is not None:
            self.effect(spec)
        on_output(b"recorded")
        return RunOutcome(self.status, self.excluded)


@dataclass
class FixedRoots:
    """A ``SourceRoots`` over directories given up front; records the images asked for."""

    stages: Mapping[int, Path] = field(default_factory=dict)
    images: Mapping[str, Path] = field(default_factory=dict)
    asked: list[str] = field(default_factory=list)

    def stage_root(self, index: int) -> Path:
        return self.stages[index]

    def image_root(self, text: str) -> Path:
        self.asked.append(text)
        return self.images[text]


def image_root(path: Path) -> Path:
    """A directory laid out as a small image: /etc/passwd and /etc/group with app (1000)."""
    (path / "etc").mkdir(parents=True)
    (path / "etc" / "passwd").write_text(PASSWD)
    (path / "etc" / "group").write_text(GROUP)
    return path


def stage_context(tmp_path: Path, plan: BuildPlan, stage: Stage, *,
                  runner: RecordingRunner | None = None, roots: FixedRoots | None = None,
                  secrets: Mapping[str, bytes] | None = None,
                  ignore: list[str] | None = None) -> StageContext:
    """A context whose root is ``tmp_path/root`` and build context ``tmp_path/context``."""
    root = tmp_path / "root"
    if not root.exists():
        image_root(root)
    context = tmp_path / "context"
    context.mkdir(exist_ok=True)
    scratch = tmp_path / "scratch"
    scratch.mkdir(exist_ok=True)
    return StageContext(
        rootfs=Rootfs(root),
        context=BuildContext(context, DockerIgnore(ignore or [])),
        runner=runner or RecordingRunner(),
        on_output=lambda line: None,
        roots=roots or FixedRoots(),
        stages=StageNames.of(plan, stage),
        scratch_dir=scratch,
        run_cache_dir=tmp_path / "run-cache",
        secrets=secrets or {},
    )


@dataclass
class Steps:
    """A Dockerfile's last stage, its instructions handed to their handlers one by one
    as the stage loop does (expanded from the state), without snapshots or layers."""

    plan: BuildPlan
    stage: Stage
    state: StageState
    results: list[StepResult] = field(default_factory=list)

    @classmethod
    def of(cls, text: str, *, build_args: dict[str, str] | None = None,
           config: ImageConfig | None = None, filename: str = "Dockerfile") -> Steps:
        plan = plan_build(text, filename=filename, build_args=build_args,
                          target_platform=Platform("linux", "amd64"))
        stage = plan.stages[-1]
        config = config or new_config(Platform("linux", "amd64"))
        return cls(plan, stage, StageState.initial(config, plan.build_args))

    def run(self, ctx: StageContext) -> StageState:
        for ins in self.stage.instructions:
            resolved = expand_instruction(self.plan, self.stage, ins, self.state)
            result = HANDLERS[resolved.keyword].handler(resolved, self.state, ctx)
            self.results.append(result)
            self.state = result.state
        return self.state

    @property
    def last(self) -> StepResult:
        return self.results[-1]
