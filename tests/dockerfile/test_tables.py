"""The phase tables: every instruction class's keyword has a parser and an expander, each
parser reads a sample line into its class, and each expander expands what it declares."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import pytest

from kanipy.dockerfile import Instruction, StageScope, parse_dockerfile, plan_build
from kanipy.dockerfile.expand import EXPANDERS
from kanipy.dockerfile.instructions import INSTRUCTION_TYPES, KEYWORDS, check_table
from kanipy.dockerfile.parse import PARSERS
from kanipy.errors import DockerfileError

TABLES: list[tuple[str, Mapping[str, object]]] = [("parse", PARSERS), ("expand", EXPANDERS)]


@pytest.mark.parametrize(("phase", "table"), TABLES, ids=[t[0] for t in TABLES])
def test_every_keyword_has_one_entry_per_phase(phase: str, table: Mapping[str, object]) -> None:
    assert set(table) == KEYWORDS


def test_keywords_come_from_the_classes() -> None:
    assert len(KEYWORDS) == len(INSTRUCTION_TYPES) == 18
    for cls in INSTRUCTION_TYPES:
        assert cls.keyword and cls.keyword == cls.keyword.upper(), cls


def test_check_table_names_what_is_missing_and_unknown() -> None:
    check_table("test", dict.fromkeys(KEYWORDS))
    with pytest.raises(RuntimeError, match=r"missing \['RUN'\], unknown none"):
        check_table("test", dict.fromkeys(KEYWORDS - {"RUN"}))
    with pytest.raises(RuntimeError, match=r"missing none, unknown \['FOO'\]"):
        check_table("test", dict.fromkeys(KEYWORDS | {"FOO"}))
    check_table("test", dict.fromkeys(KEYWORDS - {"FROM"}), exempt=frozenset({"FROM"}))


# keyword -> (a line, fields its instruction must have)
PARSE_SAMPLES: dict[str, tuple[str, dict[str, object]]] = {
    "FROM": ("FROM --platform=linux/arm64 alpine:3.19 AS Base",
             {"image": "alpine:3.19", "name": "base", "platform": "linux/arm64"}),
    "RUN": ("RUN --mount=type=cache,target=/c --network=none make all",
            {"network": "none", "command.args": ("make all",), "mounts.0.target": "/c"}),
    "CMD": ('CMD ["sh", "-c", "x"]', {"command.args": ("sh", "-c", "x"),
                                      "command.exec_form": True}),
    "LABEL": ('LABEL a=b "c d"=e', {"pairs": (("a", "b"), ('"c d"', "e"))}),
    "MAINTAINER": ("MAINTAINER Jane <jane@example.com>",
                   {"name": "Jane <jane@example.com>"}),
    "EXPOSE": ("EXPOSE 80/tcp 9000-9001", {"ports": ("80/tcp", "9000-9001")}),
    "ENV": ("ENV A=1 B=two", {"pairs": (("A", "1"), ("B", "two"))}),
    "ADD": ("ADD --checksum=sha256:00 --unpack=true https://x.test/a.tgz /a/",
            {"sources": ("https://x.test/a.tgz",), "dest": "/a/", "checksum": "sha256:00",
             "unpack": True}),
    "COPY": ("COPY --from=build --chown=1:2 a b /d/",
             {"from_": "build", "chown": "1:2", "sources": ("a", "b"), "dest": "/d/"}),
    "ENTRYPOINT": ("ENTRYPOINT exec app", {"command.args": ("exec app",),
                                           "command.exec_form": False}),
    "VOLUME": ('VOLUME ["/data"]', {"paths": ("/data",)}),
    "USER": ("USER app:app", {"user": "app:app"}),
    "WORKDIR": ("WORKDIR /src", {"path": "/src"}),
    "ARG": ("ARG V=1 NAME", {"pairs": (("V", "1"), ("NAME", None))}),
    "ONBUILD": ("ONBUILD RUN make", {"expression": "RUN make", "trigger.keyword": "RUN"}),
    "STOPSIGNAL": ("STOPSIGNAL SIGINT", {"signal": "SIGINT"}),
    "HEALTHCHECK": ("HEALTHCHECK --retries=2 CMD true",
                    {"test": ("CMD-SHELL", "true"), "retries": 2}),
    "SHELL": ('SHELL ["/bin/bash", "-c"]', {"args": ("/bin/bash", "-c")}),
}


def _get(obj: object, dotted: str) -> object:
    for part in dotted.split("."):
        obj = obj[int(part)] if part.isdigit() else getattr(obj, part)  # type: ignore[index]
    return obj


def test_parse_samples_cover_every_keyword() -> None:
    assert set(PARSE_SAMPLES) == KEYWORDS


@pytest.mark.parametrize("cls", INSTRUCTION_TYPES, ids=[c.keyword for c in INSTRUCTION_TYPES])
def test_each_parser_reads_its_sample_into_its_class(cls: type[Instruction]) -> None:
    line, expected = PARSE_SAMPLES[cls.keyword]
    (ins,) = parse_dockerfile(line).instructions
    assert type(ins) is cls
    assert (ins.keyword, ins.line, ins.original) == (cls.keyword, 1, line)
    for name, value in expected.items():
        assert _get(ins, name) == value, name


NO_FLAGS = sorted(k for k, parser in PARSERS.items() if not parser.flags)


@pytest.mark.parametrize("keyword", NO_FLAGS, ids=NO_FLAGS)
def test_instructions_without_flags_reject_any(keyword: str) -> None:
    with pytest.raises(DockerfileError, match=f"unknown flag: --x \\(for {keyword}\\)"):
        parse_dockerfile(f"FROM a\n{keyword} --x y")


@pytest.mark.parametrize("cls", INSTRUCTION_TYPES, ids=[c.keyword for c in INSTRUCTION_TYPES])
def test_expanders_declare_fields_their_class_has(cls: type[Instruction]) -> None:
    names = {f.name for f in dataclasses.fields(cls)}
    expander = EXPANDERS[cls.keyword]
    assert set(expander.fields) <= names
    if not expander.fields:
        assert expander.note, "an instruction left as written says why"


# keyword -> (Dockerfile lines after FROM, field, value after expansion; None: unchanged)
# with V=v and P="80 81" in the stage's environment.
EXPANSION_CASES: dict[str, tuple[str, str, object]] = {
    "FROM": ("", "image", "img:v"),
    "RUN": ("RUN --mount=type=cache,target=/$V echo $V", "mounts.0.target", "/v"),
    "CMD": ("CMD echo $V", "", None),
    "LABEL": ("LABEL $V=$V", "pairs", (("v", "v"),)),
    "MAINTAINER": ("MAINTAINER $V", "", None),
    "EXPOSE": ("EXPOSE $P", "ports", ("80", "81")),
    "ENV": ("ENV A=$V", "pairs", (("A", "v"),)),
    "ADD": ("ADD --checksum=$V $V /$V", "checksum", "v"),
    "COPY": ("COPY --chown=$V $V /$V", "sources", ("v",)),
    "ENTRYPOINT": ("ENTRYPOINT $V", "", None),
    "VOLUME": ("VOLUME /$V", "paths", ("/v",)),
    "USER": ("USER $V", "user", "v"),
    "WORKDIR": ("WORKDIR /$V", "path", "/v"),
    "ARG": ("ARG A=$V", "pairs", (("A", "v"),)),
    "ONBUILD": ("ONBUILD RUN echo $V", "", None),
    "STOPSIGNAL": ("STOPSIGNAL ${V:+SIGKILL}", "signal", "SIGKILL"),
    "HEALTHCHECK": ("HEALTHCHECK CMD echo $V", "", None),
    "SHELL": ('SHELL ["$V"]', "", None),
}


def test_expansion_cases_cover_every_keyword() -> None:
    assert set(EXPANSION_CASES) == KEYWORDS


@pytest.mark.parametrize("keyword", sorted(EXPANSION_CASES), ids=sorted(EXPANSION_CASES))
def test_each_expander_expands_what_it_declares(keyword: str) -> None:
    text, field, expected = EXPANSION_CASES[keyword]
    plan = plan_build(f"ARG V=v\nFROM img:$V\n{text}\n")
    stage = plan.target
    scope = StageScope(plan, stage, ["V=v", "P=80 81"])
    ins = stage.from_instruction if keyword == "FROM" else stage.instructions[0]
    resolved = scope.resolve(ins)
    if expected is None:
        assert not EXPANDERS[keyword].fields
        assert resolved is ins
    else:
        assert _get(resolved, field) == expected


def test_run_command_is_left_to_the_shell() -> None:
    plan = plan_build("FROM img\nRUN echo $V\n")
    (ins,) = plan.target.instructions
    assert StageScope(plan, plan.target, ["V=v"]).resolve(ins) == ins
