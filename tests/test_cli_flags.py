"""Every Kaniko flag through the real ``kanipy build`` command, in every form Kaniko accepts.

The click command is the real one; only the engine's ``run_build`` is replaced
by a recorder, so each test sees the BuildOptions a flag produced (or the
usage error it caused) without a registry. ``tests/e2e/test_cli_flags.py``
runs the same flags in a child process with a real ``--dry-run`` build.
"""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import re
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from kanipy import cli as cli_module
from kanipy.cli import ConsoleReporter, use_colour
from kanipy.cliflags import BY_DEST, DEPRECATED_ALIAS, FLAGS, GROUPS, NOOP, Flag, readme_table
from kanipy.executor import engine
from kanipy.executor.options import BuildOptions

REPO = Path(__file__).resolve().parents[1]
BOOL_FIELDS = {f.name for f in dataclasses.fields(BuildOptions)}
DEST = "registry.example/app:1"

# A valid value for each valued flag, by dest; kinds give the rest.
SAMPLES: dict[str, str] = {
    "dockerfile": "Dockerfile", "context": ".", "context_sub_path": ".", "git": "branch=main",
    "build_args": "A=1", "target": "0", "secrets": "id=tok,env=HOME",
    "destinations": DEST, "labels": "k=v", "annotations": "org.example.k=v",
    "custom_platform": "linux/amd64", "image_format": "oci",
    "insecure_registries": "reg.example", "skip_tls_verify_registries": "reg.example",
    "registry_certificates": "reg.example=/etc/ssl/ca.pem",
    "registry_client_certs": "reg.example=/c.pem,/k.pem",
    "registry_mirrors": "mirror.example", "registry_maps": "quay.io=mirror.example",
    "credential_helpers": "ecr", "cache_repo": "reg.example/cache", "cache_ttl": "6h",
    "compression": "zstd", "snapshot_mode": "redo", "ignore_paths": "/var/cache",
    "verbosity": "debug", "log_format": "text", "progress": "plain",
    "custom_platform_deprecated": "linux/amd64",
    "snapshot_mode_deprecated": "time",
}


@dataclasses.dataclass
class Recorder:
    options: list[BuildOptions]


@pytest.fixture
def recorder(monkeypatch: pytest.MonkeyPatch) -> Recorder:
    seen: list[BuildOptions] = []

    def fake_run_build(options: BuildOptions, reporter: Any, runner: Any = None
                       ) -> engine.BuildResult:
        seen.append(options)
        return engine.BuildResult(digest="sha256:" + "0" * 64)

    monkeypatch.setattr(engine, "run_build", fake_run_build)
    for var in ("KANIKO_NO_PUSH", "KANIKO_REGISTRY_MIRROR", "KANIKO_REGISTRY_MAP", "KANIKO_DIR",
                "BUILDER_OUTPUT", "KANIKO_CLEANUP", "KANIKO_PRE_CLEANUP",
                "KANIKO_PRESERVE_CONTEXT"):
        monkeypatch.delenv(var, raising=False)
    return Recorder(seen)


@pytest.fixture
def context(tmp_path: Path) -> Path:
    (tmp_path / "Dockerfile").write_text("FROM scratch\nENV A=1\n")
    return tmp_path


def run(context: Path, *args: str, env: dict[str, str] | None = None) -> Result:
    runner = CliRunner()
    return runner.invoke(cli_module.cli, ["build", "-c", str(context), *args], env=env)


def _sample(flag: Flag, tmp: Path) -> str:
    if flag.dest in SAMPLES:
        return SAMPLES[flag.dest]
    if flag.kind == "bool":
        return "true"
    if flag.kind == "int":
        return "2"
    if flag.kind == "path":
        return str(tmp / f"{flag.dest}.out")
    raise AssertionError(f"no sample value for {flag.name}")


def _forms(flag: Flag, value: str) -> list[tuple[str, list[str]]]:
    """Kaniko's spellings of one flag: ``--f V`` and ``--f=V``; bare, =true, =false for bools."""
    if flag.kind == "bool":
        return [("bare", [flag.name]), ("=true", [f"{flag.name}=true"]),
                ("=false", [f"{flag.name}=false"])]
    return [("space", [flag.name, value]), ("equals", [f"{flag.name}={value}"])]


