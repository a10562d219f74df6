"""Dockerfiles that must fail with ``Dockerfile:LINE: message`` (exit 3), never a traceback.

Each case is a reproducer from issue 11: what was an exit 70 (a bug in kanipy) or was
wrongly accepted. Planning and the ``--dry-run`` view run as a build would run them.
"""

from __future__ import annotations

import pytest

from kanipy.dockerfile import (
    Env,
    Healthcheck,
    StageScope,
    StopSignal,
    format_plan,
    parse_instructions,
    plan_build,
)
from kanipy.errors import DockerfileError

NESTED = "${a:-" * 200 + "x" + "}" * 200
HUGE = "9" * 5000  # more digits than Python converts from a string

PLAN_ERRORS = [
    ("lone-escape-last-line", "FROM a\nRUN echo\n\\", 3, "continues nothing"),
    ("only-a-lone-escape", "\\", 1, "continues nothing"),
    ("lone-backtick-escape", "# escape=`\nFROM a\n`\n", 3, "continues nothing"),
    ("nested-substitutions", f"FROM a\nENV A={NESTED}\n", 2, "nest more than 64 deep"),
    ("nested-in-from", f"FROM {NESTED}\n", 1, "nest more than 64 deep"),
    ("nul-in-workdir", "FROM a\nWORKDIR /a\0b\n", 2, "NUL character"),
    ("nul-in-copy-dest", "FROM a\nCOPY x /a\0b\n", 2, "NUL character"),
    ("nul-in-run", "FROM a\nRUN echo \0\n", 2, "NUL character"),
    ("nul-in-env", "FROM a\nENV A=\0\n", 2, "NUL character"),
    ("nul-in-heredoc-body", "FROM a\nRUN <<EOF\n\0\nEOF\n", 3, "NUL character"),
    ("healthcheck-too-long", "FROM a\nHEALTHCHECK --interval=99999999999999999h CMD x\n", 2,
     "is too long"),
    ("healthcheck-one-ns-too-long",
     "FROM a\nHEALTHCHECK --timeout=2562047h47m16.854775808s CMD x\n", 2, "is too long"),
    ("healthcheck-negative", "FROM a\nHEALTHCHECK --interval=-1s CMD x\n", 2,
     "cannot be negative"),
    ("healthcheck-under-1ms", "FROM a\nHEALTHCHECK --start-period=10us CMD x\n", 2,
     "cannot be less than 1ms"),
    ("healthcheck-cmd-empty-exec", "FROM a\nHEALTHCHECK CMD []\n", 2, "missing command"),
    ("chown-uid-too-big", "FROM a\nCOPY --chown=4294967296 x /y\n", 2, "out of range"),
    ("chown-gid-too-big", "FROM a\nCOPY --chown=app:99999999999999999999 x /y\n", 2,
     "out of range"),
    ("chown-negative", "FROM a\nADD --chown=-1 x /y\n", 2, "out of range"),
    ("chown-expanded-too-big", "FROM a\nARG U=4294967296\nCOPY --chown=$U x /y\n", 3,
     "out of range"),
    ("mount-uid-too-big", "FROM a\nRUN --mount=type=cache,target=/c,uid=4294967296 x\n", 2,
     "at most 4294967295"),
    ("mount-gid-negative", "FROM a\nRUN --mount=type=cache,target=/c,gid=-1 x\n", 2,
     "for gid in --mount"),
    ("mount-uid-not-a-number", "FROM a\nRUN --mount=type=cache,target=/c,uid=1_0 x\n", 2,
     "for uid in --mount"),
    ("mount-mode-not-octal", "FROM a\nRUN --mount=type=cache,target=/c,mode=0o755 x\n", 2,
     "for mode in --mount"),
    ("mount-uid-expanded", "FROM a\nARG U=-1\nRUN --mount=type=cache,target=/c,uid=$U x\n",
     3, "for uid in --mount"),
    ("stopsignal-unknown", "FROM a\nSTOPSIGNAL SIGFOO\n", 2, "invalid signal 'SIGFOO'"),
    ("stopsignal-zero", "FROM a\nSTOPSIGNAL 0\n", 2, "from 1 to 64"),
    ("stopsignal-too-big", "FROM a\nSTOPSIGNAL 65\n", 2, "from 1 to 64"),
    ("stopsignal-negative", "FROM a\nSTOPSIGNAL -9\n", 2, "invalid signal"),
    ("stopsignal-expanded", "FROM a\nARG S=SIGFOO\nSTOPSIGNAL $S\n", 3, "invalid signal"),
    ("platform-one-word", "FROM --platform=garbage a\n", 1, "unknown operating system or"),
    ("platform-unknown-os", "FROM --platform=garbage/amd64 a\n", 1, "unknown operating"),
    ("platform-unknown-arch", "FROM --platform=linux/garbage a\n", 1, "unknown architecture"),
    ("platform-four-parts", "FROM --platform=linux/arm/v7/x a\n", 1, "OS/ARCH[/VARIANT]"),
    ("platform-empty-part", "FROM --platform=linux/ a\n", 1, "OS/ARCH[/VARIANT]"),
    ("platform-bad-chars", "FROM --platform=linux/amd64* a\n", 1, "OS/ARCH[/VARIANT]"),
    ("platform-expanded", "ARG P=linux/nope\nFROM --platform=$P a\n", 2,
     "unknown architecture"),
    ("copy-from-negative", "FROM a\nCOPY --from=-1 x /y\n", 2, "there is no stage -1"),
    ("copy-from-past-end", "FROM a\nFROM b\nCOPY --from=2 x /y\n", 3, "there is no stage 2"),
    ("mount-from-negative", "FROM a\nRUN --mount=from=-1,target=/s x\n", 2,
     "there is no stage -1"),
    ("run-empty-exec-form", "FROM a\nRUN []\n", 2, "RUN [] has no command"),
    ("pattern-reversed-range", "FROM a\nARG A=abc\nENV B=${A#[z-a]}\n", 3, "invalid pattern"),
    ("pattern-reversed-range-replace", "FROM a\nARG A=abc\nENV B=${A/[b-a]/x}\n", 3,
     "invalid pattern"),
    ("expansion-doubling", "FROM a\nENV A=0123456789abcdef\n" + "ENV A=$A$A\n" * 20, 19,
     "expand to more than 1 MiB"),
    ("chown-huge", f"FROM a\nCOPY --chown=1:{HUGE} x /y\n", 2, "out of range"),
    ("mount-uid-huge", f"FROM a\nRUN --mount=type=cache,target=/c,uid={HUGE} x\n", 2,
     "at most 4294967295"),
    ("expose-huge", f"FROM a\nEXPOSE {HUGE}\n", 2, "invalid port range"),
    ("stopsignal-huge", f"FROM a\nSTOPSIGNAL {HUGE}\n", 2, "from 1 to 64"),
    ("retries-huge", f"FROM a\nHEALTHCHECK --retries={HUGE} CMD x\n", 2, "invalid --retries"),
    ("retries-not-ascii", "FROM a\nHEALTHCHECK --retries=\u0663 CMD x\n", 2,
     "invalid --retries"),
    ("copy-from-huge", f"FROM a\nCOPY --from={HUGE} x /y\n", 2, "there is no stage 999"),
    ("onbuild-run-empty-exec-form", "FROM a\nONBUILD RUN []\n", 2, "RUN [] has no command"),
]


