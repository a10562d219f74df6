"""RUN end to end: failures, output, daemons, environment, users, SHELL, exec form, heredocs."""

from __future__ import annotations

import os
import platform
from pathlib import Path

import pytest

from tests.e2e.build_support import processes_matching, push_image, raw_config, tag_exists
from tests.e2e.helpers import (
    build,
    lstat_info,
    run_with_runc,
    skopeo_config,
    unpack_image,
    write_tree,
)
from tests.fixtures.images import BaseImages
from tests.fixtures.registry import Registry
from tests.tools import require_tool

ADD_APP_USER = (
    "RUN echo 'app:x:1000:1000:app:/home/app:/bin/sh' >> /etc/passwd"
    " && echo 'app:x:1000:' >> /etc/group && echo 'extra:x:2000:app' >> /etc/group\n"
)


FAILURES = [
    pytest.param("RUN echo about-to-fail && exit 3\n", ["Dockerfile:3", "exit code 3"],
                 id="exit-status"),
    pytest.param("RUN no-such-command\n", ["Dockerfile:3", "exit code 127"],
                 id="missing-command"),
    pytest.param("USER ghost\nRUN id\n", ["Dockerfile:4", "USER ghost", "ghost"],
                 id="unknown-user"),
]


@pytest.mark.parametrize(("steps", "words"), FAILURES)
def test_failing_run_exits_1_names_line_and_status_and_pushes_nothing(
        tmp_path: Path, registry: Registry, base_images: BaseImages, steps: str,
        words: list[str]) -> None:
    context = write_tree(tmp_path / "ctx", {"Dockerfile": (
        f"FROM {base_images.oci}\n"
        "RUN echo first-step-ran\n"
        f"{steps}"
        "RUN echo never-runs\n"
    )})
    dest = registry.ref("e2e/run-fail:latest")
    result = build(context, "-d", dest)
    assert result.returncode == 1, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    for word in words:
        assert word in last, last
    assert "Traceback" not in result.stderr
    assert "never-runs" not in result.stderr.replace("RUN echo never-runs", "")
    assert result.stdout == ""
    assert "e2e/run-fail" not in registry.catalog()
    assert not tag_exists(dest)


def test_output_streams_under_step_prefix_and_daemon_neither_hangs_nor_survives(
        tmp_path: Path, registry: Registry, base_images: BaseImages) -> None:
    marker = "sleep 987654"
    context = write_tree(tmp_path / "ctx", {"Dockerfile": (
        f"FROM {base_images.oci}\n"
        "RUN echo line-one && echo line-two 1>&2\n"
        f"RUN {marker} & echo started\n"
        "RUN printf no-newline\n"
    )})
    dest = registry.ref("e2e/run-daemon:latest")
    result = build(context, "-d", dest).check()  # the helper's timeout bounds a hang
    lines = result.stderr.splitlines()
    assert any(line.startswith("[1/1] STEP 2/4") and line.endswith("line-one") for line in lines)
    assert any(line.startswith("[1/1] STEP 2/4") and line.endswith("line-two") for line in lines)
    assert any(line.startswith("[1/1] STEP 3/4") and line.endswith("started") for line in lines)
    assert "[1/1] STEP 4/4  | no-newline" in lines, "a last line without a newline is shown"
    assert processes_matching(marker) == []
    assert tag_exists(dest)


def test_environment_user_workdir(tmp_path: Path, registry: Registry,
                                  base_images: BaseImages) -> None:
    context = write_tree(tmp_path / "ctx", {"Dockerfile": (
        f"FROM {base_images.oci}\n"
        "ARG BUILD_ONLY=from-arg\n"
        "ENV KEPT=from-env\n"
        "RUN mkdir /out && chmod 1777 /out"
        " && echo \"$BUILD_ONLY $KEPT\" > /out/vars"
        " && echo \"$PATH\" > /out/path && echo \"$HOME\" > /out/home-root\n"
        + ADD_APP_USER +
        "USER app\n"
        "RUN id > /out/id-name && echo \"$HOME\" > /out/home-app\n"
        "WORKDIR /srv/app\n"
        "RUN pwd > /out/pwd\n"
        "USER 1234:5678\n"
        "RUN id > /out/id-numeric && echo \"$HOME\" > /out/home-numeric\n"
        "USER root\n"
        "WORKDIR /created/by/run\n"
    )})
    dest = registry.ref("e2e/run-env:latest")
    build(context, "-d", dest).check()
    config = skopeo_config(dest)["config"]
    assert "KEPT=from-env" in config["Env"]
    assert not any(e.startswith("BUILD_ONLY=") for e in config["Env"]), config["Env"]
    assert config["User"] == "root"
    assert config["WorkingDir"] == "/created/by/run"

    rootfs = unpack_image(dest, tmp_path / "out")
    out = rootfs / "out"
    assert (out / "vars").read_text() == "from-arg from-env\n"
    assert (out / "path").read_text() == \
        "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n"
    assert (out / "home-root").read_text() == "/root\n"
    assert (out / "home-app").read_text() == "/home/app\n"
    id_name = (out / "id-name").read_text()
    assert id_name.startswith("uid=1000(app) gid=1000(app)"), id_name
    assert "2000(extra)" in id_name, "supplementary groups from /etc/group"
    assert (out / "id-numeric").read_text().startswith("uid=1234 gid=5678"), \
        (out / "id-numeric").read_text()
    assert (out / "home-numeric").read_text() == "/\n", "a uid without a passwd entry"
    assert (out / "pwd").read_text() == "/srv/app\n"
    # BuildKit creates a missing WORKDIR owned by the current USER.
    assert lstat_info(rootfs / "srv/app")[1:] == (1000, 1000)
    assert lstat_info(rootfs / "srv")[1:] == (1000, 1000), "parents too, as BuildKit's MkdirAll"
    assert lstat_info(rootfs / "created/by/run") == ("0o755", 0, 0)


