"""Syntax: instruction boundaries, heredocs, flags, forms and typed instructions
(Dockerfile reference and BuildKit's frontend/dockerfile/parser behaviour)."""

from __future__ import annotations

import io

import pytest
from dockerfile_parse import DockerfileParser

from kanipy.dockerfile import (
    Add,
    Arg,
    Cmd,
    Copy,
    Env,
    Expose,
    From,
    Healthcheck,
    Label,
    Onbuild,
    Run,
    Shell,
    Volume,
    parse_dockerfile,
    parse_instructions,
)
from kanipy.errors import DockerfileError


def one(text: str) -> object:
    parsed = parse_dockerfile("FROM scratch\n" + text)
    assert len(parsed.instructions) == 2, parsed.instructions
    return parsed.instructions[1]


def test_empty_line_and_comment_inside_continuation_do_not_end_it() -> None:
    # Reference, "Format": comment lines are removed before the instruction is run;
    # BuildKit skips empty continuation lines (with a deprecation warning).
    ins = one("RUN echo a \\\n\n  # a comment\n  b\n")
    assert isinstance(ins, Run)
    assert ins.command.args == ("echo a   b",)
    assert ins.line == 2


def test_line_numbers_and_original_text() -> None:
    parsed = parse_dockerfile("# c\n\nFROM alpine\n\nRUN a \\\n  b\nCMD x\n")
    assert [(i.line, i.original) for i in parsed.instructions] == [
        (3, "FROM alpine"), (5, "RUN a   b"), (7, "CMD x")]


def test_escape_directive_backtick() -> None:
    parsed = parse_dockerfile("# escape=`\nFROM w\nCOPY a.txt c:\\\nRUN dir `\n  c:\\\n")
    assert parsed.escape == "`"
    copy, run = parsed.instructions[1:]
    assert isinstance(copy, Copy) and copy.dest == "c:\\"
    assert isinstance(run, Run) and run.command.args == ("dir   c:\\",)


def test_directive_only_at_top() -> None:
    parsed = parse_dockerfile("FROM x\n# escape=`\nRUN a \\\n b\n")
    assert parsed.escape == "\\"


HEREDOC_CASES = [
    ("basic", "RUN <<EOF\necho hi\nEOF\n", [("EOF", "echo hi\n", True, False)]),
    ("chomp", "RUN <<-EOF\n\techo hi\n\tEOF\n", [("EOF", "\techo hi\n", True, True)]),
    ("quoted-no-expand", "RUN <<'EOF'\necho $x\nEOF\n", [("EOF", "echo $x\n", False, False)]),
    ("double-quoted", 'RUN <<"EOF"\nx\nEOF\n', [("EOF", "x\n", False, False)]),
    ("two-heredocs", "RUN cat <<A >a <<B >b\n1\nA\n2\nB\n",
     [("A", "1\n", True, False), ("B", "2\n", True, False)]),
    ("after-continuation", "RUN python3 \\\n  <<EOF\nprint(1)\nEOF\n",
     [("EOF", "print(1)\n", True, False)]),
    ("instruction-words-in-body", "RUN <<EOF\nFROM x\nRUN y\nEOF\n",
     [("EOF", "FROM x\nRUN y\n", True, False)]),
]


@pytest.mark.parametrize(("text", "docs"), [c[1:] for c in HEREDOC_CASES],
                         ids=[c[0] for c in HEREDOC_CASES])
def test_heredocs(text: str, docs: list[tuple[str, str, bool, bool]]) -> None:
    ins = one(text)
    assert isinstance(ins, Run)
    assert [(d.name, d.content, d.expand, d.chomp) for d in ins.heredocs] == docs