def _plan(text: str) -> str:
    """Plan, expand every instruction of every stage as the engine does (from an empty
    base Env), and render the ``--dry-run`` view."""
    plan = plan_build(text, filename="app/Dockerfile", build_args={"V": "1"})
    for stage in plan.stages:
        scope = StageScope(plan, stage, [])
        scope.resolve(stage.from_instruction)
        for ins in stage.instructions:
            scope.resolve(ins)
    return format_plan(plan)


@pytest.mark.parametrize(("text", "line", "message"), [c[1:] for c in PLAN_ERRORS],
                         ids=[c[0] for c in PLAN_ERRORS])
def test_plan_errors_name_file_and_line(text: str, line: int, message: str) -> None:
    with pytest.raises(DockerfileError) as info:
        _plan(text)
    err = info.value
    assert err.exit_code == 3
    assert err.line == line
    assert str(err).startswith(f"app/Dockerfile:{line}: ")
    assert message in str(err)


ACCEPTED = [
    ("continuation-at-end-of-file", "FROM a\nRUN echo \\"),
    ("nesting-at-the-limit", "FROM a\nENV A=" + "${a:-" * 64 + "x" + "}" * 64),
    ("healthcheck-zero-is-default", "FROM a\nHEALTHCHECK --interval=0s CMD x"),
    ("healthcheck-longest", "FROM a\nHEALTHCHECK --interval=2562047h47m16.854775807s CMD x"),
    ("chown-largest-ids", "FROM a\nCOPY --chown=4294967295:4294967295 x /y"),
    ("chown-names", "FROM a\nCOPY --chown=app:staff x /y"),
    ("mount-ids", "FROM a\nRUN --mount=type=cache,target=/c,uid=4294967295,gid=0,mode=0755 x"),
    ("stopsignal-names", "FROM a\nSTOPSIGNAL sigterm\nSTOPSIGNAL QUIT\nSTOPSIGNAL SIGRTMIN+3"),
    ("stopsignal-numbers", "FROM a\nSTOPSIGNAL 9\nSTOPSIGNAL 64"),
    ("stopsignal-quoted", "FROM a\nSTOPSIGNAL \"SIGTERM\"\nSTOPSIGNAL 'SIGINT'"),
    ("platform-spellings", "FROM --platform=linux/x86_64 a\nFROM --platform=Linux/aarch64 b\n"
     "FROM --platform=linux/arm/v7 c\nFROM --platform=$BUILDPLATFORM d"),
    ("copy-from-index", "FROM a\nFROM b\nCOPY --from=0 x /y"),
    ("cmd-empty-exec-form", "FROM a\nCMD []\nENTRYPOINT []"),
    ("json-nested-past-the-stack", "FROM a\nRUN " + "[" * 100000 + "]" * 100000),
    ("healthcheck-empty-retries", "FROM a\nHEALTHCHECK --retries= CMD x"),
    ("healthcheck-fraction", "FROM a\nHEALTHCHECK --interval=1.5h --timeout=.5s CMD x"),
]