CASES = [
    pytest.param(flag, form, id=f"{flag.name}-{form}")
    for flag in FLAGS if flag.dest != "bucket"
    for form in (("bare", "=true", "=false") if flag.kind == "bool" else ("space", "equals"))
]


@pytest.mark.parametrize(("flag", "form"), CASES)
def test_every_flag_is_accepted_in_each_of_its_forms(
        flag: Flag, form: str, recorder: Recorder, context: Path, tmp_path: Path) -> None:
    value = _sample(flag, tmp_path)
    args = dict(_forms(flag, value))[form]
    base = ["-d", DEST] if flag.dest != "destinations" else []
    result = run(context, *base, *args)
    assert result.exit_code == 0, result.output + result.stderr
    assert len(recorder.options) == 1
    options = recorder.options[0]
    if flag.kind == "bool" and flag.dest in BOOL_FIELDS:
        assert getattr(options, flag.dest) is (form != "=false"), flag.name


GO_SPELLINGS = [("1", True), ("t", True), ("T", True), ("TRUE", True), ("true", True),
                ("True", True), ("0", False), ("f", False), ("F", False), ("FALSE", False),
                ("false", False), ("False", False)]


@pytest.mark.parametrize(("text", "expected"), GO_SPELLINGS, ids=[t for t, _ in GO_SPELLINGS])
def test_booleans_take_every_spelling_of_go_parsebool(
        text: str, expected: bool, recorder: Recorder, context: Path) -> None:
    result = run(context, "-d", DEST, f"--skip-tls-verify={text}", f"--reproducible={text}")
    assert result.exit_code == 0, result.stderr
    assert recorder.options[0].skip_tls_verify is expected
    assert recorder.options[0].reproducible is expected


@pytest.mark.parametrize("text", ["yes", "maybe", "", "2"])
def test_a_boolean_that_go_would_refuse_is_a_usage_error(
        text: str, recorder: Recorder, context: Path) -> None:
    result = run(context, "-d", DEST, f"--no-push={text}")
    assert result.exit_code == 2
    assert "is not a boolean" in result.stderr
    assert recorder.options == []


def test_a_bare_boolean_never_swallows_the_next_flag(recorder: Recorder, context: Path) -> None:
    result = run(context, "--no-push", "--insecure", "-d", DEST, "--skip-tls-verify")
    assert result.exit_code == 0, result.stderr
    options = recorder.options[0]
    assert options.no_push and options.insecure and options.skip_tls_verify
    assert options.destinations == (DEST,)


NOOP_FLAGS = [f for f in FLAGS if f.status == NOOP]


@pytest.mark.parametrize("flag", NOOP_FLAGS, ids=[f.name for f in NOOP_FLAGS])
def test_a_flag_that_changes_nothing_says_why_once(
        flag: Flag, recorder: Recorder, context: Path, tmp_path: Path) -> None:
    if flag.kind == "bool":
        other = "false" if flag.kaniko_default else "true"
        args = [f"{flag.name}={other}", f"{flag.name}={other}"]
    else:
        args = [f"{flag.name}={_sample(flag, tmp_path)}"]
    result = run(context, "-d", DEST, *args)
    assert result.exit_code == 0, result.stderr
    lines = [line for line in result.stderr.splitlines()
             if line.startswith(f"INFO {flag.name} has no effect in kanipy: ")]
    assert len(lines) == 1, result.stderr
    assert "`" not in lines[0]


@pytest.mark.parametrize("flag", [f for f in NOOP_FLAGS if f.kind == "bool"],
                         ids=[f.name for f in NOOP_FLAGS if f.kind == "bool"])
def test_a_noop_boolean_at_kanikos_default_says_nothing(
        flag: Flag, recorder: Recorder, context: Path) -> None:
    value = "true" if flag.kaniko_default else "false"
    result = run(context, "-d", DEST, f"{flag.name}={value}")
    assert result.exit_code == 0, result.stderr
    assert "has no effect" not in result.stderr