def test_run_heredoc_scripts_follow_buildkit() -> None:
    # BuildKit dispatchRun: a lone heredoc is the script; otherwise the shell gets it all.
    lone = one("RUN <<-EOF\n\techo hi\nEOF\n")
    assert isinstance(lone, Run) and lone.shell_script() == "echo hi\n"
    assert lone.heredoc_executable() is None
    shebang = one("RUN <<EOF\n#!/usr/bin/env python3\nprint(1)\nEOF\n")
    assert isinstance(shebang, Run) and shebang.heredoc_executable() is not None
    full = one("RUN cat <<EOF > /f\nhello\nEOF\n")
    assert isinstance(full, Run) and full.shell_script() == "cat <<EOF > /f\nhello\nEOF"


def test_copy_heredoc_source() -> None:
    ins = one("COPY --chmod=755 <<EOF /entrypoint.sh\n#!/bin/sh\nEOF\n")
    assert isinstance(ins, Copy)
    assert ins.sources == () and ins.dest == "/entrypoint.sh"
    assert ins.heredocs[0].content == "#!/bin/sh\n" and ins.chmod == "755"


def test_heredoc_bodies_are_not_instructions() -> None:
    parsed = parse_dockerfile("FROM a\nRUN <<EOF\nFROM x\nEOF\nCOPY <<A <<B /d/\n1\nA\n2\nB\n")
    assert [i.keyword for i in parsed.instructions] == ["FROM", "RUN", "COPY"]


FORM_CASES = [
    ("exec", 'CMD ["a", "b c"]', ("a", "b c"), True),
    ("shell", "CMD a b", ("a b",), False),
    ("invalid-json-is-shell", "CMD [a, b]", ("[a, b]",), False),
    ("json-unterminated-is-shell", 'CMD ["a"', ('["a"',), False),
]


@pytest.mark.parametrize(("text", "args", "exec_form"), [c[1:] for c in FORM_CASES],
                         ids=[c[0] for c in FORM_CASES])
def test_exec_and_shell_forms(text: str, args: tuple[str, ...], exec_form: bool) -> None:
    ins = one(text)
    assert isinstance(ins, Cmd)
    assert ins.command.args == args and ins.command.exec_form is exec_form


def test_typed_instructions() -> None:
    parsed = parse_dockerfile(
        "FROM --platform=$BUILDPLATFORM golang:1.22 AS Build\n"
        "ENV A=1 B=\"two words\"\n"
        "ENV LEGACY some value\n"
        'ARG X Y=1 A="a b"\n'
        'LABEL "com.x"="y" z=1\n'
        "EXPOSE 80 443/tcp 8000-8002/udp\n"
        'VOLUME ["/a", "/b"]\n'
        "VOLUME /c /d\n"
        'SHELL ["/bin/bash", "-c"]\n'
        "ADD --checksum=sha256:abc --keep-git-dir --unpack=false --exclude=*.o git@x:y /src\n"
        "COPY --from=build --chown=1:2 --chmod=u+x,g-w --link --parents --exclude=a --exclude=b "
        "x y /dst/\n"
        "HEALTHCHECK --interval=5m --timeout=3s --start-period=1s --start-interval=500ms "
        "--retries=3 CMD curl -f http://localhost/\n"
        "HEALTHCHECK NONE\n"
        "ONBUILD COPY --from=build --chmod=644 a b\n"
    )
    frm, env, legacy, arg, label, expose, vol1, vol2, shell, add, copy, hc, hcn, onb = (
        parsed.instructions)
    assert isinstance(frm, From)
    assert (frm.image, frm.name, frm.platform) == ("golang:1.22", "build", "$BUILDPLATFORM")
    assert isinstance(env, Env) and env.pairs == (("A", "1"), ("B", '"two words"'))
    assert isinstance(legacy, Env) and legacy.pairs == (("LEGACY", "some value"),)
    assert isinstance(arg, Arg) and arg.pairs == (("X", None), ("Y", "1"), ("A", '"a b"'))
    assert isinstance(label, Label) and label.pairs == (('"com.x"', '"y"'), ("z", "1"))
    assert isinstance(expose, Expose)
    assert expose.exposed_ports() == ["80/tcp", "443/tcp", "8000/udp", "8001/udp", "8002/udp"]
    assert isinstance(vol1, Volume) and vol1.paths == ("/a", "/b")
    assert isinstance(vol2, Volume) and vol2.paths == ("/c", "/d")
    assert isinstance(shell, Shell) and shell.args == ("/bin/bash", "-c")
    assert isinstance(add, Add)
    assert (add.checksum, add.keep_git_dir, add.unpack, add.excludes) == (
        "sha256:abc", True, False, ("*.o",))
    assert isinstance(copy, Copy)
    assert (copy.from_, copy.chown, copy.chmod, copy.link, copy.parents, copy.excludes,
            copy.sources, copy.dest) == ("build", "1:2", "u+x,g-w", True, True, ("a", "b"),
                                          ("x", "y"), "/dst/")
    assert isinstance(hc, Healthcheck)
    assert hc.test == ("CMD-SHELL", "curl -f http://localhost/")
    assert (hc.interval, hc.timeout, hc.start_period, hc.start_interval, hc.retries) == (
        300 * 10**9, 3 * 10**9, 10**9, 5 * 10**8, 3)
    assert isinstance(hcn, Healthcheck) and hcn.test == ("NONE",)
    assert isinstance(onb, Onbuild) and onb.expression == "COPY --from=build --chmod=644 a b"
    assert isinstance(onb.trigger, Copy) and onb.trigger.chmod == "644"