@pytest.mark.parametrize("text", [c[1] for c in ACCEPTED], ids=[c[0] for c in ACCEPTED])
def test_accepted(text: str) -> None:
    assert "FROM" in _plan(text)


def test_longest_healthcheck_interval_is_exact() -> None:
    plan = plan_build("FROM a\nHEALTHCHECK --interval=2562047h47m16.854775807s CMD x\n")
    ins = plan.target.instructions[0]
    assert isinstance(ins, Healthcheck)
    assert ins.interval == 2**63 - 1


def test_one_word_platform_is_completed_from_the_target() -> None:
    plan = plan_build("FROM --platform=linux a\nFROM --platform=arm64 b\n", target=None)
    assert [s.platform for s in plan.all_stages] == ["linux/amd64", "linux/arm64"]


def test_stopsignal_kept_as_written() -> None:
    plan = plan_build("FROM a\nARG S=SIGQUIT\nSTOPSIGNAL $S\n")
    scope = StageScope(plan, plan.target, [])
    signal = [scope.resolve(i) for i in plan.target.instructions][-1]
    assert isinstance(signal, StopSignal) and signal.signal == "SIGQUIT"


TRIGGER_ERRORS = [
    ("copy-heredoc-without-body", "COPY <<EOF /x", "unterminated heredoc 'EOF'"),
    ("run-empty-exec-form", "RUN []", "RUN [] has no command"),
    ("nul", "RUN a\0b", "NUL character"),
    ("from", "FROM x", "FROM isn't allowed"),
    ("bad-signal", "STOPSIGNAL SIGFOO", "invalid signal"),
]


@pytest.mark.parametrize(("trigger", "message"), [c[1:] for c in TRIGGER_ERRORS],
                         ids=[c[0] for c in TRIGGER_ERRORS])
def test_onbuild_trigger_errors_name_the_from_line(trigger: str, message: str) -> None:
    with pytest.raises(DockerfileError) as info:
        parse_instructions(["RUN ok", trigger], "app/Dockerfile", line=7)
    assert str(info.value).startswith("app/Dockerfile:7: the base image's ONBUILD trigger ")
    assert message in str(info.value)


@pytest.mark.parametrize("text", ["WORKDIR /w/$B", "COPY x /d/$B", "ENV A=$B", "USER $B",
                                  "LABEL l=$B"])
