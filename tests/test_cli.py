"""The command line without a build: flag validation, help, Kaniko-compatible flags."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.helpers import REPO, kanipy, write_tree


def test_help_lists_the_kaniko_flag_names() -> None:
    result = kanipy("build", "--help")
    assert result.returncode == 0
    for flag in ("--dockerfile", "--context", "--destination", "--build-arg", "--target",
                 "--no-push", "--insecure-registry", "--registry-certificate", "--cache-dir",
                 "--tar-path", "--digest-file", "--reproducible", "--single-snapshot"):
        assert flag in result.stdout, flag


def test_version() -> None:
    result = kanipy("version")
    assert result.returncode == 0
    assert result.stdout.strip() == subprocess.run(
        [sys.executable, "-c", "import kanipy; print(kanipy.__version__)"],
        capture_output=True, text=True, cwd=REPO).stdout.strip()


@pytest.mark.parametrize(("args", "message"), [
    (["--custom-platform", "linux"], "--custom-platform"),
    (["--label", "novalue"], "--label 'novalue': expected KEY=VALUE"),
    (["--secret", "src=/x"], "id=NAME is required"),
    (["-d", "Bad/Ref:x"], "repository name must be lowercase"),
    (["--cache=maybe"], "'maybe' is not a boolean"),
], ids=["platform", "label", "secret", "reference", "compat-bool"])
def test_bad_flags_exit_2_before_any_work(tmp_path: Path, args: list[str], message: str) -> None:
    context = write_tree(tmp_path, {"Dockerfile": "FROM scratch\n"})
    result = kanipy("build", "-c", str(context), "--no-push", *args)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_kaniko_compat_flags_are_accepted_and_say_they_do_nothing(tmp_path: Path) -> None:
    context = write_tree(tmp_path, {"Dockerfile": "FROM scratch\nENV A=1\n"})
    result = kanipy("build", "-c", str(context), "--dry-run", "--force",
                    "--snapshot-mode=redo", "--use-new-run", "--compressed-caching=false")
    assert result.returncode == 0, result.stderr
    for flag in ("--force", "--snapshot-mode", "--use-new-run", "--compressed-caching"):
        assert result.stderr.count(f"INFO {flag} has no effect in kanipy: ") == 1, flag
    assert "ENV A=1" in result.stdout


def test_a_compat_boolean_set_to_kanikos_default_says_nothing(tmp_path: Path) -> None:
    context = write_tree(tmp_path, {"Dockerfile": "FROM scratch\n"})
    result = kanipy("build", "-c", str(context), "--dry-run", "--cache=false",
                    "--ignore-var-run=true", "--cache-run-layers")
    assert result.returncode == 0, result.stderr
    assert "has no effect" not in result.stderr


def test_kaniko_argv_without_the_build_word_builds(tmp_path: Path) -> None:
    # Kaniko's catalog Task passes only flags to the image's entry point.
    context = write_tree(tmp_path / "ctx", {"Dockerfile": "FROM scratch\nENV A=1\n"})
    result = kanipy(f"--dockerfile={context / 'Dockerfile'}", f"--context={context}",
                    "--no-push", "--dry-run")
    assert result.returncode == 0, result.stderr
    assert "ENV A=1" in result.stdout + result.stderr
    # The group's own flags keep their meaning.
    assert kanipy("--version").returncode == 0
    assert "build" in kanipy("--help").stdout
