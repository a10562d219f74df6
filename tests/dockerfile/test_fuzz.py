"""A standing fuzz target for the Dockerfile front end (issue 11).

A seeded mutator over a corpus of real Dockerfiles (``examples/``, and every Dockerfile
written as a string in ``tests/``) asserts, for each mutated file, that planning it
(``plan_build`` with build args, expanding every instruction of the planned stages as the
engine does, and ``format_plan`` for ``--dry-run``) either succeeds or raises
``DockerfileError`` naming a line of the file: never another exception.

Every loop of the front end is bounded by its input, and inputs are kept under
``MAX_SIZE``, so a hang shows as a slow run; the slowest case is reported. CI runs a few
hundred cases in seconds; more on demand::

    KANIPY_FUZZ_CASES=100000 KANIPY_FUZZ_SEED=7 pytest tests/dockerfile/test_fuzz.py

A failure names the seed and the case, and writes the mutated Dockerfile next to the
pytest temporary directory so that it can be turned into a reproducer in test_errors.py.
"""

from __future__ import annotations

import ast
import os
import random
import time
import warnings
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import pytest

from kanipy.dockerfile import StageScope, format_plan, plan_build
from kanipy.errors import DockerfileError

ROOT = Path(__file__).resolve().parents[2]
CASES = int(os.environ.get("KANIPY_FUZZ_CASES", "300"))
SEED = int(os.environ.get("KANIPY_FUZZ_SEED", "11"))
MAX_SIZE = 8192
# Errors about the whole file rather than one of its lines.
WHOLE_FILE = ("the Dockerfile is empty", "no FROM instruction", "target stage ")

# Every keyword and flag, so that mutations reach every parser.
SEED_FILE = """\
# syntax=docker/dockerfile:1
# escape=\\
ARG BASE=busybox VERSION=1.0
ARG PLATFORM=linux/amd64
FROM --platform=${PLATFORM} ${BASE:-scratch} AS build
ARG VERSION
ENV A=1 B="two words" C=${VERSION#1.} D=${A:+set} E=${B/two/2} F=${B%%s*}
ENV LEGACY value with spaces
LABEL org.opencontainers.image.version=$VERSION "key two"='v'
WORKDIR /src/${A}
COPY --chown=1000:1000 --chmod=0755 --link --exclude=*.md a b/ ./
ADD --checksum=sha256:0123 --keep-git-dir --unpack=true https://example.com/a.tgz /opt/
RUN --mount=type=cache,target=/root/.cache,id=pip,sharing=locked,uid=0,gid=0,mode=0755 \\
    --mount=type=secret,id=token,env=TOKEN,required=true \\
    --mount=type=bind,from=alpine:3,source=/src,target=/mnt,rw \\
    --mount=type=tmpfs,target=/tmp,size=64m \\
    --network=none --security=sandbox \\
    echo "$A" && make
RUN <<EOF bash
set -e
echo $A
EOF
COPY <<-"EOT" /etc/motd
\thello ${A}
\tEOT
RUN ["/bin/sh", "-c", "echo exec"]
EXPOSE 80 443/tcp 8000-8010/udp ${PORT:-9090}
USER app:app
VOLUME ["/data", "/logs"]
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=30s --timeout=3s --start-period=1m --start-interval=2s --retries=3 \\
  CMD curl -f http://localhost/ || exit 1
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ONBUILD RUN echo triggered
MAINTAINER someone
ENTRYPOINT ["/app"]
CMD ["--help"]

FROM build AS final
COPY --from=build /src /src
COPY --from=0 --parents /x/ /y
CMD echo done
"""

# Fragments a mutation inserts: syntax that parsers treat specially, and extremes.
TOKENS = [
    "\\", "\\\n", "`", "\n", "\r\n", "\t", " ", "\0", "\ufeff", "#", "# escape=`\n",
    "$", "${", "}", "${A}", "${A:-", "${A-", "${A:+", "${A:?", "${A#", "${A##", "${A%",
    "${A/", "${A//", "$1", "$@", "${}", "${:}", "${A:-${A:-${A:-x}}}",
    "${A#[z-a]}", "${A%%[!a-]*}", "${A/[]/x}", "${A//[[:alpha:]]/}", "${A#*[[]}", "${A:?no}",
    "ENV A=$A$A\n", "ARG A=${A}${A}${A}\n", "${A#[a--b]}", "${A#[a-]}", "${A#[--/]}",
    "${A?}", "${A%\\}", "${A/#x/y}", "${A:0:1}", "${#A}", "${A^^}", "${!A}",
    "${A/a*a*x/}", "${A%%?*/*.}",
    '"', "'", "=", ":", ",", "[", "]", '["a"]', "[]", '["', "{", "*", "?", "[z-a]", "[!",
    "<<EOF", "<<-EOF", '<<"EOF"', "3<<EOF", "\nEOF\n", "EOF",
    "--", "--from=", "--from=0", "--from=-1", "--from=99", "--chown=", "--chmod=", "--link",
    "--platform=", "--platform=linux/arm64", "--mount=", "--mount=type=cache,target=/x",
    "--mount=type=secret", "--network=", "--interval=", "--retries=", "--exclude=",
    "type=", "target=", "uid=", "gid=", "mode=", "from=", "id=", "env=",
    "FROM ", "FROM scratch\n", "AS ", "ARG ", "ENV ", "RUN ", "COPY ", "ADD ", "ONBUILD ",
    "HEALTHCHECK ", "CMD ", "NONE", "STOPSIGNAL ", "SHELL ", "EXPOSE ", "WORKDIR ", "USER ",
    "VOLUME ", "LABEL ", "ENTRYPOINT ", "MAINTAINER ",
    "0", "-1", "+1", "65536", "4294967296", "99999999999999999999", "1e9", "0x10", "1_000",
    "9" * 40, "30s", "-1s", "99999999999999999h", "1.5h", "SIGKILL", "SIGFOO", "64", "65",
    "linux/amd64", "linux", "arm64", "garbage/x", "a/b/c/d", "/", "..", "./", "~",
    "\u00e9", "\u0663", "\u00b2", "\u2028", "\x85", "\x0b", "\x1c", "\udc80",
]


