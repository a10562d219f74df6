"""A small CI fleet: concurrent builds to one repository, own stores and one shared
--cache-dir, through ``benchmarks/bench_fleet.py`` (issue 13). Every build must succeed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.tools import require_root, require_tool

ROOT = Path(__file__).resolve().parents[2]


def test_concurrent_builds_to_one_repository_all_succeed(tmp_path: Path) -> None:
    require_root()
    require_tool("docker-registry")
    require_tool("skopeo")
    figures = tmp_path / "fleet.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_fleet.py"), "--builds", "4",
         "--rounds", "2", "--check", "--json", str(figures)],
        capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    results = json.loads(figures.read_text())
    assert [(r["mode"], r["succeeded"], r["builds"]) for r in results] == [
        ("own-store", 8, 8), ("shared-cache-dir", 8, 8)]
    assert "| shared-cache-dir | 8/8 |" in proc.stdout
