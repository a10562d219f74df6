"""ARG/ENV scoping, expansion per instruction, stage planning and the dry-run view
(Dockerfile reference: "ARG", "Understand how ARG and FROM interact", "Predefined ARGs",
"Automatic platform ARGs in the global scope", "Environment replacement", "ENV")."""

from __future__ import annotations

import pytest

from kanipy.dockerfile import (
    Arg,
    Copy,
    Env,
    Expose,
    Run,
    StageRef,
    StageScope,
    Workdir,
    format_plan,
    plan_build,
)
from kanipy.errors import DockerfileError
from kanipy.oci.descriptor import Platform

AMD64 = Platform("linux", "amd64")
ARM = Platform("linux", "arm", "v7")


def plan(text: str, **kw: object):  # type: ignore[no-untyped-def]
    kw.setdefault("build_args", {})
    kw.setdefault("target", None)
    kw.setdefault("target_platform", ARM)
    kw.setdefault("build_platform", AMD64)
    return plan_build(text, **kw)  # type: ignore[arg-type]


def resolve_all(text: str, base_env: list[str] | None = None, **kw: object):  # type: ignore[no-untyped-def]
    p = plan(text, **kw)
    stage = p.stages[-1]
    scope = StageScope(p, stage, base_env or [])
    return scope, [scope.resolve(i) for i in stage.instructions]


def test_heading_args_only_for_from_until_imported() -> None:
    scope, (w1, arg, w2) = resolve_all(
        "ARG VERSION=3.19\nFROM alpine:$VERSION\nWORKDIR /v$VERSION\nARG VERSION\n"
        "WORKDIR /v$VERSION\n")
    assert scope.stage.base == "alpine:3.19"
    assert isinstance(w1, Workdir) and w1.path == "/v"
    assert isinstance(w2, Workdir) and w2.path == "/v3.19"


def test_build_arg_overrides_heading_default_and_stage_default() -> None:
    scope, (a, b) = resolve_all("ARG V=1\nFROM x:$V\nARG V\nARG W=d\n",
                                build_args={"V": "2", "W": "3"})
    assert scope.stage.base == "x:2"
    assert isinstance(a, Arg) and a.pairs == (("V", "2"),)
    assert isinstance(b, Arg) and b.pairs == (("W", "3"),)


@pytest.mark.parametrize(("dockerfile", "expected"), [
    ('ARG A="a b"\n', "a b"),
    ("ARG A='$X'\n", "$X"),
    ('ARG A="x\\"y"\n', 'x"y'),
    ("ARG X=1\nARG A=${X}2\n", "12"),
    ("ARG A=${NOPE:-d}\n", "d"),
], ids=["double-quoted-with-space", "single-quoted-literal", "escaped-quote",
        "refers-to-earlier-arg", "default-of-unset"])
def test_quotes_and_references_in_arg_defaults(dockerfile: str, expected: str) -> None:
    scope, _ = resolve_all("FROM x\n" + dockerfile + "WORKDIR /\n")
    assert scope.expansion_env()["A"] == expected


def test_env_values_frozen_for_the_instruction() -> None:
    # Reference, "Environment replacement": ENV abc=bye def=$abc gives def the old abc.
    scope, (e1, e2) = resolve_all("FROM x\nENV A=hello\nENV A=bye B=$A\n")
    assert isinstance(e2, Env) and e2.pairs == (("A", "bye"), ("B", "hello"))
    assert scope.env == {"A": "bye", "B": "hello"}


def test_env_wins_over_arg_and_args_never_reach_image_env() -> None:
    scope, (_a, _e, w) = resolve_all("FROM x\nARG A=arg\nENV A=env\nWORKDIR /$A\n",
                                     base_env=["PATH=/bin"])
    assert isinstance(w, Workdir) and w.path == "/env"
    scope2, _ = resolve_all("FROM x\nARG B=1\nRUN env\n", base_env=["PATH=/bin"])
    assert scope2.image_env() == ["PATH=/bin"]
    assert scope2.run_environment() == {"B": "1"}


def test_base_env_is_used_for_expansion() -> None:
    _, (w,) = resolve_all("FROM x\nWORKDIR $HOME/app\n", base_env=["HOME=/home/me"])
    assert isinstance(w, Workdir) and w.path == "/home/me/app"