@cache
def corpus() -> tuple[str, ...]:
    """The seed file, the examples' Dockerfiles, and every string constant in the test
    suite that is a Dockerfile kanipy plans: mutations of valid files reach deepest."""
    texts = [SEED_FILE]
    texts += [p.read_text() for p in sorted((ROOT / "examples").rglob("Dockerfile*"))]
    for path in sorted((ROOT / "tests").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if (isinstance(node, ast.Constant) and isinstance(node.value, str)
                    and "FROM" in node.value.upper() and check_case(node.value) == "planned"):
                texts.append(node.value)
    return tuple(dict.fromkeys(texts))


def _span(rng: random.Random, text: str) -> tuple[int, int]:
    start = rng.randrange(len(text) + 1)
    return start, min(len(text), start + rng.choice((1, 2, 4, 16, 64)))


def mutate(rng: random.Random, text: str, others: tuple[str, ...]) -> str:
    """``text`` with one to eight random edits (mostly few), at most ``MAX_SIZE``
    characters."""
    for _ in range(rng.choice((1, 1, 2, 2, 3, 4, 8))):
        kind = rng.randrange(9)
        start, end = _span(rng, text)
        if kind == 0:  # delete a span
            text = text[:start] + text[end:]
        elif kind == 1:  # duplicate a span (repeats build deep nesting and long words)
            text = text[:end] + text[start:end] * rng.choice((1, 2, 8, 100, 2000)) + text[end:]
        elif kind in (2, 3, 4):  # insert a token
            text = text[:start] + rng.choice(TOKENS) + text[start:]
        elif kind == 5:  # replace one character by any character
            text = text[:start] + chr(rng.choice((rng.randrange(128), rng.randrange(0x3000))))\
                + text[start + 1:]
        elif kind == 6:  # swap two lines
            lines = text.split("\n")
            i, j = rng.randrange(len(lines)), rng.randrange(len(lines))
            lines[i], lines[j] = lines[j], lines[i]
            text = "\n".join(lines)
        elif kind == 7:  # splice in a line of another Dockerfile
            lines = text.split("\n")
            donor = rng.choice(others).split("\n")
            lines.insert(rng.randrange(len(lines) + 1), rng.choice(donor))
            text = "\n".join(lines)
        else:  # change the case of a span (keywords, flag names, stage names)
            text = text[:start] + text[start:end].swapcase() + text[end:]
    return text[:MAX_SIZE]


def cases(seed: int, count: int) -> Iterator[tuple[int, str]]:
    rng = random.Random(seed)
    texts = corpus()
    for number in range(count):
        yield number, mutate(rng, rng.choice(texts), texts)


def plan_like_a_build(text: str) -> None:
    """What ``kanipy build`` and ``--dry-run`` do with a Dockerfile before any pull."""
    plan = plan_build(text, build_args={"VERSION": "2.0", "BASE": "alpine", "A": "x y"})
    for stage in plan.stages:
        scope = StageScope(plan, stage, ["PATH=/usr/bin:/bin", "HOME=/root"])
        scope.resolve(stage.from_instruction)
        for ins in stage.instructions:
            scope.resolve(ins)
    format_plan(plan)


def check_case(text: str) -> str:
    """Planning ``text`` succeeds or fails with a Dockerfile error naming a line of it;
    a warning (a regex that Python reads differently, say) is a finding too."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            plan_like_a_build(text)
    except DockerfileError as err:
        if err.line is None:
            assert err.reason.startswith(WHOLE_FILE), f"no line in {err}"
        else:
            assert 1 <= err.line <= text.count("\n") + 1, f"line out of the file: {err}"
            assert str(err).startswith(f"Dockerfile:{err.line}: "), str(err)
        return "dockerfile error"
    return "planned"


def test_corpus_is_real() -> None:
    texts = corpus()
    assert len(texts) > 40
    assert texts[0] == SEED_FILE and all(check_case(t) == "planned" for t in texts[:4])


def test_mutated_dockerfiles_plan_or_fail_with_a_line(tmp_path: Path) -> None:
    slowest = (0.0, -1)
    outcomes = {"planned": 0, "dockerfile error": 0}
    for number, text in cases(SEED, CASES):
        started = time.perf_counter()
        try:
            outcome = check_case(text)
        except Exception as exc:  # the finding: keep the input and say how to rerun it
            saved = tmp_path / f"fuzz-{SEED}-{number}.Dockerfile"
            saved.write_text(text, encoding="utf-8", errors="surrogatepass")
            pytest.fail(f"case {number} of seed {SEED} ({saved}): {type(exc).__name__}: "
                        f"{exc}\n{text[:2000]!r}")
        outcomes[outcome] += 1
        elapsed = time.perf_counter() - started
        slowest = max(slowest, (elapsed, number))
    print(f"fuzz: seed {SEED}, {CASES} cases, {outcomes}, "
          f"slowest case {slowest[1]} in {slowest[0]:.3f}s")
