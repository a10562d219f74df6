"""What the command loads for answers that build nothing (issue 14, fixed costs).

``kanipy --version`` and ``kanipy build --help`` run in every CI log that
checks its tools; they load neither the HTTP stack nor the engine. Each case
runs the real command in a fresh interpreter and lists the modules it loaded.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# Loaded only by a build: the HTTP stack, the registry client, the engine, the
# option conversion and the terminal view.
BUILD_ONLY = ("requests", "urllib3", "kanipy.http", "kanipy.registry.client",
              "kanipy.executor.engine", "kanipy.context", "kanipy.cliopts",
              "kanipy.console")

RUN_AND_LIST = (
    "import runpy, sys\n"
    "sys.argv = ['kanipy', *sys.argv[1:]]\n"
    "try:\n"
    "    runpy.run_module('kanipy', run_name='__main__')\n"
    "except SystemExit as exc:\n"
    "    code = exc.code\n"
    "print('MODULES', ' '.join(sorted(sys.modules)), 'EXIT', code)\n"
)


def loaded_by(*argv: str) -> tuple[str, set[str]]:
    """The command's output and the modules loaded when it ended."""
    done = subprocess.run([sys.executable, "-c", RUN_AND_LIST, *argv], cwd=REPO,
                          capture_output=True, text=True, check=True)
    output, _, listed = done.stdout.rpartition("MODULES ")
    modules, _, code = listed.rpartition(" EXIT ")
    assert code.strip() in ("0", "None")
    return output, set(modules.split())


@pytest.mark.parametrize("argv", [("--version",), ("version",), ("build", "--help")],
                         ids=["--version", "version", "build --help"])
def test_answers_that_build_nothing_load_no_build_module(argv: tuple[str, ...]) -> None:
    output, modules = loaded_by(*argv)
    assert output.strip()  # the version, or the help text
    assert "kanipy.cli" in modules
    assert sorted(modules.intersection(BUILD_ONLY)) == []


def test_a_light_registry_module_does_not_load_the_client() -> None:
    # kanipy.registry's names load on first use: the progress events the
    # console draws do not bring requests with them.
    done = subprocess.run(
        [sys.executable, "-c",
         "import sys; from kanipy.registry.progress import ProgressEvent; "
         "print(' '.join(sorted(sys.modules)))"],
        cwd=REPO, capture_output=True, text=True, check=True)
    modules = set(done.stdout.split())
    assert "requests" not in modules
    assert "kanipy.registry.client" not in modules


def test_registry_names_still_load_on_use() -> None:
    import kanipy.registry as registry
    from kanipy.registry.client import RegistryClient

    assert registry.RegistryClient is RegistryClient
    with pytest.raises(AttributeError):
        registry.NoSuchName  # noqa: B018