def test_nul_from_base_image_env_is_refused_once_expanded(text: str) -> None:
    plan = plan_build(f"FROM a\n{text}\n", filename="app/Dockerfile")
    scope = StageScope(plan, plan.target, ["B=x\0y"])
    with pytest.raises(DockerfileError) as info:
        scope.resolve(plan.target.instructions[0])
    assert str(info.value).startswith("app/Dockerfile:2: '")
    assert "x<NUL>y" in str(info.value)
    assert "contains a NUL character" in str(info.value)


BRACKETS = [("${A#*[[]}", "b]c&&d"), ("${A%[&]*}", "a[b]c&"), ("${A//[]&[]/}", "abcd"),
            ("${A/[]/x}", "a[b]c&&d"), ("${A#[!]]}", "[b]c&&d"), ("${A//[a-c]/}", "[]&&d")]


@pytest.mark.parametrize(("pattern", "expected"), BRACKETS)
def test_bracket_expressions_take_set_characters_literally(pattern: str, expected: str) -> None:
    plan = plan_build(f"FROM a\nARG A='a[b]c&&d'\nENV B={pattern}\n")
    scope = StageScope(plan, plan.target, [])
    env = [scope.resolve(i) for i in plan.target.instructions][-1]
    assert isinstance(env, Env) and env.pairs == (("B", expected),)


# Patterns with several stars, matched piece by piece (lex._Glob): the same results as
# the shell's, shortest or longest as the operator asks.
STARS = [
    ("${A#*/}", "b/c.tar.gz"), ("${A##*/}", "c.tar.gz"), ("${A%.*}", "a/b/c.tar"),
    ("${A%%.*}", "a/b/c"), ("${A#a*/*.}", "tar.gz"), ("${A##a*/*.}", "gz"),
    ("${A%/*.*}", "a/b"), ("${A%%/*.*}", "a"), ("${A/b*.t/X}", "a/Xar.gz"),
    ("${A/*.*.g/X}", "Xz"), ("${A//[a-c]/_}", "_/_/_.t_r.gz"), ("${A/?\\/*\\//}", "c.tar.gz"),
    ("${A/#a/X}", "a/b/c.tar.gz"), ("${A#x*}", "a/b/c.tar.gz"), ("${A//*/z}", "zz"),
]


@pytest.mark.parametrize(("word", "expected"), STARS)
def test_patterns_with_stars(word: str, expected: str) -> None:
    plan = plan_build(f"FROM a\nARG A=a/b/c.tar.gz\nENV B={word}\n")
    scope = StageScope(plan, plan.target, [])
    env = [scope.resolve(i) for i in plan.target.instructions][-1]
    assert isinstance(env, Env) and env.pairs == (("B", expected),)


SYNTAX = [
    ("nesting", f"FROM a\nWORKDIR /w\nENV A={NESTED}\n", 3, "nest more than 64 deep"),
    ("missing-brace", "FROM a\nCOPY x /y/${A\n", 2, "missing '}'"),
    ("bad-modifier", "FROM a\nLABEL l=${A:0:1}\n", 2, "unsupported modifier"),
    ("in-a-needed-stage", "FROM a AS b\nUSER ${U\nFROM c\nCOPY --from=b x /y\n", 2,
     "missing '}'"),
]


@pytest.mark.parametrize(("text", "line", "message"), [c[1:] for c in SYNTAX],
                         ids=[c[0] for c in SYNTAX])
def test_words_no_env_could_expand_fail_the_plan(text: str, line: int, message: str) -> None:
    # Found before anything is built (exit 3 also for --dry-run), as BuildKit finds them.
    with pytest.raises(DockerfileError) as info:
        plan_build(text)
    assert info.value.line == line and message in str(info.value)


def test_words_that_depend_on_values_wait_for_the_base_image() -> None:
    plan = plan_build("FROM a AS unused\nUSER ${U\nFROM b\nWORKDIR ${HOME:?set by the base}\n")
    assert [s.index for s in plan.stages] == [1]
    assert "cannot expand yet: HOME: set by the base" in format_plan(plan)
    assert "WORKDIR /root" in format_plan(plan, {1: ["HOME=/root"]})