def test_platform_args_global_and_imported() -> None:
    scope, (arg, w) = resolve_all(
        "FROM --platform=$BUILDPLATFORM golang AS b\nARG TARGETARCH\n"
        "WORKDIR /$TARGETOS/$TARGETARCH/$TARGETVARIANT\n")
    assert scope.stage.platform == "linux/amd64"
    assert isinstance(arg, Arg) and arg.pairs == (("TARGETARCH", "arm"),)
    # TARGETOS was not imported into the stage, so it is empty here.
    assert isinstance(w, Workdir) and w.path == "//arm/"
    scope2, _ = resolve_all("FROM x\nARG TARGETPLATFORM BUILDPLATFORM\n")
    assert scope2.expansion_env()["TARGETPLATFORM"] == "linux/arm/v7"
    assert scope2.expansion_env()["BUILDPLATFORM"] == "linux/amd64"


def test_proxy_args_reach_run_without_declaration_and_are_not_unused() -> None:
    scope, _ = resolve_all("FROM x\nRUN curl x\n",
                           build_args={"HTTP_PROXY": "http://p", "FOO": "1",
                                       "SOURCE_DATE_EPOCH": "0"})
    assert scope.run_environment() == {"HTTP_PROXY": "http://p"}
    assert scope.plan.unused_build_args == ["FOO"]
    assert "HTTP_PROXY" not in scope.image_env()


def test_expansion_per_instruction_kind() -> None:
    _, ins = resolve_all(
        "FROM x\nARG D=/dst P=8080 M=u+x\n"
        'RUN echo $D && ["not", "$D"]\n'
        'CMD ["$D"]\n'
        "COPY --chmod=$M --from=img:$P $D/a ${D}/b\n"
        "EXPOSE $P/udp\n"
        "RUN --mount=type=cache,target=$D/cache make $D\n"
        "COPY <<EOF <<'RAW' /x\n$D \"q\"\nEOF\n$D\nRAW\n")
    _, run, cmd, copy, expose, run2, heredoc_copy = ins
    assert isinstance(run, Run) and run.command.args == ('echo $D && ["not", "$D"]',)
    assert cmd.command.args == ("$D",)  # type: ignore[attr-defined]
    assert isinstance(copy, Copy)
    assert (copy.chmod, copy.from_, copy.sources, copy.dest) == (
        "u+x", "img:8080", ("/dst/a",), "/dst/b")
    assert isinstance(expose, Expose) and expose.exposed_ports() == ["8080/udp"]
    assert isinstance(run2, Run) and run2.mounts[0].target == "/dst/cache"
    assert run2.command.args == ("make $D",)
    assert isinstance(heredoc_copy, Copy)
    assert [d.content for d in heredoc_copy.heredocs] == ['/dst "q"\n', "$D\n"]


def test_required_variable_error_has_line() -> None:
    p = plan("FROM x\nWORKDIR ${DIR:?set DIR}\n")
    scope = StageScope(p, p.stages[0], [])
    with pytest.raises(DockerfileError) as info:
        scope.resolve(p.stages[0].instructions[0])
    assert str(info.value) == "Dockerfile:2: DIR: set DIR"
    assert info.value.exit_code == 3


MULTI = """\
FROM golang AS Build
RUN make
FROM alpine AS tools
FROM debian AS unused
FROM build AS test
COPY --from=TOOLS /t /t
RUN --mount=type=bind,from=0,target=/src go test
FROM scratch
COPY --from=test /out /
COPY --from=nginx:1.25 /etc/nginx /etc/nginx
"""


def test_plan_keeps_needed_stages_in_dependency_order() -> None:
    p = plan(MULTI)
    assert [s.index for s in p.stages] == [0, 1, 3, 4]
    test = p.stage("TEST")
    assert test.base == StageRef(0) and sorted(test.depends_on) == [0, 1]
    final = p.stages[-1]
    assert final.base == "scratch" and final.depends_on == [3]
    assert final.images == ["nginx:1.25"]