def test_path_and_home_defaults_when_the_image_sets_none(
        tmp_path: Path, registry: Registry, base_images: BaseImages) -> None:
    """A base image with no Env at all: RUN still gets Docker's default PATH and HOME=/root."""
    bare = push_image(tmp_path / "layout", registry.ref("e2e/bare-env:1"),
                      [base_images.layer_tar], _arch(base_images), config={})
    context = write_tree(tmp_path / "ctx", {"Dockerfile": (
        f"FROM {bare}\n"
        "RUN echo \"$PATH|$HOME\" > /seen\n"
    )})
    dest = registry.ref("e2e/run-defaults:latest")
    build(context, "-d", dest).check()
    assert not skopeo_config(dest)["config"].get("Env"), "defaults are not persisted"
    rootfs = unpack_image(dest, tmp_path / "out")
    assert (rootfs / "seen").read_text() == \
        "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin|/root\n"


def _arch(base_images: BaseImages) -> str:
    machine = platform.machine().lower()
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(machine, machine)


# (id, instructions writing /result/<id>, expected content): one image holds every
# form, so the table costs one build.
FORMS = [
    ("shell-changes-shell-form",
     "SHELL [\"/bin/env\", \"VIA_SHELL=yes\", \"/bin/sh\", \"-c\"]\n"
     "RUN echo \"shell:$VIA_SHELL\" > /result/shell-changes-shell-form\n"
     "SHELL [\"/bin/sh\", \"-c\"]\n", "shell:yes\n"),
    ("exec-form", "RUN [\"/bin/sh\", \"-c\", \"echo exec:$0 > /result/exec-form\", \"arg0\"]\n",
     "exec:arg0\n"),
    ("exec-form-not-expanded", "RUN [\"/bin/cp\", \"/etc/group\", \"/result/$HOME\"]\n", None),
    ("heredoc-script",
     "RUN <<EOF\necho one > /result/heredoc-script\necho two >> /result/heredoc-script\nEOF\n",
     "one\ntwo\n"),
    ("heredoc-shebang",
     "RUN <<EOF\n#!/bin/sh\necho \"shebang $#\" > /result/heredoc-shebang\nEOF\n",
     "shebang 0\n"),
    ("heredoc-as-stdin", "RUN cat <<EOF > /result/heredoc-as-stdin\nhello $HOME\nEOF\n",
     "hello /root\n"),
]


def test_run_forms(tmp_path: Path, registry: Registry, base_images: BaseImages) -> None:
    steps = "".join(step for _, step, _ in FORMS)
    context = write_tree(tmp_path / "ctx", {"Dockerfile": (
        f"FROM {base_images.oci}\nRUN mkdir /result\n{steps}")})
    dest = registry.ref("e2e/run-forms:latest")
    build(context, "-d", dest).check()
    rootfs = unpack_image(dest, tmp_path / "out")
    results = rootfs / "result"
    for name, _, expected in FORMS:
        if expected is not None:
            assert (results / name).read_text() == expected, name
    # Exec form reaches no shell: "$HOME" stays a literal file name.
    assert (results / "$HOME").read_text().startswith("root:x:0:")
    assert raw_config(dest)["config"]["Shell"] == ["/bin/sh", "-c"]
    assert not os.path.exists(rootfs / "dev/pipes"), "heredoc scaffolding left in the image"


def test_built_image_runs_under_runc(tmp_path: Path, registry: Registry,
                                     base_images: BaseImages) -> None:
    """The config kanipy writes (user, workdir, env, entrypoint + cmd) drives a real runtime."""
    require_tool("runc")
    context = write_tree(tmp_path / "ctx", {"Dockerfile": (
        f"FROM {base_images.oci}\n"
        + ADD_APP_USER +
        "WORKDIR /srv\n"
        "USER app\n"
        "ENV WHO=runc\n"
        "ENTRYPOINT [\"/bin/sh\", \"-c\","
        " \"echo $WHO $(id -u):$(id -g) $(pwd) $0 $1\", \"first\"]\n"
        "CMD [\"second\"]\n"
    )})
    dest = registry.ref("e2e/runc:latest")
    build(context, "-d", dest).check()
    proc = run_with_runc(unpack_image(dest, tmp_path / "out"))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "runc 1000:1000 /srv first second\n"
