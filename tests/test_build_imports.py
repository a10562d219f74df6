"""What a plain build loads (issue 14, fixed costs).

A build from a local directory with one COPY and one RUN, pushed to a
registry, with the plain log, pays for every module it imports before its
first step. The modules of features it does not use load where those features
start: the git context, the layer cache, the RUN step helper's own modules,
the terminal view, the other output formats, zstd. The build runs in a fresh
interpreter, as `kanipy build`, and lists the modules loaded when it ended.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.helpers import write_tree
from tests.fixtures.images import BaseImages
from tests.fixtures.registry import Registry

REPO = Path(__file__).resolve().parents[1]

# Each with what loads it: none is needed by the build below.
NOT_FOR_A_PLAIN_BUILD = (
    "kanipy.context.git",  # a git context, ADD of a git URL, --git
    "kanipy.executor.cache",  # --cache
    "kanipy.executor.cache_key",
    "kanipy.executor.cache_store",
    "kanipy.executor.runner_init",  # the RUN step's helper process, not the build's
    "kanipy.executor.sandbox_files",
    "kanipy.executor.sandbox_isolate",
    "kanipy.executor.sandbox_nomount",
    "kanipy.executor.sandbox_procfs",
    "kanipy.console",  # the live view, on a terminal
    "kanipy.oci.dockerarchive",  # --tar-path
    "kanipy.oci.layout",  # --oci-layout-path, an oci: cache
    "zstandard",  # --compression zstd
)

# What the build does need: if these were missing, the list above would prove nothing.
USED = ("kanipy.executor.engine", "kanipy.context", "kanipy.registry.client",
        "kanipy.executor.runner", "kanipy.fs.layer", "requests")

BUILD_AND_LIST = (
    "import runpy, sys\n"
    "sys.argv = ['kanipy', *sys.argv[1:]]\n"
    "code = 0\n"
    "try:\n"
    "    runpy.run_module('kanipy', run_name='__main__')\n"
    "except SystemExit as exc:\n"
    "    code = exc.code\n"
    "print('MODULES', ' '.join(sorted(sys.modules)), 'EXIT', code)\n"
)


def test_a_plain_build_loads_no_module_of_an_unused_feature(
        tmp_path: Path, registry: Registry, base_images: BaseImages) -> None:
    context = write_tree(tmp_path / "ctx", {
        "Dockerfile": (
            f"FROM {base_images.oci}\n"
            "COPY hello.txt /hello.txt\n"
            "RUN echo built > /built\n"
            "ENV GREETING=hello\n"
            'CMD ["cat", "/hello.txt"]\n'
        ),
        "hello.txt": "hello\n",
    })
    dest = registry.ref("imports/plain:latest")
    done = subprocess.run(
        [sys.executable, "-c", BUILD_AND_LIST, "build", "--context", str(context),
         "--destination", dest, "--insecure-registry", registry.host,
         "--kanipy-dir", str(tmp_path / "work"), "--progress", "plain"],
        cwd=REPO, capture_output=True, text=True, check=True, stdin=subprocess.DEVNULL)
    output, _, listed = done.stdout.rpartition("MODULES ")
    modules_text, _, code = listed.rpartition(" EXIT ")
    assert code.strip() in ("0", "None"), done.stderr
    assert output.strip().startswith(f"{registry.host}/imports/plain@sha256:")
    modules = set(modules_text.split())
    assert sorted(set(USED) - modules) == []
    assert sorted(modules.intersection(NOT_FOR_A_PLAIN_BUILD)) == []


@pytest.mark.parametrize("module", ["kanipy.context", "kanipy.cliopts",
                                    "kanipy.executor.engine"])
def test_build_modules_do_not_load_the_git_context_or_the_cache(module: str) -> None:
    # The same promise without a registry: importing what a build imports
    # first (option conversion, context, engine) brings neither in.
    done = subprocess.run(
        [sys.executable, "-c",
         f"import sys, {module}; print(' '.join(sorted(sys.modules)))"],
        cwd=REPO, capture_output=True, text=True, check=True)
    modules = set(done.stdout.split())
    assert module in modules
    assert sorted(modules.intersection(NOT_FOR_A_PLAIN_BUILD)) == []


COLLECTOR_AFTER = (
    "import gc, runpy, sys\n"
    "sys.argv = ['kanipy', *sys.argv[1:]]\n"
    "try:\n"
    "    runpy.run_module('kanipy', run_name='__main__')\n"
    "except SystemExit as exc:\n"
    "    print('EXIT', exc.code)\n"
    "print('COLLECTOR', gc.isenabled(), gc.get_freeze_count())\n"
)


def test_the_command_collects_again_once_the_build_modules_are_loaded(tmp_path: Path) -> None:
    # The collector is paused while `kanipy build` loads its modules, then runs
    # again with them frozen; a long build must not run without it. The
    # context is missing, so the build fails after that point, with no registry.
    done = subprocess.run(
        [sys.executable, "-c", COLLECTOR_AFTER, "build", "--context", str(tmp_path / "none"),
         "--no-push", "--kanipy-dir", str(tmp_path / "work")],
        cwd=REPO, capture_output=True, text=True, check=True)
    lines = dict(line.split(" ", 1) for line in done.stdout.splitlines())
    assert lines["EXIT"] != "0"
    assert "no such directory" in done.stderr
    enabled, frozen = lines["COLLECTOR"].split()
    assert enabled == "True"
    assert int(frozen) > 10_000  # the modules' objects, set aside from every collection


def test_the_library_leaves_its_callers_collector_alone(tmp_path: Path) -> None:
    import gc

    from click.testing import CliRunner

    from kanipy.cli import cli

    frozen = gc.get_freeze_count()
    result = CliRunner().invoke(cli, ["build", "--context", str(tmp_path / "none"),
                                      "--no-push", "--kanipy-dir", str(tmp_path / "work")])
    assert result.exit_code != 0
    assert gc.isenabled()
    assert gc.get_freeze_count() == frozen
