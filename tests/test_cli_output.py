"""The Output bullets of issue 12, rechecked through the real command in a child process.

``--log-timestamp`` on every line of a real build, and JSON logs that stay JSON
even when the flags themselves are wrong.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.e2e.helpers import build, kanipy, write_tree
from tests.fixtures.images import BaseImages

STAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ ")


def test_log_timestamp_stamps_every_line_of_a_real_build(tmp_path: Path,
                                                         base_images: BaseImages) -> None:
    context = write_tree(tmp_path / "ctx", {
        "Dockerfile": f"FROM {base_images.oci}\nARG USED\nRUN echo out-$USED\n"})
    result = build(context, "--no-push", "--log-timestamp", "--build-arg", "USED=1",
                   "--build-arg", "UNUSED=2")
    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    assert any(line.endswith("STEP 3/3  | out-1") for line in lines), lines
    assert any("UNUSED" in line and "WARNING" in line for line in lines), lines
    assert any(re.search(r"Z total +\d+\.\d\d$", line) for line in lines), lines
    for line in lines:
        assert STAMP.match(line), line


@pytest.mark.parametrize("args", [
    ["--log-format", "json", "--nonexistent"],
    ["--log-format=json", "--skip-tls-verify=maybe"],
    ["--log-format=json", "--progress=fancy"],
], ids=["unknown flag", "bad boolean", "bad choice"])
def test_a_bad_flag_under_a_json_log_is_one_json_record(tmp_path: Path,
                                                        args: list[str]) -> None:
    context = write_tree(tmp_path / "ctx", {"Dockerfile": "FROM scratch\n"})
    result = kanipy("build", "-c", str(context), "--no-push", *args)
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    record = json.loads(lines[0])
    assert record["level"] == "error" and record["event"] == "error"
    assert record["exit_code"] == 2 and record["error"] == "UsageError"
    assert args[-1].split("=")[-1].lstrip("-") in record["msg"]


def test_a_bad_flag_under_a_text_log_is_clicks_usage_text(tmp_path: Path) -> None:
    context = write_tree(tmp_path / "ctx", {"Dockerfile": "FROM scratch\n"})
    result = kanipy("build", "-c", str(context), "--log-format=text", "--nonexistent")
    assert result.returncode == 2
    assert "Error: No such option '--nonexistent'" in result.stderr
    assert not result.stderr.lstrip().startswith("{")
