"""Config-only instructions end to end, read back with ``skopeo inspect --config --raw``."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.build_support import raw_config
from tests.e2e.helpers import build, unpack_image, write_tree
from tests.fixtures.images import BaseImages
from tests.fixtures.registry import Registry

SECOND = 1_000_000_000


def test_every_metadata_instruction(tmp_path: Path, registry: Registry,
                                    base_images: BaseImages) -> None:
    context = write_tree(tmp_path / "ctx", {"Dockerfile": (
        f"FROM {base_images.oci}\n"
        "MAINTAINER Jane Doe <jane@example.com>\n"
        "ARG VERSION=1.2\n"
        "ENV APP_VERSION=$VERSION APP_HOME=/srv\n"
        "ENV APP_HOME=/opt/app\n"
        "LABEL org.example.version=$VERSION \"with space\"=\"a b\"\n"
        "EXPOSE 80 443/tcp 53/udp\n"
        "USER 1000:1000\n"
        "WORKDIR $APP_HOME\n"
        "VOLUME /data /logs\n"
        "VOLUME [\"/cache\"]\n"
        "STOPSIGNAL SIGQUIT\n"
        "HEALTHCHECK --interval=30s --timeout=5s --start-period=1s --retries=4"
        " CMD wget -q localhost\n"
        "SHELL [\"/bin/sh\", \"-ec\"]\n"
        "CMD run --now\n"
        "ONBUILD RUN echo triggered > /tmp/onbuild.txt\n"
    )})
    dest = registry.ref("e2e/metadata:latest")
    result = build(context, "-d", dest, "--label", "from.flag=yes",
                   "--label", "org.example.version=flag-wins").check()
    doc = raw_config(dest)
    config = doc["config"]
    assert doc["author"] == "Jane Doe <jane@example.com>"
    assert config["Env"] == [
        "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "APP_VERSION=1.2", "APP_HOME=/opt/app",
    ]
    assert config["Labels"] == {"org.example.version": "flag-wins", "with space": "a b",
                                "from.flag": "yes"}
    assert config["ExposedPorts"] == {"443/tcp": {}, "53/udp": {}, "80/tcp": {}}
    assert config["User"] == "1000:1000"
    assert config["WorkingDir"] == "/opt/app"
    assert config["Volumes"] == {"/data": {}, "/logs": {}, "/cache": {}}
    assert config["StopSignal"] == "SIGQUIT"
    assert config["Healthcheck"] == {
        "Test": ["CMD-SHELL", "wget -q localhost"], "Interval": 30 * SECOND,
        "Timeout": 5 * SECOND, "StartPeriod": 1 * SECOND, "Retries": 4,
    }
    assert config["Shell"] == ["/bin/sh", "-ec"]
    assert config["Cmd"] == ["/bin/sh", "-ec", "run --now"]
    assert "Entrypoint" not in config or config["Entrypoint"] is None
    assert config["OnBuild"] == ["RUN echo triggered > /tmp/onbuild.txt"]
    assert not any(h.get("created_by", "").startswith("ARG") for h in doc["history"])
    assert all(h.get("empty_layer") for h in doc["history"][1:]
               if not h["created_by"].startswith("WORKDIR")), doc["history"]
    assert "Traceback" not in result.stderr

    # A second build FROM the first runs the trigger first and clears OnBuild.
    child_ctx = write_tree(tmp_path / "child", {"Dockerfile": (
        f"FROM {dest}\n"
        "USER root\n"
        "RUN cat /tmp/onbuild.txt > /seen-after-trigger\n"
    )})
    child = registry.ref("e2e/metadata-child:latest")
    result = build(child_ctx, "-d", child).check()
    assert "ONBUILD" in result.stderr or "triggered" in result.stderr
    child_doc = raw_config(child)
    assert not child_doc["config"].get("OnBuild")
    assert child_doc["config"]["Labels"]["from.flag"] == "yes"
    rootfs = unpack_image(child, tmp_path / "out")
    assert (rootfs / "seen-after-trigger").read_text() == "triggered\n"


ENTRYPOINT_CASES = [
    pytest.param("ENTRYPOINT [\"/bin/echo\"]\n", ["/bin/echo"], None,
                 id="resets-inherited-cmd"),
    pytest.param("CMD [\"hello\"]\nENTRYPOINT [\"/bin/echo\"]\n", ["/bin/echo"], ["hello"],
                 id="keeps-cmd-from-same-stage"),
    pytest.param("ENTRYPOINT [\"/bin/echo\"]\nCMD [\"after\"]\n", ["/bin/echo"], ["after"],
                 id="cmd-after-entrypoint"),
    pytest.param("ENTRYPOINT echo shell form\n", ["/bin/sh", "-c", "echo shell form"], None,
                 id="shell-form"),
    pytest.param("LABEL x=y\n", None, ["sh"], id="inherited-cmd-kept"),
]


@pytest.mark.parametrize(("steps", "entrypoint", "cmd"), ENTRYPOINT_CASES)
def test_entrypoint_and_cmd(tmp_path: Path, registry: Registry, base_images: BaseImages,
                            steps: str, entrypoint: list[str] | None,
                            cmd: list[str] | None) -> None:
    context = write_tree(tmp_path / "ctx", {"Dockerfile": f"FROM {base_images.oci}\n{steps}"})
    dest = registry.ref(f"e2e/entrypoint:{abs(hash(steps)) % 10**8}")
    build(context, "-d", dest).check()
    config = raw_config(dest)["config"]
    assert config.get("Entrypoint") == entrypoint
    assert config.get("Cmd") == cmd
