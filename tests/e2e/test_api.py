"""The Python entry point: ``kanipy.build(options)`` against a real registry, read back
with skopeo and umoci; errors come back as exceptions carrying their exit codes."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import pytest

import kanipy
from tests.e2e.helpers import REPO, skopeo_manifest, unpack_image, write_tree
from tests.fixtures.images import BaseImages
from tests.fixtures.registry import Registry
from tests.tools import require_root


class Recorder:
    """A BuildReporter that keeps what it is told."""

    def __init__(self) -> None:
        self.output: list[bytes] = []
        self.pushes: list[tuple[str, str]] = []
        self.finished_with: list[kanipy.StepSummary] = []

    def stage_started(self, number: int, count: int, name: str | None, base: str) -> None:
        pass

    def step_started(self, step: object) -> None:
        pass

    def step_output(self, step: object, line: bytes) -> None:
        self.output.append(line)

    def step_finished(self, summary: object) -> None:
        pass

    def transfer(self, event: object) -> None:
        pass

    def pushed(self, reference: str, digest: str) -> None:
        self.pushes.append((reference, digest))

    def finished(self, summaries: list[kanipy.StepSummary]) -> None:
        self.finished_with = list(summaries)


def test_build_from_python_pushes_and_returns_digest_and_steps(
        tmp_path: Path, registry: Registry, base_images: BaseImages) -> None:
    require_root()
    context = write_tree(tmp_path / "ctx", {
        "Dockerfile": f"FROM {base_images.oci}\nCOPY hello.txt /srv/\n"
                      "RUN echo built > /srv/run.txt && echo step-output\nENV MODE=api\n",
        "hello.txt": "hello\n",
    })
    ref = registry.ref("api/app:1")
    reporter = Recorder()
    result = kanipy.build(kanipy.BuildOptions(
        context=str(context), destinations=(ref,), insecure_registries=(registry.host,),
        kanipy_dir=tmp_path / "work"), reporter=reporter)

    raw = subprocess.run(["skopeo", "inspect", "--tls-verify=false", "--raw",
                          f"docker://{ref}"], capture_output=True, check=True).stdout
    assert result.digest == "sha256:" + hashlib.sha256(raw).hexdigest()
    assert result.pushed == [f"{ref.rsplit(':', 1)[0]}@{result.digest}"]
    assert reporter.pushes and reporter.pushes[0][1] == result.digest
    assert b"step-output" in reporter.output
    texts = [s.step.text for s in result.summaries]
    assert texts[1:] == ["COPY hello.txt /srv/",
                         "RUN echo built > /srv/run.txt && echo step-output", "ENV MODE=api"]
    layers = skopeo_manifest(ref)["layers"]
    assert [str(s.layer_digest) for s in result.summaries if s.layer_digest] == \
        [layer["digest"] for layer in layers[-2:]]
    rootfs = unpack_image(ref, tmp_path / "unpacked")
    assert (rootfs / "srv" / "hello.txt").read_text() == "hello\n"
    assert (rootfs / "srv" / "run.txt").read_text() == "built\n"


def test_build_errors_are_exceptions_with_exit_codes(tmp_path: Path) -> None:
    context = write_tree(tmp_path / "ctx", {"Dockerfile": "FROM scratch\nCOPY --bogus x /\n"})
    with pytest.raises(kanipy.DockerfileError) as caught:
        kanipy.build(kanipy.BuildOptions(context=str(context), no_push=True))
    assert caught.value.exit_code == 3
    assert str(caught.value).startswith("Dockerfile:2: ")
    with pytest.raises(kanipy.UsageError):
        kanipy.build(kanipy.BuildOptions(context=str(tmp_path / "missing"), no_push=True))


def test_import_kanipy_loads_no_engine() -> None:
    # ``kanipy --version`` and library users that only read names pay for no engine.
    code = ("import sys, kanipy; print(sorted(m for m in sys.modules "
            "if m.startswith(('kanipy.executor', 'kanipy.registry', 'requests'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=REPO, check=True).stdout
    assert out.strip() == "[]"
