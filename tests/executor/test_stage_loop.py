"""The stage loop with a recording runner: layers, history, exclusions, error locations."""

from __future__ import annotations

import dataclasses
import tarfile
from collections.abc import Callable, Mapping
from pathlib import Path, PurePosixPath

import pytest

from kanipy.dockerfile import plan_build
from kanipy.errors import BuildError, DockerfileError, KanipyError
from kanipy.executor.handlers import HANDLERS
from kanipy.executor.progress import NullReporter
from kanipy.executor.runner import RunSpec, env_items
from kanipy.executor.stage import BuiltStage, LayerPolicy, StageBuilder
from kanipy.executor.step import (
    NOTHING,
    StageContext,
    StageState,
    StepKind,
    StepResult,
    StepRule,
)
from kanipy.fs.rootfs import Rootfs
from kanipy.oci.blobstore import BlobStore
from kanipy.oci.config import ImageConfig, new_config
from kanipy.oci.descriptor import Platform
from tests.executor.recording import FixedRoots, RecordingRunner, image_root, stage_context


def build_stage(tmp_path: Path, text: str, *, runner: RecordingRunner | None = None,
                filename: str = "Dockerfile", config: ImageConfig | None = None,
                handlers: Mapping[str, StepRule] = HANDLERS,
                roots: FixedRoots | None = None) -> tuple[BuiltStage, BlobStore]:
    """Build the last stage of ``text`` on ``tmp_path/root`` (a small image's files)."""
    plan = plan_build(text, filename=filename, target_platform=Platform())
    stage = plan.stages[-1]
    root = image_root(tmp_path / "root")
    store = BlobStore(tmp_path / "blobs")
    base = BuiltStage(stage.index, root, config or new_config(Platform()), [], "oci")
    (tmp_path / "context").mkdir(exist_ok=True)
    (tmp_path / "context" / "one.txt").write_text("1")

    def make(rootfs: Rootfs, on_output: Callable[[bytes], None]) -> StageContext:
        ctx = stage_context(tmp_path, plan, stage, runner=runner, roots=roots)
        return dataclasses.replace(ctx, rootfs=rootfs, on_output=on_output)

    builder = StageBuilder(
        plan=plan, stage=stage, number=1, count=1, base=base, ctx_factory=make, store=store,
        policy=LayerPolicy("gzip", None, 0, "1970-01-01T00:00:00Z"),
        reporter=NullReporter(), single_snapshot=False, handlers=handlers,
    )
    return builder.build(), store


def layer_names(built: BuiltStage, store: BlobStore) -> list[list[str]]:
    names = []
    for desc in built.layers:
        with store.open(desc.digest) as fh, tarfile.open(fileobj=fh, mode="r|gz") as tar:
            names.append([m.name for m in tar])
    return names


def test_a_stage_gives_one_layer_per_changing_step(tmp_path: Path) -> None:
    runner = RecordingRunner(touch=("/made", "/mnt/cache/file"),
                             excluded=frozenset({PurePosixPath("/mnt/cache")}))
    built, store = build_stage(
        tmp_path, "FROM scratch\nARG A=1\nENV B=$A\nRUN make\nCOPY one.txt /\nWORKDIR /etc\n"
        "WORKDIR /w\nCMD x\n", runner=runner)
    # /mnt/cache was a mount point of the step: neither it nor what is below it is
    # captured (the runner made /mnt for it here and left it).
    assert layer_names(built, store) == [["made", "mnt"], ["one.txt"], ["w"]]
    history = [(h.created_by, h.empty_layer) for h in built.config.history]
    assert history == [
        ("ENV B=1", True),
        ("RUN |1 A=1 /bin/sh -c make # buildkit", False),
        ("COPY one.txt / # buildkit", False),
        ("WORKDIR /etc", True),
        ("WORKDIR /w", False),
        ("CMD x", True),
    ]
    spec = runner.specs[0]
    assert dict(env_items(spec.env))["A"] == "1" and dict(env_items(spec.env))["B"] == "1"
    assert built.config.cmd == ["/bin/sh", "-c", "x"]
    assert not any(item.startswith("A=") for item in built.config.env)


def test_a_tree_step_is_diffed_against_a_snapshot_taken_before_it(tmp_path: Path) -> None:
    # Files that were there before the step are not in its layer; what it
    # changed is, whichever instruction the table says is a tree step.
    def touch(ins: object, state: StageState, ctx: StageContext) -> StepResult:
        (ctx.rootfs.path / "etc" / "passwd").write_text("changed\n")
        (ctx.rootfs.path / "new").write_text("new")
        return StepResult(state=state, changed=None, created_by="STOPSIGNAL tree")

    table = {**HANDLERS, "STOPSIGNAL": StepRule(touch, StepKind.TREE)}
    built, store = build_stage(tmp_path, "FROM scratch\nSTOPSIGNAL 9\n", handlers=table)
    assert layer_names(built, store) == [["etc", "etc/passwd", "new"]]  # no etc/group