MOUNT_CASES = [
    ("cache", "type=cache,target=/root/.cache,sharing=locked,id=pip",
     {"type": "cache", "target": "/root/.cache", "sharing": "locked", "id": "pip",
      "mode": 0o755, "readonly": False}),
    ("bind-default-ro", "type=bind,source=.,target=/src,from=build",
     {"type": "bind", "readonly": True, "source": ".", "from_": "build"}),
    ("bind-rw", "type=bind,target=/src,rw", {"readonly": False}),
    ("secret-default-target", "type=secret,id=npmrc,required",
     {"target": "/run/secrets/npmrc", "required": True, "mode": 0o400}),
    ("ssh-default-id", "type=ssh", {"id": "default", "mode": 0o600}),
    ("tmpfs", "type=tmpfs,target=/tmp,size=64m", {"size": "64m"}),
    ("default-type-bind", "target=/x", {"type": "bind"}),
    ("uid-gid-mode", "type=cache,target=/c,uid=1000,gid=1000,mode=0700",
     {"uid": 1000, "gid": 1000, "mode": 0o700}),
]


@pytest.mark.parametrize(("spec", "expected"), [c[1:] for c in MOUNT_CASES],
                         ids=[c[0] for c in MOUNT_CASES])
def test_run_mounts(spec: str, expected: dict[str, object]) -> None:
    ins = one(f"RUN --mount={spec} --network=none --security=sandbox make")
    assert isinstance(ins, Run)
    mount = ins.mounts[0]
    for key, value in expected.items():
        assert getattr(mount, key) == value, key
    assert ins.network == "none" and ins.security == "sandbox"