def test_target_selects_and_prunes() -> None:
    p = plan(MULTI, target="Tools")
    assert [s.name for s in p.stages] == ["tools"]


@pytest.mark.parametrize(("dockerfile", "kw", "message"), [
    ("FROM a AS x\nFROM b AS X\n", {}, "Dockerfile:2: duplicate stage name 'x'"),
    ("FROM a\nCOPY --from=later /a /b\nFROM b AS later\n", {}, "Dockerfile:2: --from later:"
     " that stage is defined later"),
    ("FROM a\nCOPY --from=5 /a /b\n", {}, "Dockerfile:2: --from=5: there is no stage 5"),
    ("FROM a AS s\nCOPY --from=s /a /b\n", {}, "cannot use itself"),
    ("FROM a\n", {"target": "nope"}, "target stage 'nope' could not be found"),
    ("ARG B\nFROM $B\n", {}, "Dockerfile:2: FROM $B expands to an empty name"),
    ("RUN x\nFROM a\n", {}, "Dockerfile:1: RUN before the first FROM"),
    ("# only a comment\n", {}, "Dockerfile: the Dockerfile is empty"),
    ("ARG A=1\n", {}, "no FROM instruction"),
    ("FROM a\nFROM later\nFROM b AS later\n", {}, "Dockerfile:2: FROM later: that stage is "
     "defined later"),
], ids=["duplicate-name-case-insensitive", "reference-to-later-stage", "unknown-index",
        "self-reference", "unknown-target", "empty-from", "instruction-before-from",
        "empty-file", "no-from", "from-later-stage"])
def test_stage_errors(dockerfile: str, kw: dict[str, object], message: str) -> None:
    with pytest.raises(DockerfileError) as info:
        plan(dockerfile, **kw)
    assert message in str(info.value)


def test_dry_run_view() -> None:
    p = plan("ARG IMG=alpine\nFROM $IMG AS builder\nARG N=1\nRUN make -j$N\n"
             "FROM builder\nWORKDIR /app/$N\n", build_args={"N": "4", "X": "y"})
    text = format_plan(p)
    assert text.splitlines() == [
        "# build args not consumed: X",
        "[stage 1/2 builder] 2: FROM alpine AS builder",
        "[stage 1/2 builder] 3: ARG N=4",
        "[stage 1/2 builder] 4: RUN make -j$N",
        "[stage 2/2 1] 5: FROM builder",
        "[stage 2/2 1] 6: WORKDIR /app/4",  # FROM builder inherits its ARG N
    ]


# Docker's "Build variables": a build argument declared in a stage is inherited by its
# child stages (BuildKit starts the child from the parent's state, ARG values included).
INHERIT = (
    "FROM alpine AS parent\nARG VERSION=1.2\nARG FLAVOUR\n"
    "FROM parent AS child\nWORKDIR /in-$VERSION\nARG VERSION\nWORKDIR /bare-$VERSION\n"
    'ARG VERSION="$VERSION-dev"\nWORKDIR /ext-$VERSION\nCOPY --from=$FLAVOUR /a /b\n'
)


def test_a_child_stage_inherits_its_parents_args_in_planning() -> None:
    p = plan(INHERIT, build_args={"FLAVOUR": "parent"})
    child = p.stages[-1]
    assert child.depends_on == [0], "COPY --from=$FLAVOUR saw the inherited value"
    out = format_plan(p)
    assert "WORKDIR /in-1.2" in out
    assert "WORKDIR /bare-1.2" in out, "a bare ARG keeps the inherited value"
    assert "WORKDIR /ext-1.2-dev" in out


def test_a_bare_arg_keeps_a_value_set_earlier_in_the_stage() -> None:
    _, (_, _, w) = resolve_all("FROM x\nARG V=1\nARG V\nWORKDIR /$V\n")
    assert isinstance(w, Workdir) and w.path == "/1"


def test_a_heading_arg_value_still_wins_over_an_inherited_one() -> None:
    # BuildKit: a bare ARG with no build arg takes the global (heading) ARG's value.
    out = format_plan(plan("ARG V=global\nFROM x AS p\nARG V=p\nFROM p\nARG V\nWORKDIR /$V\n"))
    assert "WORKDIR /global" in out