def test_a_tree_diff_from_a_step_not_declared_a_tree_step_is_a_bug(tmp_path: Path) -> None:
    def undeclared(ins: object, state: StageState, ctx: StageContext) -> StepResult:
        return StepResult(state=state, changed=None, created_by="x")

    table = {**HANDLERS, "STOPSIGNAL": StepRule(undeclared, StepKind.METADATA)}
    with pytest.raises(RuntimeError, match="STOPSIGNAL handler asks for a tree diff"):
        build_stage(tmp_path, "FROM scratch\nSTOPSIGNAL 9\n", handlers=table)


def test_metadata_steps_keep_the_snapshot_and_add_no_layer(tmp_path: Path) -> None:
    def nothing(ins: object, state: StageState, ctx: StageContext) -> StepResult:
        return StepResult(state=state, changed=NOTHING, created_by=None)

    table = {**HANDLERS, "LABEL": StepRule(nothing, StepKind.METADATA)}
    built, _ = build_stage(tmp_path, "FROM scratch\nLABEL a=b\n", handlers=table)
    assert built.layers == [] and built.config.history == ()


@pytest.mark.parametrize(
    ("text", "filename", "runner", "kind", "message"),
    [
        ("FROM scratch\nENV A=1\nRUN false\n", "Dockerfile", RecordingRunner(status=2),
         BuildError, "Dockerfile:3: RUN /bin/sh -c false did not complete successfully: "
         "exit code 2"),
        ("FROM scratch\nCOPY nothere /x\n", "app.Dockerfile", None, BuildError,
         "app.Dockerfile:2: COPY failed: 'nothere' not found in the build context"),
        ("FROM scratch\n\nRUN --mount=type=ssh true\n", "Dockerfile", None, DockerfileError,
         "Dockerfile:3: RUN --mount=type=ssh is not supported by kanipy (there is no SSH "
         "agent forwarding); fetch private sources before the build or pass a key with "
         "--secret and RUN --mount=type=secret"),
        ("FROM scratch\nWORKDIR /etc/passwd/x\n", "Dockerfile", None, BuildError,
         "Dockerfile:2: WORKDIR /etc/passwd/x: /etc/passwd exists in the image and is not a "
         "directory"),
        ("FROM scratch AS a\nFROM scratch\nCOPY --from=a /x /y\n", "Dockerfile", None,
         BuildError, "--from=a: stage a was not built"),
    ],
    ids=["run-status", "copy-missing-named-dockerfile", "dockerfile-error", "workdir",
         "already-worded-error-unchanged"],
)
def test_the_loop_adds_the_location_once(tmp_path: Path, text: str, filename: str,
                                         runner: RecordingRunner | None, kind: type,
                                         message: str) -> None:
    with pytest.raises(KanipyError) as info:
        build_stage(tmp_path, text, filename=filename, runner=runner)
    assert type(info.value) is kind
    assert str(info.value) == message
    if isinstance(info.value, DockerfileError):
        assert info.value.line == 3


def test_onbuild_triggers_fail_at_the_from_line(tmp_path: Path) -> None:
    base = new_config(Platform()).with_config(on_build=["RUN false"])
    with pytest.raises(BuildError) as info:
        build_stage(tmp_path, "# base\nFROM scratch\nENV A=1\n", config=base,
                    runner=RecordingRunner(status=1))
    assert str(info.value) == \
        "Dockerfile:2: RUN /bin/sh -c false did not complete successfully: exit code 1"


def test_run_output_reaches_the_reporter(tmp_path: Path) -> None:
    seen: list[bytes] = []

    class Reporter(NullReporter):
        def step_output(self, step: object, line: bytes) -> None:
            seen.append(line)

    def effect(spec: RunSpec) -> None:
        assert spec.argv[-1] == "make"

    plan = plan_build("FROM scratch\nRUN make\n", target_platform=Platform())
    stage = plan.stages[-1]
    root = image_root(tmp_path / "root")
    runner = RecordingRunner(effect=effect)

    def make(rootfs: Rootfs, on_output: Callable[[bytes], None]) -> StageContext:
        ctx = stage_context(tmp_path, plan, stage, runner=runner)
        return dataclasses.replace(ctx, rootfs=rootfs, on_output=on_output)

    StageBuilder(
        plan=plan, stage=stage, number=1, count=1,
        base=BuiltStage(0, root, new_config(Platform()), [], "oci"), ctx_factory=make,
        store=BlobStore(tmp_path / "blobs"),
        policy=LayerPolicy("gzip", None, 0, "1970-01-01T00:00:00Z"), reporter=Reporter(),
        single_snapshot=False,
    ).build()
    assert seen == [b"recorded"]


def test_the_execute_table_has_every_keyword_but_from() -> None:
    # FROM is the stage loop's own first step; every other instruction is run by
    # a handler keyed like the parse and expansion tables.
    from kanipy.dockerfile.instructions import KEYWORDS
    from kanipy.executor.handlers import HANDLERS

    assert set(HANDLERS) == KEYWORDS - {"FROM"}
