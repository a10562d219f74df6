"""Handler rules on a real directory with a recording runner: what each instruction does.

Each test hands expanded instructions to their handlers as the stage loop does
(``recording.Steps``), with ``tmp_path/root`` as the image root; nothing runs
for real and nothing is pulled.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path, PurePosixPath

import pytest

from kanipy.errors import BuildError, DockerfileError
from kanipy.executor.handlers import HANDLERS
from kanipy.executor.runner import Mount, env_items
from kanipy.executor.step import StepError, StepKind
from kanipy.oci.config import ImageConfig, new_config
from kanipy.oci.descriptor import Platform
from tests.executor.recording import FixedRoots, RecordingRunner, Steps, stage_context
from tests.tools import unavailable

P = PurePosixPath


def needs_root() -> None:
    if os.geteuid() != 0:
        unavailable("setting file owners needs root")


def steps(text: str, tmp_path: Path, *, runner: RecordingRunner | None = None,
          roots: FixedRoots | None = None, secrets: dict[str, bytes] | None = None,
          build_args: dict[str, str] | None = None, config: ImageConfig | None = None,
          ignore: list[str] | None = None) -> Steps:
    """Run the last stage of ``text`` through its handlers; the Steps hold the results."""
    s = Steps.of(text, build_args=build_args, config=config)
    s.run(stage_context(tmp_path, s.plan, s.stage, runner=runner, roots=roots,
                        secrets=secrets, ignore=ignore))
    return s


def owner_mode(path: Path) -> tuple[int, int, int]:
    st = os.lstat(path)
    return st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)


# --- the table ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("keyword", "kind"),
    [("RUN", StepKind.TREE), ("COPY", StepKind.PATHS), ("ADD", StepKind.PATHS),
     ("WORKDIR", StepKind.PATHS), ("ENV", StepKind.METADATA), ("ARG", StepKind.METADATA),
     ("CMD", StepKind.METADATA), ("ONBUILD", StepKind.METADATA)],
    ids=lambda v: v if isinstance(v, str) else v.value,
)
def test_table_is_keyed_by_keyword_and_declares_the_step_kind(keyword: str,
                                                              kind: StepKind) -> None:
    assert HANDLERS[keyword].kind is kind
    assert HANDLERS[keyword].kind.snapshot_before == (kind is StepKind.TREE)
    assert "FROM" not in HANDLERS


# --- WORKDIR ------------------------------------------------------------------------------


def test_workdir_creates_missing_dirs_owned_by_user(tmp_path: Path) -> None:
    needs_root()
    s = steps("FROM scratch\nUSER app\nWORKDIR /srv/data\nWORKDIR logs\n", tmp_path)
    root = tmp_path / "root"
    assert owner_mode(root / "srv") == (1000, 1000, 0o755)
    assert owner_mode(root / "srv/data/logs") == (1000, 1000, 0o755)
    first, second = s.results[1], s.results[2]
    assert first.changed == {P("/srv"), P("/srv/data")}
    assert second.changed == {P("/srv/data/logs")}
    assert second.created_by == "WORKDIR /srv/data/logs"
    assert s.state.config.working_dir == "/srv/data/logs"


@pytest.mark.parametrize(
    ("user", "owner"),
    [("4242", (4242, 4242)), ("4242:77", (4242, 77)), ("4242:extra", (4242, 1001)),
     ("app:extra", (1000, 1001)), ("root", (0, 0)), ("app:5", (1000, 5))],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_workdir_owner_follows_buildkits_file_operations(tmp_path: Path, user: str,
                                                        owner: tuple[int, int]) -> None:
    # BuildKit's readUser: a numeric uid without a group takes the uid as gid, even
    # with no passwd entry (RUN would run as gid 0 there).
    needs_root()
    steps(f"FROM scratch\nUSER {user}\nWORKDIR /made\n", tmp_path)
    assert owner_mode(tmp_path / "root" / "made") == (*owner, 0o755)


def test_workdir_that_exists_changes_no_path(tmp_path: Path) -> None:
    s = steps("FROM scratch\nWORKDIR /etc\n", tmp_path)
    assert s.last.changed == frozenset()
    assert s.state.config.working_dir == "/etc"


@pytest.mark.parametrize(
    ("text", "message"),
    [("FROM scratch\nUSER nobody\nWORKDIR /x\n",
      "USER nobody: unable to find user nobody: no matching entries in passwd file"),
     ("FROM scratch\nWORKDIR /etc/passwd/x\n",
      "WORKDIR /etc/passwd/x: /etc/passwd exists in the image and is not a directory")],
    ids=["unknown-user", "through-a-file"],
)
def test_workdir_failures_carry_no_location(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(StepError) as info:
        steps(text, tmp_path)
    assert (info.value.message, info.value.kind) == (message, BuildError)


# --- config-only instructions ---------------------------------------------------------------


def test_env_replaces_in_place_and_is_seen_by_later_words(tmp_path: Path) -> None:
    config = new_config(Platform()).with_config(env=["PATH=/bin", "A=base"])
    s = steps("FROM scratch\nENV A=one B=$A\nENV PATH=/usr/bin:$PATH\nWORKDIR /$A\n",
              tmp_path, config=config)
    # All words of one ENV see the state from before it.
    assert s.state.config.env == ["PATH=/usr/bin:/bin", "A=one", "B=base"]
    assert s.state.config.working_dir == "/one"
    assert [r.created_by for r in s.results[:2]] == ["ENV A=one B=base",
                                                    "ENV PATH=/usr/bin:/bin"]
    assert all(r.changed == frozenset() for r in s.results[:2])


@pytest.mark.parametrize(
    ("text", "build_args", "args", "run_args"),
    [
        ("ARG A=1 B\n", {}, {"A": "1", "B": None}, {"A": "1"}),
        ("ARG A=1\n", {"A": "cli"}, {"A": "cli"}, {"A": "cli"}),
        ("ARG A=1\nARG C=$A-x\n", {}, {"A": "1", "C": "1-x"}, {"A": "1", "C": "1-x"}),
        ("ARG A=1\nENV A=env\n", {}, {"A": "1"}, {}),
        ("ARG X\n", {"HTTP_PROXY": "http://p"}, {"X": None}, {"HTTP_PROXY": "http://p"}),
    ],
    ids=["default-and-unset", "build-arg-wins", "arg-expands-arg", "env-shadows-arg",
         "proxy-without-arg-line"],
)
def test_arg_updates_the_state_never_the_image(
        tmp_path: Path, text: str, build_args: dict[str, str],
        args: dict[str, str | None], run_args: dict[str, str]) -> None:
    s = steps("FROM scratch\n" + text, tmp_path, build_args=build_args)
    assert dict(s.state.args) == args
    assert s.state.run_args() == run_args
    assert not any(item.startswith(("B=", "C=", "X=", "HTTP_PROXY="))
                   for item in s.state.config.env)
    arg_results = [r for r, ins in zip(s.results, s.stage.instructions, strict=True)
                   if ins.keyword == "ARG"]
    assert all(r.created_by is None and r.changed == frozenset() for r in arg_results)


def test_meta_arg_is_imported_by_a_bare_arg(tmp_path: Path) -> None:
    s = steps("ARG V=meta\nFROM scratch\nARG V\nWORKDIR /$V\n", tmp_path)
    assert s.state.args == {"V": "meta"}
    assert s.state.config.working_dir == "/meta"


def test_each_stage_starts_without_args(tmp_path: Path) -> None:
    s = steps("FROM scratch AS one\nARG A=1\nFROM scratch\nWORKDIR /x$A\n", tmp_path)
    assert s.state.args == {}
    assert s.state.config.working_dir == "/x"


@pytest.mark.parametrize(
    ("text", "cmd", "entrypoint"),
    [
        ("CMD run\n", ["/bin/sh", "-c", "run"], None),
        ('SHELL ["/bin/bash", "-e", "-c"]\nCMD run\n', ["/bin/bash", "-e", "-c", "run"], None),
        ('CMD ["a"]\nENTRYPOINT ["b"]\n', ["a"], ["b"]),
        ('ENTRYPOINT ["b"]\n', None, ["b"]),
        ('ENTRYPOINT ["b"]\nCMD ["a"]\n', ["a"], ["b"]),
    ],
    ids=["shell-form", "shell-form-after-shell", "entrypoint-keeps-this-stages-cmd",
         "entrypoint-clears-the-base-cmd", "cmd-after-entrypoint"],
)
def test_cmd_and_entrypoint(tmp_path: Path, text: str, cmd: list[str] | None,
                            entrypoint: list[str] | None) -> None:
    base = new_config(Platform()).with_config(cmd=["base-cmd"])
    s = steps("FROM scratch\n" + text, tmp_path, config=base)
    assert (s.state.config.cmd, s.state.config.entrypoint) == (cmd, entrypoint)


def test_user_is_stored_as_written(tmp_path: Path) -> None:
    s = steps("ARG U=app\nFROM scratch\nARG U\nUSER $U:extra\n", tmp_path)
    assert s.state.config.user == "app:extra"
    assert s.last.created_by == "USER app:extra"
    assert s.last.cache_inputs == {"instruction": "USER app:extra"}


# --- RUN -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("command", "argv"),
    [
        ("RUN make all", ["/bin/sh", "-c", "make all"]),
        ('RUN ["make", "all"]', ["make", "all"]),
        ('SHELL ["/bin/bash", "-c"]\nRUN make', ["/bin/bash", "-c", "make"]),
        ("RUN <<EOT\necho one\nEOT", ["/bin/sh", "-c", "echo one\n"]),
        ("RUN <<EOT\n#!/bin/bash\necho two\nEOT", ["/dev/pipes/EOT"]),
    ],
    ids=["shell", "exec", "shell-from-SHELL", "heredoc", "heredoc-script"],
)
def test_run_argv(tmp_path: Path, command: str, argv: list[str]) -> None:
    runner = RecordingRunner()
    steps(f"FROM scratch\n{command}\n", tmp_path, runner=runner)
    assert list(runner.specs[0].argv) == argv


def test_run_heredoc_script_is_mounted_while_the_step_runs(tmp_path: Path) -> None:
    seen: list[str] = []

    def read_script(spec: object) -> None:
        mount = runner.specs[0].extra_mounts[0]
        assert mount.source is not None
        seen.append(mount.source.read_text())

    runner = RecordingRunner(effect=read_script)
    steps("FROM scratch\nRUN <<EOT\n#!/bin/sh\necho hi\nEOT\n", tmp_path, runner=runner)
    mount = runner.specs[0].extra_mounts[0]
    assert (mount.target, mount.type, mount.readonly) == ("/dev/pipes/EOT", "bind", True)
    assert seen == ["#!/bin/sh\necho hi\n"]
    assert mount.source is not None and not mount.source.exists()  # scratch removed


def test_run_spec_env_user_and_workdir(tmp_path: Path) -> None:
    runner = RecordingRunner()
    s = steps("FROM scratch\nARG A=1\nARG UNSET\nENV E=2\nUSER app\nWORKDIR /w\n"
              "RUN make\n", tmp_path, runner=runner, build_args={"HTTPS_PROXY": "http://p"})
    spec = runner.specs[0]
    assert spec.root == tmp_path / "root"
    # ARGs first, the image Env over them, as the step sees them.
    assert dict(env_items(spec.env)) == {"HTTPS_PROXY": "http://p", "A": "1",
                              "PATH": new_config(Platform()).env[0].partition("=")[2],
                              "E": "2"}
    # The primary gid first, then the supplementary groups (BuildKit's AdditionalGids).
    assert (spec.uid, spec.gid, list(spec.groups), spec.workdir) == \
        (1000, 1000, [1000, 1001], "/w")
    assert spec.network == "default"
    assert s.last.created_by == "RUN |2 A=1 HTTPS_PROXY=http://p /bin/sh -c make # buildkit"
    assert s.last.changed is None
    assert s.last.state == s.results[-2].state  # RUN changes no config


def test_run_creates_a_missing_workdir(tmp_path: Path) -> None:
    config = new_config(Platform()).with_config(working_dir="/missing/dir")
    steps("FROM scratch\nRUN true\n", tmp_path, config=config)
    assert (tmp_path / "root" / "missing" / "dir").is_dir()


def test_run_reports_the_runners_mount_points_as_excluded(tmp_path: Path) -> None:
    runner = RecordingRunner(excluded=frozenset({P("/proc"), P("/cache")}), touch=("/made",))
    s = steps("FROM scratch\nRUN make\n", tmp_path, runner=runner)
    assert s.last.excluded == {P("/proc"), P("/cache")}
    assert (tmp_path / "root" / "made").exists()


def test_run_mounts(tmp_path: Path) -> None:
    (tmp_path / "context").mkdir()
    (tmp_path / "context" / "src").mkdir()
    seen: dict[str, tuple[int, int, int, bytes]] = {}

    def look(spec: object) -> None:
        for m in runner.specs[0].extra_mounts:
            if m.target == "/run/secrets/token":
                # In memory, for the runner: no file of kanipy's holds it.
                assert m.type == "secret" and m.source is None and m.data is not None
                seen["secret"] = (m.uid, m.gid, m.mode, m.data)

    runner = RecordingRunner(effect=look)
    s = steps(
        "FROM scratch\nWORKDIR /app\n"
        "RUN --mount=type=tmpfs,target=tmp --mount=type=cache,target=/root/.cache,id=pip "
        "--mount=type=bind,source=src,target=/src "
        "--mount=type=secret,id=token,env=TOKEN,target=/run/secrets/token make\n",
        tmp_path, runner=runner, secrets={"token": b"s3cret"})
    spec = runner.specs[0]
    by_target = {m.target: m for m in spec.extra_mounts}
    assert by_target["/app/tmp"] == Mount("/app/tmp", "tmpfs")
    cache = by_target["/root/.cache"]
    assert cache.source is not None and cache.source.parent == tmp_path / "run-cache"
    assert cache.source.name.startswith("pip-")
    assert by_target["/src"] == Mount("/src", "bind", tmp_path / "context" / "src", True)
    assert seen["secret"] == (0, 0, 0o400, b"s3cret")
    assert dict(env_items(spec.env))["TOKEN"] == "s3cret"
    # The cache-key inputs never hold a secret's value.
    assert "s3cret" not in repr(s.last.cache_inputs)
    assert s.last.cache_inputs["mounts"] == [
        "type=tmpfs,target=tmp", "type=cache,target=/root/.cache,id=pip",
        "type=bind,source=src,target=/src",
        "type=secret,id=token,env=TOKEN,target=/run/secrets/token"]


def test_run_cache_inputs(tmp_path: Path) -> None:
    s = steps("FROM scratch\nARG A=1\nUSER app\nRUN --network=none make\n", tmp_path)
    assert s.last.cache_inputs == {
        "argv": ["/bin/sh", "-c", "make"],
        "env": ["A=1", s.state.config.env[0]],
        "user": "app", "workdir": "/", "shell": ["/bin/sh", "-c"], "network": "none",
        "mounts": [], "heredocs": [],
    }


@pytest.mark.parametrize(
    ("text", "runner", "message", "kind"),
    [
        ("RUN false", RecordingRunner(status=3),
         "RUN /bin/sh -c false did not complete successfully: exit code 3", BuildError),
        ("RUN --security=insecure true", None,
         "RUN --security=insecure is not supported by kanipy (steps always run with the "
         "default confinement)", DockerfileError),
        ("RUN --mount=type=secret,id=s,required=true true", None,
         "secret 's' is required but was not given; pass --secret id=s,src=FILE or "
         "--secret id=s,env=VARIABLE", BuildError),
        ("RUN --mount=type=bind,source=nope,target=/m true", None,
         "RUN --mount=type=bind: source nope not found", BuildError),
        ("RUN --mount=type=bind,source=../..,target=/m true", None,
         "RUN --mount source '../..' leaves the context", DockerfileError),
        ("USER nobody\nRUN true", None,
         "USER nobody: unable to find user nobody: no matching entries in passwd file",
         BuildError),
    ],
    ids=["exit-status", "security", "secret-required", "bind-missing", "bind-outside",
         "unknown-user"],
)
def test_run_failures_carry_no_location(tmp_path: Path, text: str,
                                        runner: RecordingRunner | None, message: str,
                                        kind: type) -> None:
    with pytest.raises(StepError) as info:
        steps(f"FROM scratch\n{text}\n", tmp_path, runner=runner)
    assert (info.value.message, info.value.kind) == (message, kind)


# --- COPY / ADD ----------------------------------------------------------------------------


def make_context(tmp_path: Path) -> Path:
    context = tmp_path / "context"
    (context / "dir" / "sub").mkdir(parents=True)
    (context / "dir" / "a.txt").write_text("a")
    (context / "dir" / "sub" / "b.txt").write_text("b")
    (context / "one.txt").write_text("1")
    return context


def test_copy_files_with_chown_and_chmod(tmp_path: Path) -> None:
    needs_root()
    make_context(tmp_path)
    s = steps("FROM scratch\nWORKDIR /app\nCOPY --chown=app:extra --chmod=640 one.txt dir/ ./\n",
              tmp_path)
    root = tmp_path / "root"
    assert owner_mode(root / "app" / "one.txt") == (1000, 1001, 0o640)
    assert owner_mode(root / "app" / "a.txt") == (1000, 1001, 0o640)
    assert owner_mode(root / "app" / "sub") == (1000, 1001, 0o640)
    assert s.last.changed == {P("/app/one.txt"), P("/app/a.txt"), P("/app/sub")}
    assert s.last.created_by == \
        "COPY --chown=app:extra --chmod=640 one.txt dir/ ./ # buildkit"


def test_copy_without_chown_is_root_owned_and_makes_dest_dirs(tmp_path: Path) -> None:
    make_context(tmp_path)
    s = steps("FROM scratch\nCOPY one.txt /new/dir/\n", tmp_path)
    root = tmp_path / "root"
    assert owner_mode(root / "new" / "dir" / "one.txt")[:2] == (0, 0)
    assert owner_mode(root / "new")[2] == 0o755
    assert s.last.changed == {P("/new"), P("/new/dir"), P("/new/dir/one.txt")}


def test_copy_of_a_wildcard_matching_nothing_copies_nothing(tmp_path: Path) -> None:
    # BuildKit (AllowEmptyWildcard): no error, nothing copied, the destination not made.
    make_context(tmp_path)
    s = steps("FROM scratch\nCOPY none*.txt dir/nope? /empty/\n"
              "COPY one.txt none*.txt /some/\n", tmp_path)
    root = tmp_path / "root"
    assert s.results[0].changed == frozenset()
    assert not (root / "empty").exists()
    assert s.last.changed == {P("/some"), P("/some/one.txt")}


def test_copy_cache_inputs_are_the_expanded_instruction(tmp_path: Path) -> None:
    make_context(tmp_path)
    s = steps("FROM scratch\nARG F=one.txt\nCOPY --chmod=600 $F /d/\n", tmp_path)
    assert s.last.cache_inputs == {
        "keyword": "COPY", "sources": ["one.txt"], "dest": "/d/", "workdir": "/",
        "from": None, "chown": None, "chmod": "600", "link": False, "parents": False,
        "excludes": [], "heredocs": [],
    }


def test_copy_from_reads_stage_and_image_roots(tmp_path: Path) -> None:
    built = tmp_path / "stage0"
    (built / "out").mkdir(parents=True)
    (built / "out" / "bin").write_text("built")
    image = tmp_path / "image"
    image.mkdir()
    (image / "tool").write_text("pulled")
    roots = FixedRoots(stages={0: built}, images={"example.com/tools:1": image})
    steps("FROM scratch AS build\nFROM scratch\nCOPY --from=build /out/bin /bin/\n"
          "COPY --from=example.com/tools:1 /tool /bin/\n", tmp_path, roots=roots)
    assert (tmp_path / "root" / "bin" / "bin").read_text() == "built"
    assert (tmp_path / "root" / "bin" / "tool").read_text() == "pulled"
    assert roots.asked == ["example.com/tools:1"]


def test_copy_from_a_stage_not_built_names_it(tmp_path: Path) -> None:
    with pytest.raises(BuildError, match=r"^--from=0: stage build was not built$"):
        steps("FROM scratch AS build\nFROM scratch\nCOPY --from=0 /x /y\n", tmp_path)


@pytest.mark.parametrize(
    ("text", "message", "kind"),
    [
        ("COPY nothere /x", "COPY failed: 'nothere' not found in the build context",
         BuildError),
        ("COPY one.txt dir /x",
         "When using COPY with more than one source file, the destination must be a "
         "directory and end with a / (got '/x')", DockerfileError),
        ("COPY --chown=nobody one.txt /x",
         "--chown=nobody: unable to find user nobody: no matching entries in passwd file",
         BuildError),
        ("COPY dir/ /etc/passwd",
         "COPY failed: cannot copy the directory 'dir' to /etc/passwd: it exists in the image "
         "and is not a directory", BuildError),
        ("COPY one.txt /etc/passwd/x/",
         "/etc/passwd exists in the image and is not a directory", BuildError),
        ("ADD --checksum=sha256:00 one.txt /x",
         "ADD --checksum needs exactly one http(s) URL source", DockerfileError),
        ("COPY --chown=\u00b2 one.txt /x",
         "--chown=\u00b2: unable to find user \u00b2: no matching entries in passwd file",
         BuildError),
        ("COPY --exclude=[abc one.txt /x",
         "--exclude: invalid pattern '[abc': unterminated [ (a character class needs its "
         "closing ])", DockerfileError),
    ],
    ids=["missing", "several-to-file", "unknown-owner", "dir-onto-file", "parent-is-file",
         "checksum-without-url", "chown-non-ascii-digit", "exclude-unterminated-class"],
)
def test_copy_failures_carry_no_location(tmp_path: Path, text: str, message: str,
                                         kind: type) -> None:
    make_context(tmp_path)
    with pytest.raises(StepError) as info:
        steps(f"FROM scratch\n{text}\n", tmp_path)
    assert (info.value.message, info.value.kind) == (message, kind)


def test_step_error_located_keeps_class_and_message() -> None:
    build = StepError("RUN x did not complete successfully: exit code 1").located("Df", 7)
    assert type(build) is BuildError and build.exit_code == 1
    assert str(build) == "Df:7: RUN x did not complete successfully: exit code 1"
    bad = StepError("RUN --mount needs target=", DockerfileError).located("Df", 3)
    assert isinstance(bad, DockerfileError) and bad.exit_code == 3
    assert (str(bad), bad.line, bad.reason) == ("Df:3: RUN --mount needs target=", 3,
                                                "RUN --mount needs target=")


@pytest.mark.parametrize("pattern", ["link*", "link1"], ids=["wildcard", "named"])
def test_copy_of_a_link_leading_out_of_the_context_names_it(tmp_path: Path,
                                                            pattern: str) -> None:
    # Followed inside the context (as BuildKit's rootPath does), /etc/passwd is not
    # there: an error naming the link, never a traceback (issue 11).
    (tmp_path / "context").mkdir()
    (tmp_path / "context" / "link1").symlink_to("/etc/passwd")
    with pytest.raises(StepError) as info:
        steps(f"FROM scratch\nCOPY {pattern} /x/\n", tmp_path)
    assert "'link1' not found in the build context (it is a symbolic link whose target " \
           "is not in the source)" in info.value.message
    assert not (tmp_path / "root" / "x" / "link1").exists()


def test_copy_of_a_large_tree_keeps_every_entrys_metadata(tmp_path: Path) -> None:
    """Every entry of a copied tree ends up with its source's bytes, mode, link target
    and mtime, directories included: a directory's metadata is set after everything
    under it is written (nested directories with their own modes and times)."""
    needs_root()
    context = tmp_path / "context"
    expected: dict[str, tuple[int, int, bytes | str]] = {}
    for d in range(6):
        sub = context / "tree" / f"d{d}" / "inner"
        sub.mkdir(parents=True)
        for i in range(120):
            path = sub.parent / f"f{i}" if i % 2 else sub / f"f{i}"
            path.write_bytes(b"x" * i + bytes([d]))
            os.chmod(path, 0o600 + i % 8)
            os.utime(path, ns=(0, 1_000_000_000 * (i + 1)))
        os.symlink(f"../f{d}", sub / "link")
        os.utime(sub / "link", ns=(0, 7_000_000_000), follow_symlinks=False)
    for dirpath, dirnames, _files in os.walk(context / "tree"):
        for name in dirnames:
            os.chmod(Path(dirpath) / name, 0o750)
    for dirpath, dirnames, filenames in os.walk(context / "tree", topdown=False):
        for name in [*filenames, *dirnames]:
            path = Path(dirpath) / name
            rel = str(path.relative_to(context / "tree"))
            st = os.lstat(path)
            content: bytes | str = os.readlink(path) if path.is_symlink() else \
                b"" if path.is_dir() else path.read_bytes()
            expected[rel] = (st.st_mode, st.st_mtime_ns, content)
        os.utime(dirpath, ns=(0, 3_000_000_000))  # after its entries: theirs is set
    for rel in list(expected):
        path = context / "tree" / rel
        if path.is_dir() and not path.is_symlink():
            st = os.lstat(path)
            expected[rel] = (st.st_mode, st.st_mtime_ns, b"")
    steps("FROM scratch\nCOPY tree/ /dst/\n", tmp_path)
    dst = tmp_path / "root" / "dst"
    found: dict[str, tuple[int, int, bytes | str]] = {}
    for dirpath, dirnames, filenames in os.walk(dst):
        for name in [*filenames, *dirnames]:
            path = Path(dirpath) / name
            st = os.lstat(path)
            content = os.readlink(path) if path.is_symlink() else \
                b"" if path.is_dir() else path.read_bytes()
            found[str(path.relative_to(dst))] = (st.st_mode, st.st_mtime_ns, content)
    assert len(found) == len(expected) == 6 * (120 + 2 + 1)
    assert found == expected