ALIASES = [f for f in FLAGS if f.status == DEPRECATED_ALIAS]


@pytest.mark.parametrize("flag", ALIASES, ids=[f.name for f in ALIASES])
def test_deprecated_spellings_are_read_as_the_current_flag(
        flag: Flag, recorder: Recorder, context: Path, tmp_path: Path) -> None:
    value = "false" if flag.kind == "bool" else _sample(flag, tmp_path)
    result = run(context, "-d", DEST, f"{flag.name}={value}")
    assert result.exit_code == 0, result.stderr
    target = BY_DEST[flag.alias_of or ""]
    assert f"{flag.name} is deprecated in Kaniko; read as {target.name}" in result.stderr


def test_tar_path_and_custom_platform_old_spellings_take_effect(
        recorder: Recorder, context: Path, tmp_path: Path) -> None:
    result = run(context, "-d", DEST, "--tarPath", str(tmp_path / "i.tar"),
                 "--customPlatform=linux/arm64")
    assert result.exit_code == 0, result.stderr
    options = recorder.options[0]
    assert options.tar_path == tmp_path / "i.tar"
    assert options.custom_platform is not None
    assert options.custom_platform.architecture == "arm64"


def test_fork_additions_reach_the_build_options(
        recorder: Recorder, context: Path) -> None:
    result = run(
        context, "-d", DEST, "--annotation", "org.opencontainers.image.source=https://x",
        "--annotation=a=b=c", "--skip-push-permission-check",
        "--push-ignore-immutable-tag-errors=true", "--image-download-retry", "5",
        "--registry-map", "index.docker.io=mirror.gcr.io;quay.io=q.example",
        "--registry-map=gcr.io=127.0.0.1:5000", "--skip-default-registry-fallback",
        "--registry-client-cert", "reg.example:5000=/c.pem,/k.pem",
        "--ignore-path", "/var/cache/", "--ignore-path=/tmp/../opt",
        "--kaniko-dir", "/tmp/kd", "--compression-level=-1")
    assert result.exit_code == 0, result.stderr
    o = recorder.options[0]
    assert o.annotations == (("org.opencontainers.image.source", "https://x"), ("a", "b=c"))
    assert o.skip_push_permission_check and o.push_ignore_immutable_tag_errors
    assert o.image_download_retry == 5
    assert o.registry_maps == (("index.docker.io", "mirror.gcr.io"), ("quay.io", "q.example"),
                               ("gcr.io", "127.0.0.1:5000"))
    assert o.registry_mirrors == ("mirror.gcr.io",), "a Docker Hub map entry is a mirror"
    assert o.skip_default_registry_fallback
    assert o.registry_client_certs == (("reg.example:5000", "/c.pem", "/k.pem"),)
    assert o.ignore_paths == ("/var/cache", "/opt")
    assert o.kanipy_dir == Path("/tmp/kd")
    assert o.compression_level is None, "Kaniko's -1 means the default level"


@pytest.mark.parametrize(("args", "message"), [
    (["--bucket", "my-bucket"], "--bucket my-bucket: kanipy reads no cloud buckets"),
    (["-b", "s3://b/ctx.tar.gz"], "reads no cloud buckets"),
    (["--registry-map", "quay.io"], "--registry-map 'quay.io': expected ORIG=NEW"),
    (["--registry-client-cert", "h=/c.pem"], "expected HOST=CERT,KEY"),
    (["--annotation", "novalue"], "--annotation 'novalue': expected KEY=VALUE"),
    (["--ignore-path", "var/cache"], "expected an absolute path"),
    (["--git", "depth=1"], "--git 'depth=1': expected KEY=VALUE"),
    (["--git", "single-branch=maybe"], "is not a boolean"),
], ids=["bucket", "bucket-s3", "registry-map", "client-cert", "annotation", "ignore-path",
        "git-key", "git-bool"])
def test_malformed_values_exit_2_before_any_work(
        args: list[str], message: str, recorder: Recorder, context: Path) -> None:
    result = run(context, "-d", DEST, *args)
    assert result.exit_code == 2, result.stderr
    assert message in result.stderr.splitlines()[-1]
    assert recorder.options == []


