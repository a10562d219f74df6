"""Benchmark: parse and plan a 1,000-instruction Dockerfile, then expand every instruction.

Run: /work/venv/bin/python benchmarks/bench_dockerfile.py  (target: under 100 ms)
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from kanipy.dockerfile import StageScope, plan_build  # noqa: E402
from kanipy.oci.descriptor import Platform  # noqa: E402


def make_dockerfile(instructions: int = 1000) -> str:
    lines = ["ARG BASE=debian:12", "FROM $BASE AS build", "ARG VERSION=1.0"]
    kinds = [
        "ENV PATH_{i}=/opt/{i}/bin:$PATH",
        "RUN --mount=type=cache,target=/root/.cache/{i} make -j4 \\\n    target{i} && echo done",
        "COPY --chown=1000:1000 --chmod=u+x src/{i} /app/{i}",
        "WORKDIR /app/${{VERSION}}/{i}",
        'LABEL org.example.step{i}="${{VERSION%%.*}}"',
        "RUN <<EOF\necho {i}\nEOF",
    ]
    count = len(lines)
    i = 0
    while count < instructions - 2:
        lines.append(kinds[i % len(kinds)].format(i=i))
        i += 1
        count += 1
    lines += ["FROM scratch", "COPY --from=build /app /app"]
    return "\n".join(lines) + "\n"


def main() -> None:
    text = make_dockerfile()
    runs = []
    for _ in range(5):
        start = time.perf_counter()
        plan = plan_build(text, build_args={"VERSION": "2.1"}, target=None,
                          target_platform=Platform(), build_platform=Platform())
        planned = time.perf_counter()
        for stage in plan.stages:
            scope = StageScope(plan, stage, ["PATH=/usr/bin:/bin"])
            for ins in stage.instructions:
                scope.resolve(ins)
        runs.append(((planned - start) * 1000, (time.perf_counter() - planned) * 1000))
    count = sum(len(s.instructions) + 1 for s in plan.all_stages)
    best_plan = min(r[0] for r in runs)
    best_expand = min(r[1] for r in runs)
    print(f"instructions: {count}")
    print(f"parse + plan: {best_plan:.1f} ms (best of {len(runs)})")
    print(f"expand all:   {best_expand:.1f} ms")
    print(f"total:        {best_plan + best_expand:.1f} ms (target < 100 ms)")


if __name__ == "__main__":
    main()
