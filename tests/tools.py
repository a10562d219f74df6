"""Finding the real tools integration tests check against.

Under ``CI=true`` a missing tool or a missing privilege fails the test: CI
must never go green by skipping. Elsewhere the test is skipped with the reason.
Also the real parts tests make for themselves, such as a small file system.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def unavailable(reason: str) -> None:
    """Fail under CI, skip elsewhere."""
    if in_ci():
        pytest.fail(f"CI=true and {reason}; scripts/setup.sh should have provided it")
    pytest.skip(reason)


def require_tool(name: str) -> str:
    """The path of executable ``name``, or fail/skip when it is not installed."""
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")
    if path is None:
        unavailable(f"{name} is not installed")
    assert path is not None
    return path


def require_root() -> None:
    if os.geteuid() != 0:
        unavailable("this test runs RUN steps for real and needs root")


@contextlib.contextmanager
def small_tmpfs(where: Path, size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` (mount's syntax: ``1m``) mounted at ``where`` for the block:
    a real disk that fills up on demand. Needs root."""
    require_root()
    where.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
                   check=True)
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)
