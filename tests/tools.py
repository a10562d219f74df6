"""Finding the real tools integration tests check against.

Under ``CI=true`` a missing tool or a missing privilege fails the test: CI
must never go green by skipping. Elsewhere the test is skipped with the reason.
"""

from __future__ import annotations

import os
import shutil

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
