"""Dockerfiles that must fail with ``Dockerfile:LINE: message`` (exit 3), never a traceback.

Each case is a reproducer from issue 11: what was an exit 70 (a bug in kanipy) or was
wrongly accepted. Planning and the ``--dry-run`` view run as a build would run them.
"""

from __future__ import annotations

import pytest

from kanipy.dockerfile import (
    StageScope,
    format_plan,
    plan_build,
)
from kanipy.errors import DockerfileError

NESTED = "${a:-" * 200 + "x" + "}" * 200

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
]


@pytest.mark.parametrize("text", [c[1] for c in ACCEPTED], ids=[c[0] for c in ACCEPTED])
def test_accepted(text: str) -> None:
    assert "FROM" in _plan(text)