ERROR_CASES = [
    ("unknown-instruction", "FROM a\nFOO bar\n", 2, "unknown instruction: FOO"),
    ("from-args", "FROM a b\n", 1, "FROM requires either one or three arguments"),
    ("bad-stage-name", "FROM a AS 1x\n", 1, "invalid name for build stage"),
    ("run-no-args", "FROM a\nRUN\n", 2, "RUN requires at least one argument"),
    ("workdir-no-args", "FROM a\nWORKDIR\n", 2, "WORKDIR requires exactly one argument"),
    ("copy-one-arg", "FROM a\nCOPY a\n", 2, "COPY requires at least two arguments"),
    ("unknown-flag", "FROM a\nCOPY --frm=x a b\n", 2, "unknown flag: --frm"),
    ("flag-on-cmd", "FROM a\nCMD --version\n", 2, "unknown flag: --version"),
    ("add-from-rejected", "FROM a\nADD --from=x a b\n", 2, "unknown flag: --from"),
    ("dup-flag", "FROM a\nCOPY --chown=1 --chown=2 a b\n", 2, "duplicate flag"),
    ("bool-flag-value", "FROM a\nCOPY --link=maybe a b\n", 2, "expecting boolean"),
    ("missing-value", "FROM a\nCOPY --from a b\n", 2, "missing a value on flag: --from"),
    ("bad-chmod", "FROM a\nCOPY --chmod=999 a b\n", 2, "invalid --chmod"),
    ("bad-mount-key", "FROM a\nRUN --mount=type=cache,targt=/x a\n", 2, "unexpected key"),
    ("bad-mount-type", "FROM a\nRUN --mount=type=nfs,target=/x a\n", 2, "unsupported mount"),
    ("bad-network", "FROM a\nRUN --network=bridge a\n", 2, "unsupported --network"),
    ("unterminated-heredoc", "FROM a\nRUN <<EOF\necho\n", 2, "unterminated heredoc"),
    ("env-no-equals", "FROM a\nENV A=1 B\n", 2, "can't find ="),
    ("env-legacy-one-word", "FROM a\nENV A\n", 2, "ENV must have two arguments"),
    ("shell-not-json", "FROM a\nSHELL /bin/sh -c\n", 2, "JSON form"),
    ("json-non-strings", "FROM a\nCMD [1, 2]\n", 2, "comprised of strings"),
    ("onbuild-onbuild", "FROM a\nONBUILD ONBUILD RUN x\n", 2, "ONBUILD isn't allowed"),
    ("onbuild-from", "FROM a\nONBUILD FROM x\n", 2, "FROM isn't allowed"),
    ("onbuild-maintainer", "FROM a\nONBUILD MAINTAINER me\n", 2, "MAINTAINER isn't allowed"),
    ("healthcheck-type", "FROM a\nHEALTHCHECK RUN x\n", 2, "unknown type"),
    ("healthcheck-duration", "FROM a\nHEALTHCHECK --interval=5 CMD x\n", 2, "invalid duration"),
    ("healthcheck-retries", "FROM a\nHEALTHCHECK --retries=-1 CMD x\n", 2, "cannot be negative"),
    ("expose-proto", "FROM a\nEXPOSE 80/http\n", 2, "invalid protocol"),
    ("bad-escape", "# escape=x\nFROM a\n", 1, "invalid escape token"),
]


@pytest.mark.parametrize(("text", "line", "message"), [c[1:] for c in ERROR_CASES],
                         ids=[c[0] for c in ERROR_CASES])
def test_errors_name_file_and_line(text: str, line: int, message: str) -> None:
    with pytest.raises(DockerfileError) as info:
        parse_dockerfile(text, "app/Dockerfile")
    err = info.value
    assert err.exit_code == 3
    assert err.line == line
    assert str(err).startswith(f"app/Dockerfile:{line}: ")
    assert message in str(err)


def test_onbuild_triggers_from_config() -> None:
    ins = parse_instructions(["RUN echo hi", "COPY --chown=1 a /b"], "Dockerfile", line=1)
    assert [i.keyword for i in ins] == ["RUN", "COPY"]
    with pytest.raises(DockerfileError, match="isn't allowed"):
        parse_instructions(["FROM x"], line=4)


PLAIN = """\
# a comment
FROM alpine:3.19 AS base
ENV A=1 \\
    B=2
RUN apk add --no-cache \\
      curl \\
      git
# another
COPY . /src
WORKDIR /src
CMD ["sh"]
"""


def test_boundaries_agree_with_dockerfile_parse_on_plain_files() -> None:
    # dockerfile-parse is the reference for boundaries where its rules and BuildKit's agree.
    theirs = DockerfileParser(fileobj=io.BytesIO(PLAIN.encode())).structure
    theirs = [s for s in theirs if s["instruction"] != "COMMENT"]
    ours = parse_dockerfile(PLAIN).instructions
    assert [(s["instruction"], s["startline"] + 1) for s in theirs] == [
        (i.keyword, i.line) for i in ours]
