"""The image config: real documents round-trip, changes are copies, ENV semantics."""

from __future__ import annotations

import json

import pytest

from kanipy.oci.config import (
    DEFAULT_PATH,
    ConfigError,
    HistoryEntry,
    ImageConfig,
    env_get,
    env_set,
    new_config,
)
from kanipy.oci.descriptor import Platform
from kanipy.oci.digest import Digest

from .conftest import DATA

DIFF = Digest("sha256", "8" * 64)


@pytest.mark.parametrize(
    "filename", ["oci-config-umoci.json", "docker-config-full.json"], ids=["umoci", "docker"]
)
def test_unchanged_config_returns_original_bytes(filename: str) -> None:
    raw = (DATA / filename).read_bytes()
    config = ImageConfig.parse(raw)
    assert config.to_bytes() == raw
    assert config.digest == Digest.of_bytes(raw)


def test_docker_config_fields() -> None:
    config = ImageConfig.parse((DATA / "docker-config-full.json").read_bytes())
    assert config.platform == Platform("linux", "arm", "v7")
    assert config.user == "app"
    assert config.cmd == ["serve", "--port", "8080"]
    assert config.entrypoint == ["/docker-entrypoint.sh"]
    assert config.working_dir == "/srv"
    assert config.exposed_ports == {"8080/tcp": {}}
    assert config.volumes == {"/data": {}}
    assert config.stop_signal == "SIGQUIT"
    assert config.shell == ["/bin/ash", "-c"]
    assert config.on_build == ["COPY . /srv"]
    assert config.healthcheck is not None and config.healthcheck["Retries"] == 3
    assert config.args_escaped is True
    assert config.labels == {"org.opencontainers.image.source": "https://example.com/app"}
    assert env_get(config.env, "LANG") == "C.UTF-8"
    assert len(config.diff_ids) == 2
    assert [h.empty_layer for h in config.history] == [False, True, False]
    assert config.history[2].comment == "buildkit.dockerfile.v0"


def test_changes_keep_unknown_fields_and_leave_input_alone() -> None:
    raw = (DATA / "docker-config-full.json").read_bytes()
    config = ImageConfig.parse(raw)
    changed = config.with_config(user="root", stop_signal=None).with_metadata(author="me")
    assert config.to_bytes() == raw and config.user == "app"
    doc = json.loads(changed.to_bytes())
    assert doc["config"]["User"] == "root" and "StopSignal" not in doc["config"]
    assert doc["author"] == "me"
    # Fields kanipy does not model survive: docker_version, container_config, Hostname.
    assert doc["docker_version"] == "20.10.23"
    assert doc["container_config"]["Cmd"][0] == "/bin/sh"
    assert doc["config"]["Hostname"] == ""


def test_to_bytes_is_deterministic_sorted_compact() -> None:
    a = new_config(Platform()).with_config(cmd=["a"], entrypoint=["b"])
    b = new_config(Platform()).with_config(entrypoint=["b"], cmd=["a"])
    assert a.to_bytes() == b.to_bytes()
    text = a.to_bytes().decode()
    assert " " not in text.replace(DEFAULT_PATH, "")
    assert text.index('"architecture"') < text.index('"config"') < text.index('"os"')


def test_new_config_is_buildkit_scratch() -> None:
    config = new_config(Platform.parse("linux/arm/v7"))
    assert (config.os, config.architecture, config.variant) == ("linux", "arm", "v7")
    assert config.env == [f"PATH={DEFAULT_PATH}"]
    assert config.working_dir == "/"
    assert config.diff_ids == () and config.history == ()


def test_layers_and_history_stay_in_step() -> None:
    config = new_config(Platform())
    config = config.with_layer(DIFF, HistoryEntry(created_by="COPY . /", empty_layer=True))
    config = config.with_history(HistoryEntry(created_by="ENV A=1", created="2024-01-01T00:00:00Z"))
    assert config.diff_ids == (DIFF,)
    assert [h.empty_layer for h in config.history] == [False, True]
    doc = json.loads(config.to_bytes())
    assert doc["rootfs"] == {"type": "layers", "diff_ids": [str(DIFF)]}
    assert doc["history"][0] == {"created_by": "COPY . /"}
    assert doc["history"][1] == {"created": "2024-01-01T00:00:00Z", "created_by": "ENV A=1",
                                 "empty_layer": True}


@pytest.mark.parametrize(
    ("env", "key", "value", "want"),
    [
        ([], "A", "1", ["A=1"]),
        (["A=1", "B=2"], "A", "3", ["A=3", "B=2"]),
        (["PATH=/bin", "B=2"], "C", "x=y", ["PATH=/bin", "B=2", "C=x=y"]),
        (["A=1", "B=2", "A=0"], "A", "9", ["A=9", "B=2"]),
        (["a=1"], "A", "2", ["a=1", "A=2"]),
        (["A=1"], "A", "", ["A="]),
    ],
    ids=["append", "replace-in-place", "value-with-equals", "duplicates-collapse",
         "case-sensitive", "empty-value"],
)
def test_env_set_follows_docker(env: list[str], key: str, value: str, want: list[str]) -> None:
    assert env_set(env, key, value) == want


def test_with_env_and_labels() -> None:
    config = new_config(Platform()).with_env({"PATH": "/opt/bin", "LANG": "C"})
    assert config.env == ["PATH=/opt/bin", "LANG=C"]
    config = config.with_labels({"a": "1"}).with_labels({"b": "2", "a": "3"})
    assert config.labels == {"a": "3", "b": "2"}


@pytest.mark.parametrize("raw", [b"nope", b"[]"], ids=["not-json", "not-object"])
def test_invalid_config(raw: bytes) -> None:
    with pytest.raises(ConfigError):
        ImageConfig.parse(raw)


def test_unknown_setting_is_a_bug_not_silence() -> None:
    with pytest.raises(TypeError):
        new_config(Platform()).with_config(workdir="/x")