def test_kaniko_environment_variables(recorder: Recorder, context: Path, tmp_path: Path) -> None:
    env = {"KANIKO_NO_PUSH": "true", "KANIKO_REGISTRY_MIRROR": "mirror.example",
           "KANIKO_REGISTRY_MAP": "quay.io=q.example;docker.io=hub.example",
           "KANIKO_DIR": str(tmp_path / "kd"), "BUILDER_OUTPUT": str(tmp_path / "out")}
    result = run(context, "--registry-mirror", "first.example", env=env)
    assert result.exit_code == 0, result.stderr
    o = recorder.options[0]
    assert o.no_push
    assert o.registry_mirrors == ("first.example", "mirror.example", "hub.example")
    assert o.registry_maps == (("quay.io", "q.example"), ("docker.io", "hub.example"))
    assert o.kanipy_dir == tmp_path / "kd"
    assert o.builder_output == tmp_path / "out"


def test_kaniko_no_push_wins_over_the_flag_and_the_kaniko_dir_flag_over_its_variable(
        recorder: Recorder, context: Path, tmp_path: Path) -> None:
    result = run(context, "-d", DEST, "--no-push", "--kaniko-dir", str(tmp_path / "flag"),
                 env={"KANIKO_NO_PUSH": "false", "KANIKO_DIR": str(tmp_path / "env")})
    assert result.exit_code == 0, result.stderr
    assert recorder.options[0].no_push is False
    assert recorder.options[0].kanipy_dir == tmp_path / "flag"


def test_a_bad_kaniko_no_push_is_a_usage_error(recorder: Recorder, context: Path) -> None:
    result = run(context, "-d", DEST, env={"KANIKO_NO_PUSH": "yes"})
    assert result.exit_code == 2
    assert "KANIKO_NO_PUSH='yes' is not a boolean" in result.stderr


def test_the_forks_environment_defaults_are_noted(recorder: Recorder, context: Path) -> None:
    result = run(context, "-d", DEST, env={"KANIKO_PRESERVE_CONTEXT": "true",
                                          "KANIKO_CLEANUP": "1"})
    assert result.exit_code == 0, result.stderr
    assert "--preserve-context has no effect in kanipy" in result.stderr
    # KANIKO_CLEANUP is --cleanup: remove the work directory before exiting.
    assert "--cleanup has no effect" not in result.stderr
    assert recorder.options[0].cleanup is True


@pytest.mark.parametrize(("args", "env", "expected"), [
    ([], {}, False),
    (["--cleanup"], {}, True),
    (["--cleanup=false"], {"KANIKO_CLEANUP": "true"}, False),
    ([], {"KANIKO_CLEANUP": "false"}, False),
], ids=["default", "flag", "flag-wins-over-env", "env-false"])
def test_cleanup_from_the_flag_or_kaniko_cleanup(recorder: Recorder, context: Path,
                                                 args: list[str], env: dict[str, str],
                                                 expected: bool) -> None:
    result = run(context, "-d", DEST, *args, env=env)
    assert result.exit_code == 0, result.stderr
    assert recorder.options[0].cleanup is expected


@pytest.mark.parametrize(("context_url", "git", "expected"), [
    ("git://github.com/org/repo.git", ["branch=dev"], "git://github.com/org/repo.git#dev"),
    ("git://github.com/org/repo.git#main", ["branch=dev"], "git://github.com/org/repo.git#main"),
    ("https://example.com/org/repo.git", ["branch=v1,single-branch=true"],
     "https://example.com/org/repo.git#v1"),
], ids=["branch", "url-ref-wins", "comma-form"])
def test_git_branch_picks_the_ref(context_url: str, git: list[str], expected: str,
                                  recorder: Recorder, tmp_path: Path) -> None:
    args = [a for g in git for a in ("--git", g)]
    result = CliRunner().invoke(cli_module.cli, ["build", "-c", context_url, "-d", DEST, *args])
    assert result.exit_code == 0, result.stderr
    assert recorder.options[0].context == expected


