"""kanipy: build container images from a Dockerfile, with no Docker daemon.

The Python entry point is ``build``; the ``kanipy build`` command is a thin
wrapper around it::

    import kanipy

    result = kanipy.build(kanipy.BuildOptions(
        context="src", dockerfile="Dockerfile",
        destinations=("registry.example.com/app:1.0",),
    ))
    print(result.digest, result.pushed)
    for step in result.summaries:
        print(step.step.text, step.seconds, step.layer_size)

``BuildOptions`` holds everything the command line can say, under Kaniko's
names (``--build-arg`` is ``build_args``, ``--no-push`` is ``no_push``...).
Failures are ``KanipyError`` subclasses, each with the ``exit_code`` the
command exits with: ``BuildError`` (1), ``UsageError`` (2),
``DockerfileError`` (3), ``RegistryError`` (4), ``IntegrityError`` (5).
Nothing is printed: pass a ``reporter`` to watch progress.

The heavy modules load only when ``build`` or a name from them is first used,
so ``import kanipy`` stays cheap.
"""

from __future__ import annotations

from kanipy.errors import (
    BuildError,
    DockerfileError,
    IntegrityError,
    KanipyError,
    RegistryError,
    UsageError,
)

# Not ``typing.TYPE_CHECKING``: every RUN step's helper imports this package, and
# ``typing`` alone costs it several milliseconds (mypy treats this name as true).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from kanipy.executor.engine import BuildResult
    from kanipy.executor.options import BuildOptions
    from kanipy.executor.progress import BuildReporter, StepSummary
    from kanipy.executor.runner import Runner

__version__ = "0.1.0"

__all__ = [
    "BuildError", "BuildOptions", "BuildReporter", "BuildResult", "DockerfileError",
    "IntegrityError", "KanipyError", "RegistryError", "StepSummary", "UsageError", "build",
]

# Names handed on from the modules that define them, imported on first use.
_LAZY = {
    "BuildOptions": "kanipy.executor.options",
    "BuildResult": "kanipy.executor.engine",
    "BuildReporter": "kanipy.executor.progress",
    "StepSummary": "kanipy.executor.progress",
}


def build(options: BuildOptions, *, reporter: BuildReporter | None = None,
          runner: Runner | None = None) -> BuildResult:
    """Build (and push) the image ``options`` describe; the result has its digest,
    the ``name@digest`` of every destination pushed, and a summary per step.

    ``reporter`` receives progress (stages, steps, their output, transfers);
    by default nothing is reported. ``runner`` runs RUN steps (default: the
    runner that picks the isolated or unprivileged mode by itself). Raises a
    ``KanipyError`` when the build fails; nothing is pushed then.
    """
    from kanipy.executor.engine import run_build
    from kanipy.executor.progress import NullReporter

    return run_build(options, reporter or NullReporter(), runner)


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'kanipy' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
