"""Kaniko's flags and kanipy's log formats in a child process, as a CI step runs them.

``--dry-run`` builds need no registry: every flag of the table is given at once,
in each of Kaniko's spellings. The JSON log is parsed line by line on a real
build against the registry fixture, and on failures.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from kanipy.cliflags import FLAGS, NOOP, Flag
from tests.e2e.helpers import build, kanipy, skopeo_manifest, write_tree
from tests.fixtures.images import BaseImages
from tests.fixtures.registry import Registry
from tests.terminal import on_a_terminal

VALUES: dict[str, str] = {
    "dockerfile": "Dockerfile", "context_sub_path": ".", "git": "branch=main",
    "build_args": "A=1", "target": "app", "secrets": "id=tok,env=HOME",
    "destinations": "registry.example/app:1", "labels": "k=v", "annotations": "a.b=c",
    "custom_platform": "linux/amd64", "image_format": "oci",
    "insecure_registries": "registry.example", "skip_tls_verify_registries": "registry.example",
    "registry_certificates": "registry.example=/ca.pem",
    "registry_client_certs": "registry.example=/c.pem,/k.pem",
    "registry_mirrors": "mirror.example", "registry_maps": "quay.io=mirror.example",
    "credential_helpers": "ecr", "cache_repo": "registry.example/cache", "cache_ttl": "6h",
    "compression": "zstd", "snapshot_mode": "redo", "ignore_paths": "/var/cache",
    "verbosity": "info", "log_format": "text", "progress": "plain",
    "custom_platform_deprecated": "linux/amd64",
    "snapshot_mode_deprecated": "time",
}
# Given by the test itself (the context, the plan) or refused on purpose (--bucket).
SKIPPED = {"context", "dry_run", "bucket"}


def _value(flag: Flag, tmp: Path) -> str:
    if flag.dest in VALUES:
        return VALUES[flag.dest]
    if flag.kind == "int":
        return "2"
    if flag.kind == "path":
        return str(tmp / flag.dest)
    raise AssertionError(f"no value for {flag.name}")


def _every_flag(tmp: Path, form: str) -> list[str]:
    args: list[str] = []
    for flag in FLAGS:
        if flag.dest in SKIPPED:
            continue
        if flag.kind == "bool":
            args += [flag.name] if form == "bare" else [f"{flag.name}={form}"]
        elif form == "bare":
            args += [flag.name, _value(flag, tmp)]
        else:
            args += [f"{flag.name}={_value(flag, tmp)}"]
    return args


@pytest.mark.parametrize("form", ["bare", "true", "false"],
                         ids=["--flag VALUE", "--flag=true, --flag=VALUE",
                              "--flag=false, --flag=VALUE"])
def test_every_kaniko_flag_at_once_in_a_real_dry_run(tmp_path: Path, form: str) -> None:
    context = write_tree(tmp_path / "ctx", {"Dockerfile": "FROM scratch AS app\nENV A=1\n"})
    result = kanipy("build", "-c", str(context), "--dry-run", *_every_flag(tmp_path, form))
    assert result.returncode == 0, result.stderr
    assert "ENV A=1" in result.stdout
    assert "Traceback" not in result.stderr
    if form == "false":
        return
    for flag in FLAGS:
        if flag.status == NOOP and flag.kind != "bool":
            assert f"INFO {flag.name} has no effect in kanipy: " in result.stderr, flag.name


@pytest.mark.parametrize("flag", [f for f in FLAGS if f.kind == "bool" and f.dest != "debug"],
                         ids=lambda f: f.name)
def test_each_boolean_in_both_forms_through_the_command(tmp_path: Path, flag: Flag) -> None:
    context = write_tree(tmp_path / "ctx", {"Dockerfile": "FROM scratch\n"})
    for args in ([flag.name], [f"{flag.name}=false"], [f"{flag.name}=True"]):
        result = kanipy("build", "-c", str(context), "--dry-run", *args)
        if flag.dest == "dry_run" and args[0].endswith("=false"):
            # The later --dry-run=false wins: a real build, which needs a destination.
            assert result.returncode == 2 and "no --destination given" in result.stderr
            continue
        assert result.returncode == 0, (args, result.stderr)


def _records(stderr: str) -> list[dict[str, Any]]:
    records = []
    for line in stderr.splitlines():
        record = json.loads(line)  # every line, or the test fails here
        assert isinstance(record, dict)
        for key in ("time", "level", "msg"):
            assert key in record, record
        assert "  " not in record["msg"], f"padded text in msg: {record['msg']!r}"
        records.append(record)
    return records


def test_json_log_of_a_real_build_has_typed_fields(
        tmp_path: Path, registry: Registry, base_images: BaseImages) -> None:
    context = write_tree(tmp_path / "ctx", {
        "Dockerfile": (f"FROM {base_images.oci}\n"
                       "ENV A=1\n"
                       "RUN echo from-the-step && echo x > /f\n"
                       "COPY file.txt /file.txt\n"),
        "file.txt": "x\n",
    })
    dest = registry.ref("e2e/json-typed:1")
    result = build(context, "--log-format=json", "-d", dest).check()
    records = _records(result.stderr)
    events = [r.get("event") for r in records]
    for event in ("stage", "step", "output", "step_done", "pushed", "summary", "built"):
        assert event in events, (event, events)

    stage = next(r for r in records if r.get("event") == "stage")
    assert stage["stage"] == 1 and stage["stages"] == 1 and stage["base"] == base_images.oci
    run_step = next(r for r in records if r.get("event") == "step" and r["step"] == 3)
    assert run_step["instruction"].startswith("RUN echo from-the-step")
    assert run_step["line"] == 3 and run_step["steps"] == 4
    output = next(r for r in records if r.get("event") == "output")
    assert output["output"] == "from-the-step" and output["step"] == 3
    done = {r["step"]: r for r in records if r.get("event") == "step_done"}
    assert set(done) == {1, 2, 3, 4}
    assert isinstance(done[3]["seconds"], float)
    assert isinstance(done[3]["layer_bytes"], int) and done[3]["layer_bytes"] > 0
    assert done[2]["layer_bytes"] is None, "ENV adds no layer"
    assert done[2]["layer_digest"] is None
    assert all(r["cached"] is False for r in done.values()), "kanipy has no layer cache yet"
    manifest = skopeo_manifest(dest)
    # The digests of the layers the RUN and the COPY added: the manifest's last two.
    assert [done[3]["layer_digest"], done[4]["layer_digest"]] == \
        [layer["digest"] for layer in manifest["layers"][-2:]]
    assert done[3]["layer_bytes"] == manifest["layers"][-2]["size"]
    pushed = next(r for r in records if r.get("event") == "pushed")
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", pushed["digest"])
    summary = next(r for r in records if r.get("event") == "summary")
    assert [s["step"] for s in summary["steps"]] == [1, 2, 3, 4]
    assert [s["layer_digest"] for s in summary["steps"]] == \
        [done[n]["layer_digest"] for n in (1, 2, 3, 4)]
    assert summary["steps"][2]["instruction"] == run_step["instruction"]
    assert isinstance(summary["seconds"], float)
    built = records[-1]
    assert built["event"] == "built" and built["digest"] == pushed["digest"]
    assert result.stdout.strip() == f"{registry.host}/e2e/json-typed@{pushed['digest']}"


def test_json_log_of_a_failed_run_ends_with_a_typed_error(
        tmp_path: Path, registry: Registry, base_images: BaseImages) -> None:
    context = write_tree(tmp_path / "ctx", {"Dockerfile": (
        f"FROM {base_images.oci}\nRUN echo before && exit 3\n")})
    result = build(context, "--log-format", "json", "-d", registry.ref("e2e/json-fail:1"))
    assert result.returncode == 1
    assert result.stdout == ""
    error = _records(result.stderr)[-1]
    assert error["event"] == "error" and error["level"] == "error"
    assert error["exit_code"] == 1 and error["error"] == "BuildError"
    assert error["line"] == 2 and error["step"] == 2
    assert error["instruction"].startswith("RUN echo before")
    assert "exit code 3" in error["msg"]
    assert error["exit_status"] == 3
    assert not error["msg"].startswith("kanipy:")


def test_json_log_of_a_dockerfile_error_names_file_and_line(tmp_path: Path) -> None:
    context = write_tree(tmp_path / "ctx", {"Dockerfile": "FROM scratch\nFROBNICATE now\n"})
    result = kanipy("build", "-c", str(context), "--dry-run", "--log-format=json")
    assert result.returncode == 3
    error = _records(result.stderr)[-1]
    assert error["event"] == "error" and error["exit_code"] == 3
    assert error["file"] == "Dockerfile" and error["line"] == 2
    assert "FROBNICATE" in error["msg"]


def test_json_log_of_a_usage_error_is_json_too(tmp_path: Path) -> None:
    context = write_tree(tmp_path / "ctx", {"Dockerfile": "FROM scratch\n"})
    result = kanipy("build", "-c", str(context), "--log-format=json", "--label", "novalue")
    assert result.returncode == 2
    error = _records(result.stderr)[-1]
    assert error["exit_code"] == 2 and error["error"] == "UsageError"


@pytest.mark.parametrize(("log_format", "no_color", "coloured"), [
    ("color", None, True),
    ("color", "1", False),
    ("text", None, False),
], ids=["color", "color-NO_COLOR", "text"])
def test_colour_on_a_terminal_only_as_asked(tmp_path: Path, log_format: str,
                                            no_color: str | None, coloured: bool) -> None:
    context = write_tree(tmp_path / "ctx", {"Dockerfile": "FROM scratch\n"})
    env = {"NO_COLOR": no_color} if no_color is not None else {}
    if no_color is None:
        env["NO_COLOR"] = ""  # present but empty: colour stays on (no-color.org)
    run = on_a_terminal(
        ["build", "-c", str(context), "--dry-run", "--force", f"--log-format={log_format}",
         "--progress=plain"], env, timeout=60)
    status, drawn = run.status, run.raw.decode(errors="replace")
    assert status == 0, drawn
    assert ("\x1b[34mINFO\x1b[0m --force has no effect" in drawn) is coloured, drawn
    if not coloured:
        assert "\x1b[" not in drawn, drawn