def test_git_insecure_skip_tls_reaches_git(recorder: Recorder) -> None:
    result = CliRunner().invoke(cli_module.cli, [
        "build", "-c", "git://example.com/r.git", "-d", DEST,
        "--git", "insecure-skip-tls=true", "--git=recurse-submodules=false"])
    assert result.exit_code == 0, result.stderr
    assert recorder.options[0].env["GIT_SSL_NO_VERIFY"] == "true"


def test_git_on_a_directory_context_says_it_does_nothing(recorder: Recorder,
                                                         context: Path) -> None:
    result = run(context, "-d", DEST, "--git", "branch=dev")
    assert result.exit_code == 0, result.stderr
    assert "--git has no effect: the context" in result.stderr
    assert recorder.options[0].context == str(context)


def test_help_lists_every_flag_under_its_group_in_kanikos_order() -> None:
    result = CliRunner().invoke(cli_module.cli, ["build", "--help"], terminal_width=200)
    assert result.exit_code == 0
    text = result.output
    positions = [text.index(f"\n{group}:\n") for group in GROUPS]
    assert positions == sorted(positions)
    for flag in FLAGS:
        for name in flag.names:
            assert re.search(rf"(^|[ ,]){re.escape(name)}\b", text), name
        next_groups = [p for p in positions if p > positions[GROUPS.index(flag.group)]]
        section = text[positions[GROUPS.index(flag.group)]:min(next_groups, default=len(text))]
        assert flag.name in section, (flag.name, flag.group)


def test_readme_table_is_the_flag_table() -> None:
    """The README's table of Kaniko flags is rendered from kanipy.cliflags."""
    readme = (REPO / "README.md").read_text()
    assert readme_table() in readme


def test_verbosity_choices_are_the_log_levels() -> None:
    assert set(BY_DEST["verbosity"].choices) == set(cli_module._VERBOSITY)


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize(("fmt", "tty", "no_color", "expected"), [
    (None, True, None, True),
    (None, True, "1", False),
    (None, True, "", True),
    (None, False, None, False),
    ("color", False, None, True),
    ("color", True, "1", False),
    ("color", False, "1", False),
    ("text", True, None, False),
    ("json", True, None, False),
], ids=["terminal", "NO_COLOR", "empty-NO_COLOR", "pipe", "color-asked-pipe",
        "color-asked-NO_COLOR", "color-asked-pipe-NO_COLOR", "text", "json"])
def test_colour_on_a_terminal_as_asked_and_never_with_no_color(
        fmt: str | None, tty: bool, no_color: str | None, expected: bool) -> None:
    # No --log-format: a terminal only. --log-format=color: even a log file, as
    # Kaniko's logrus ForceColors does. NO_COLOR wins over both.
    stream = _Tty() if tty else io.StringIO()
    env = {} if no_color is None else {"NO_COLOR": no_color}
    assert use_colour(fmt, stream, env) is expected


def test_log_timestamp_starts_every_line_with_utc_time(recorder: Recorder,
                                                       context: Path) -> None:
    result = run(context, "-d", DEST, "--log-timestamp", "--force=true")
    assert result.exit_code == 0, result.stderr
    lines = result.stderr.splitlines()
    assert lines
    for line in lines:
        assert re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ ", line), line


def test_reporter_lines_get_timestamps_too() -> None:
    stream = io.StringIO()
    ConsoleReporter(stream, timestamps=True).pushed("reg/app:1", "sha256:ab")
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ pushed reg/app:1@sha256:ab\n",
                        stream.getvalue())



def test_json_log_records_carry_typed_fields_given_as_extra() -> None:
    stream = io.StringIO()
    cli_module.configure_logging("info", "json", stream=stream)
    try:
        logging.getLogger("kanipy.test").warning(
            "--build-arg %s was not consumed", "X", extra={"fields": {"build_arg": "X",
                                                                     "msg": "not this"}})
    finally:
        cli_module.configure_logging("info", "text")
    record = json.loads(stream.getvalue())
    assert record["msg"] == "--build-arg X was not consumed"
    assert record["build_arg"] == "X" and record["level"] == "warning"
