"""What each RUN step's helper interpreter loads before (and while) it runs the step.

Every RUN step starts a fresh helper interpreter (``executor/runner.py``), so
every module it imports is paid once per step (issue 14). These tests name the
modules that made it slow (``typing``, ``dataclasses``, ``logging``,
``tempfile``, ``shutil``, ``pathlib``, ``secrets``...) and fail when one of them
is loaded again: by the helper's import path, and during real steps in both
runner modes, seen through ``python -X importtime``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import kanipy
from kanipy.executor import runner_init, sandbox_files
from kanipy.executor.runner import (
    DEFAULT_PATH,
    HELPER_FLAGS,
    HELPER_IMPORT,
    ChrootRunner,
    RunSpec,
)

PACKAGE_PARENT = str(Path(kanipy.__file__).resolve().parent.parent)

# Modules of the standard library (and the engine's dependencies) that a step's
# helper does not need: each costs milliseconds of every step's start.
SLOW = ("typing", "dataclasses", "inspect", "logging", "tempfile", "random", "shutil",
        "pathlib", "urllib.parse", "secrets", "hashlib", "platform", "re", "json",
        "requests", "click", "kanipy.executor.userdb")
# Loaded only by root steps without mount rights, for their live /proc
# (sandbox_procfs: a supervisor thread, a socket pair), or by the loopback of
# --network=none: a step of the isolated mode with the host's network needs none.
SLOW_ISOLATED = (*SLOW, "signal", "enum", "functools", "collections", "threading", "socket",
                 "kanipy.executor.sandbox_procfs")


def imported_by_helper_start() -> set[str]:
    """``sys.modules`` after the helper's own import line, run as the runner runs it."""
    done = subprocess.run(
        [sys.executable, *HELPER_FLAGS, "-c",
         HELPER_IMPORT + "; print(' '.join(sorted(sys.modules)))", PACKAGE_PARENT],
        capture_output=True, text=True, check=True, env={"PATH": DEFAULT_PATH},
    )
    return set(done.stdout.split())


def test_the_helper_imports_only_fast_modules() -> None:
    loaded = imported_by_helper_start()
    assert "kanipy.executor.runner_init" in loaded
    assert sorted(loaded.intersection(SLOW_ISOLATED)) == []


def test_importing_kanipy_does_not_import_typing() -> None:
    # The package __init__ is on every helper's import path.
    done = subprocess.run(
        [sys.executable, *HELPER_FLAGS, "-c",
         "import sys; sys.path.insert(0, sys.argv[1]); import kanipy; "
         "print(' '.join(sorted(sys.modules)))", PACKAGE_PARENT],
        capture_output=True, text=True, check=True,
    )
    assert "typing" not in done.stdout.split()


@pytest.mark.parametrize("degraded", [False, True], ids=["detected-mode", "unprivileged"])
def test_a_real_step_loads_no_slow_module(rootfs: Path, tmp_path: Path,
                                          degraded: bool) -> None:
    # The runner starts "python -X importtime <helper flags> -c <boot>": every
    # import of the helper, its init and the step's set-up and clean-up is
    # reported on stderr, which the runner hands on as the step's output.
    python = tmp_path / "python-importtime"
    python.write_text(f'#!/bin/sh\nexec {sys.executable} -X importtime "$@"\n')
    python.chmod(0o755)
    runner = ChrootRunner(degraded=degraded, python=str(python))
    lines: list[bytes] = []
    outcome = runner.run(RunSpec(rootfs, ["/bin/sh", "-c", "echo step ran"]), lines.append)
    assert outcome.status == 0
    assert b"step ran" in [line.rstrip(b"\n") for line in lines]
    imported = {line.decode().rsplit("|", 1)[1].strip()
                for line in lines if line.startswith(b"import time:")}
    assert "kanipy.executor.runner_init" in imported
    if degraded:
        assert runner.mode == "unprivileged"
    slow = SLOW_ISOLATED if runner.mode == "isolated" else SLOW
    assert sorted(imported.intersection(slow)) == []


def test_status_lines_read_back_as_sent() -> None:
    # The helper writes its status as JSON without the json package; the engine
    # reads it with json.loads. Odd characters must come back unchanged: an
    # error names a path that may hold any byte (surrogate escapes), quotes,
    # control characters, non-ASCII text.
    message = {"exit": 130, "error": 'no "x"\\\n\t\x00 \udcff é 漢 \U0001f600',
               "missing": [], "warnings": ["a", "b"], "mounted": ["/dev", "/proc"],
               "mode": None, "flags": [True, False]}
    assert json.loads(runner_init._to_json(message)) == message
    with pytest.raises(TypeError):
        runner_init._to_json({"x": 1.5})


def test_remove_tree_never_follows_a_symlink(tmp_path: Path) -> None:
    # The unprivileged mode removes what it placed (its /dev) after the step,
    # whose symlinks there may point anywhere in the build container.
    outside = tmp_path / "outside"
    (outside / "sub").mkdir(parents=True)
    (outside / "sub" / "kept").write_text("kept")
    (outside / "file").write_text("kept")
    tree = tmp_path / "dev"
    (tree / "shm" / "deep" / "er").mkdir(parents=True)
    (tree / "shm" / "deep" / "er" / "f").write_text("x")
    (tree / "shm" / "deep" / "to-dir").symlink_to(outside)
    (tree / "to-sub").symlink_to(outside / "sub")
    (tree / "to-file").symlink_to(outside / "file")
    (tree / "dangling").symlink_to(tmp_path / "nothing")
    os.mkfifo(tree / "fifo")
    (tree / "locked").mkdir(mode=0)
    sandbox_files.remove_tree(str(tree))
    assert not os.path.lexists(tree)
    assert (outside / "sub" / "kept").read_text() == "kept"
    assert (outside / "file").read_text() == "kept"
