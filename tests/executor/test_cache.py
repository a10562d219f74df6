"""Layer cache keys and the stage loop's use of the cache, without a registry.

Entries go to an OCI layout (``oci:`` caches); RUN steps go through the
recording runner, so a hit is seen as a step the runner never got.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from kanipy.context import BuildContext
from kanipy.dockerfile import plan_build
from kanipy.dockerfile.ignore import DockerIgnore
from kanipy.errors import UsageError
from kanipy.executor.cache import (
    CacheSettings,
    LayerCache,
    explain_difference,
    parse_duration,
)
from kanipy.executor.cache_key import KeyInputs, Uncacheable, hash_tree, key_inputs, step_key
from kanipy.executor.cache_setup import stage_cache
from kanipy.executor.cache_store import LayoutCacheRepository
from kanipy.executor.progress import NullReporter, StepSummary
from kanipy.executor.stage import BuiltStage, LayerPolicy, StageBuilder, expand_instruction
from kanipy.executor.step import StageContext
from kanipy.fs.rootfs import Rootfs
from kanipy.oci.blobstore import BlobStore
from kanipy.oci.config import new_config
from kanipy.oci.descriptor import Platform
from tests.executor.recording import (
    FixedRoots,
    RecordingRunner,
    Steps,
    image_root,
    stage_context,
)


def _tree(root: Path) -> Path:
    (root / "app" / "sub").mkdir(parents=True)
    (root / "app" / "a.txt").write_text("alpha\n")
    (root / "app" / "sub" / "b.txt").write_text("beta\n")
    (root / "app" / "ignored.log").write_text("noise\n")
    os.symlink("a.txt", root / "app" / "link")
    return root


def _digest(root: Path, ignore: list[str] | None = None, owners: bool = False) -> str:
    context = BuildContext(root, DockerIgnore(ignore or []))
    return hash_tree([(root / "app", "app")], None if owners else context,
                     with_owners=owners).total


def test_content_digest_ignores_mtimes_and_ignored_files_but_not_bytes_modes_or_links(
        tmp_path: Path) -> None:
    root = _tree(tmp_path / "ctx")
    first = _digest(root, ["**/*.log"])
    for path in root.rglob("*"):
        os.utime(path, (5, 5), follow_symlinks=False)
    (root / "app" / "ignored.log").write_text("other noise\n")
    assert _digest(root, ["**/*.log"]) == first
    assert _digest(root) != first  # without the ignore rule the log counts

    (root / "app" / "sub" / "b.txt").write_text("betA\n")
    edited = _digest(root, ["**/*.log"])
    assert edited != first
    (root / "app" / "sub" / "b.txt").chmod(0o600)
    assert _digest(root, ["**/*.log"]) != edited
    moded = _digest(root, ["**/*.log"])
    (root / "app" / "link").unlink()
    os.symlink("sub/b.txt", root / "app" / "link")
    assert _digest(root, ["**/*.log"]) != moded


def test_owners_count_only_where_they_are_copied(tmp_path: Path) -> None:
    root = _tree(tmp_path / "ctx")
    from_context, from_stage = _digest(root), _digest(root, owners=True)
    os.chown(root / "app" / "a.txt", 1234, 1234)
    assert _digest(root) == from_context  # COPY from the context makes files 0:0
    assert _digest(root, owners=True) != from_stage  # COPY --from keeps owners


def test_keys_are_framed() -> None:
    a = step_key("p", "RUN", KeyInputs("RUN a b", {"x": "1 2"}), {})
    b = step_key("p", "RUN", KeyInputs("RUN a", {"x": "b 1 2"}), {})
    assert a != b
    assert a == step_key("p", "RUN", KeyInputs("RUN a b", {"x": "1 2"}), {})
    assert a != step_key("q", "RUN", KeyInputs("RUN a b", {"x": "1 2"}), {})


@pytest.mark.parametrize(("old", "new", "reason"), [
    ({"base": "sha256:aaaa"}, {"base": "sha256:bbbb"},
     "base image changed (sha256:aaaa → sha256:bbbb)"),
    ({"instruction": "RUN x", "inputs": {"env": ["V=1"]}, "args": {"V": "1"}},
     {"instruction": "RUN x", "inputs": {"env": ["V=2"]}, "args": {"V": "2"}},
     "ARG V changed (1 → 2)"),
    ({"instruction": "RUN x"}, {"instruction": "RUN y"}, "the instruction changed"),
    ({"instruction": "COPY . /", "files": {"0:a": "1", "0:b": "2"}},
     {"instruction": "COPY . /", "files": {"0:a": "1", "0:b": "3", "0:c": "4"}},
     "b changed, c added"),
    ({"instruction": "RUN x", "inputs": {"user": "a"}},
     {"instruction": "RUN x", "inputs": {"user": "b"}}, "USER changed"),
    ({"parent": "1"}, {"parent": "2"}, "an earlier step changed"),
], ids=["base", "arg", "instruction", "files", "input", "parent"])
def test_a_miss_names_what_changed(old: dict, new: dict, reason: str) -> None:
    assert explain_difference(old, new, None) == reason


def test_durations_read_as_go_writes_them() -> None:
    assert parse_duration("336h") == 336 * 3600
    assert parse_duration("1h30m10s") == 5410
    assert parse_duration("1.5s") == 1.5
    with pytest.raises(UsageError):
        parse_duration("two weeks")


DOCKERFILE = ("FROM scratch\nARG V=1\nWORKDIR /w\nCOPY app/sub/ /app/\nRUN make\n"
              "RUN --mount=type=bind,source=app,target=/src use-src\n")


def _build(tmp_path: Path, cache_dir: Path, build_args: dict[str, str] | None = None
           ) -> tuple[BuiltStage, list[StepSummary], RecordingRunner, BlobStore]:
    """One build of DOCKERFILE in a fresh root, with the oci: cache at ``cache_dir``.

    ``runner.seen`` lists, for each RUN that ran, which of /made and b.txt were
    in its root.
    """
    seen: list[list[str]] = []
    work = tmp_path / "work"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    shutil.copytree(tmp_path / "ctx", work / "context")
    plan = plan_build(DOCKERFILE, filename="Dockerfile", target_platform=Platform(),
                      build_args=build_args or {})
    stage = plan.stages[-1]
    root = image_root(work / "root")
    store = BlobStore(work / "blobs")
    runner = RecordingRunner(touch=("/made",), effect=lambda spec: seen.append(
        sorted(str(p.relative_to(spec.root)) for p in spec.root.rglob("*")
               if p.name in ("made", "b.txt"))))
    base = BuiltStage(stage.index, root, new_config(Platform()), [], "oci",
                      base_id="scratch linux/amd64")
    policy = LayerPolicy("gzip", None, 0, "1970-01-01T00:00:00Z")
    cache = LayerCache(LayoutCacheRepository(cache_dir), store,
                       CacheSettings(copy_layers=True), layer_settings={"compression": "gzip"})

    def make(rootfs: Rootfs, on_output: Callable[[bytes], None]) -> StageContext:
        ctx = stage_context(work, plan, stage, runner=runner, roots=FixedRoots())
        return dataclasses.replace(ctx, rootfs=rootfs, on_output=on_output)

    builder = StageBuilder(
        plan=plan, stage=stage, number=1, count=1, base=base, ctx_factory=make, store=store,
        policy=policy, reporter=NullReporter(), single_snapshot=False,
        cache=stage_cache(cache, base, stage, "Dockerfile"),
    )
    built = builder.build()
    cache.close()
    runner.seen = seen  # type: ignore[attr-defined]
    return built, builder.summaries, runner, store


def test_a_rebuild_runs_nothing_and_gives_the_same_layers(tmp_path: Path,
                                                           caplog: pytest.LogCaptureFixture
                                                           ) -> None:
    _tree(tmp_path / "ctx")
    cache_dir = tmp_path / "cache"
    cold, cold_steps, cold_runner, _ = _build(tmp_path, cache_dir)
    assert len(cold_runner.specs) == 2 and not any(s.cached for s in cold_steps)
    warm, warm_steps, warm_runner, _ = _build(tmp_path, cache_dir)
    assert warm_runner.specs == []
    assert [s.cached for s in warm_steps if s.layer_size] == [True] * 4
    assert warm.layers == cold.layers
    assert warm.config.diff_ids == cold.config.diff_ids
    assert [h.created_by for h in warm.config.history] == \
        [h.created_by for h in cold.config.history]
    # A fully cached final stage writes nothing into its root: no step reads it.
    assert not (Path(warm.root) / "made").exists()

    # A file only a bind mount reads changed: only the step that mounts it runs.
    caplog.set_level("INFO", logger="kanipy.executor.stage")
    (tmp_path / "ctx" / "app" / "a.txt").write_text("ALPHA\n")
    _, steps, runner, _ = _build(tmp_path, cache_dir)
    assert [s.cached for s in steps if s.layer_size] == [True, True, True, False]
    assert [spec.argv[-1] for spec in runner.specs] == ["use-src"]
    # The step that ran found the cached steps' files in its root.
    assert runner.seen == [["app/b.txt", "made"]]  # type: ignore[attr-defined]
    assert "use-src: cache miss — a --mount or the content of its source changed" in caplog.text

    # A file the COPY reads changed: the COPY and everything after it run, and say why.
    (tmp_path / "ctx" / "app" / "sub" / "b.txt").write_text("BETA\n")
    _, steps, runner, _ = _build(tmp_path, cache_dir)
    assert [s.cached for s in steps if s.layer_size] == [True, False, False, False]
    assert "COPY app/sub/ /app/: cache miss — app/sub/b.txt changed" in caplog.text
    assert "make: cache miss — an earlier step changed (app/sub/b.txt changed)" in caplog.text


def _last_key_inputs(tmp_path: Path, text: str, *, build_args: dict[str, str] | None = None,
                     secrets: dict[str, bytes] | None = None) -> KeyInputs:
    """The key inputs of the last instruction of ``text``, after the others ran."""
    steps = Steps.of(text, build_args=build_args)
    ctx = stage_context(tmp_path, steps.plan, steps.stage, secrets=secrets)
    *rest, last = steps.stage.instructions
    steps.stage = dataclasses.replace(steps.stage, instructions=tuple(rest))
    state = steps.run(ctx)
    resolved = expand_instruction(steps.plan, steps.stage, last, state)
    return key_inputs(resolved, state, ctx)


def test_remote_adds_are_keyed_by_checksum_or_always_run(tmp_path: Path) -> None:
    with pytest.raises(Uncacheable, match="without --checksum"):
        _last_key_inputs(tmp_path, "FROM scratch\nADD https://example.com/a.tgz /a\n")
    with pytest.raises(Uncacheable, match="git"):
        _last_key_inputs(tmp_path, "FROM scratch\nADD https://example.com/r.git /r\n")
    checksum = "sha256:" + "ab" * 32
    keyed = _last_key_inputs(
        tmp_path, f"FROM scratch\nADD --checksum={checksum} https://example.com/a.tgz /a\n")
    assert keyed.inputs["checksum"] == checksum


def test_secrets_and_undeclared_proxy_args_stay_out_of_keys(tmp_path: Path) -> None:
    text = "FROM scratch\nRUN --mount=type=secret,id=tok,env=TOK use\n"
    one = _last_key_inputs(tmp_path / "1", text, secrets={"tok": b"first-secret"},
                           build_args={"HTTPS_PROXY": "http://user:pw@proxy:3128"})
    two = _last_key_inputs(tmp_path / "2", text, secrets={"tok": b"second-secret"})
    assert one == two
    assert "first-secret" not in repr(one) and "user:pw" not in repr(one)
    declared = _last_key_inputs(tmp_path / "3", "FROM scratch\nARG HTTPS_PROXY\nRUN use\n",
                                build_args={"HTTPS_PROXY": "http://proxy:3128"})
    assert "HTTPS_PROXY=http://proxy:3128" in declared.inputs["env"]
