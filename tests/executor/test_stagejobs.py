"""The stage scheduler (kanipy.executor.stagejobs) on real threads, with plans from real
Dockerfiles: what starts when, what a failure stops, and the reporter each stage sees.

Overlap is shown with barriers, never with a clock: a stage that must meet another
waits for it (a generous limit turns a missing overlap into a failure, not a hang).
"""

from __future__ import annotations

import io
import json
import threading
from collections.abc import Callable

import pytest

from kanipy.cli import ConsoleReporter, Failure
from kanipy.console import TerminalReporter
from kanipy.dockerfile import Stage, plan_build
from kanipy.errors import BuildError, UsageError
from kanipy.executor.progress import NullReporter, StepInfo
from kanipy.executor.stagejobs import (
    StageEvents,
    StageRunner,
    StagesStopped,
    overlap_possible,
    stage_jobs,
    start_after,
)

LIMIT = 30.0  # seconds a barrier waits before the test fails (never reached when it works)


def stages(text: str) -> list[Stage]:
    return plan_build(text).stages


TWO_BUILDERS = ("FROM busybox AS one\nRUN a\nFROM busybox AS two\nRUN b\n"
                "FROM busybox\nCOPY --from=one /a /a\nCOPY --from=two /b /b\n")


def test_jobs_default_is_the_cpus_at_least_two_and_zero_is_refused() -> None:
    assert stage_jobs(None) >= 2
    assert stage_jobs(1) == 1 and stage_jobs(5) == 5
    with pytest.raises(UsageError, match="--jobs 0"):
        stage_jobs(0)


def test_a_stage_starts_after_the_stage_it_is_built_from_only() -> None:
    plan = stages("FROM busybox AS base\nRUN a\nFROM base AS child\nRUN b\n"
                  "FROM busybox\nCOPY --from=child /b /b\nRUN --mount=from=base,target=/m c\n")
    assert start_after(plan) == {0: None, 1: 0, 2: None}
    assert overlap_possible(plan)


@pytest.mark.parametrize(("text", "expected"), [
    ("FROM busybox\nRUN a\n", False),
    ("FROM busybox AS a\nFROM a AS b\nFROM b\n", False),
    (TWO_BUILDERS, True),
    # An unused stage is not built, so nothing can overlap.
    ("FROM busybox AS unused\nFROM busybox AS used\nFROM used\n", False),
], ids=["one-stage", "chain", "two-builders", "unused-skipped"])
def test_overlap_is_possible_unless_each_stage_is_built_from_the_one_before(
        text: str, expected: bool) -> None:
    assert overlap_possible(stages(text)) is expected


def _runner(plan: list[Stage], build: Callable[[int, Stage], object], jobs: int,
            stop: Callable[[], None] = lambda: None) -> StageRunner:
    return StageRunner(plan, build, jobs=jobs, stop=stop)


def test_one_job_builds_the_stages_one_after_another_in_file_order() -> None:
    events: list[str] = []
    lock = threading.Lock()

    def build(number: int, stage: Stage) -> None:
        with lock:
            events.append(f"start {number}")
        with lock:
            events.append(f"end {number}")

    _runner(stages(TWO_BUILDERS), build, jobs=1).run()
    assert events == ["start 1", "end 1", "start 2", "end 2", "start 3", "end 3"]


def test_independent_stages_run_at_the_same_time() -> None:
    """Both builders must be under way together to pass the barrier."""
    barrier = threading.Barrier(2, timeout=LIMIT)
    met: list[int] = []

    def build(number: int, stage: Stage) -> None:
        if number in (1, 2):
            barrier.wait()
            met.append(number)

    _runner(stages(TWO_BUILDERS), build, jobs=2).run()
    assert sorted(met) == [1, 2]


def test_a_stage_built_from_another_waits_for_it() -> None:
    done: set[int] = set()
    seen_at_start: dict[int, set[int]] = {}

    def build(number: int, stage: Stage) -> None:
        seen_at_start[number] = set(done)
        done.add(number)

    _runner(stages("FROM busybox AS base\nFROM busybox AS other\nFROM base\n"
                   "COPY --from=other / /\n"), build, jobs=3).run()
    assert 1 in seen_at_start[3]


def test_a_waiting_stage_frees_its_slot_so_the_stage_it_waits_for_can_run() -> None:
    """jobs=2: stage 1 holds a slot until stage 3 has run; stage 2 waits (for stage 1);
    stage 3 can only start in the slot stage 2 gave up while waiting."""
    plan = stages("FROM busybox AS a\nFROM busybox AS b\nCOPY --from=a / /\n"
                  "FROM busybox AS c\nFROM busybox\nCOPY --from=b / /b\nCOPY --from=c / /c\n")
    third_ran = threading.Event()
    first_done = threading.Event()
    runner: StageRunner

    def build(number: int, stage: Stage) -> None:
        if number == 1:
            assert third_ran.wait(LIMIT), "stage 3 never started"
            first_done.set()
        elif number == 2:
            with runner.waiting():
                assert first_done.wait(LIMIT)
        elif number == 3:
            third_ran.set()

    runner = _runner(plan, build, jobs=2)
    runner.run()


def test_a_failure_stops_the_others_and_is_what_is_raised() -> None:
    """Stage 2 fails while stage 1 runs: ``stop`` is called, stage 1 ends (here on the
    stop it is told of), every thread is waited for, and stage 2's error is raised."""
    stopped = threading.Event()
    started = threading.Event()
    finished: list[int] = []

    def build(number: int, stage: Stage) -> None:
        if number == 1:
            started.set()
            assert stopped.wait(LIMIT), "never told to stop"
            finished.append(1)
            raise BuildError("RUN ended by the stop: exit code 143")
        if number == 2:
            assert started.wait(LIMIT)
            raise BuildError("Dockerfile:4: RUN failed: exit code 7", exit_status=7)
        finished.append(number)

    runner = _runner(stages(TWO_BUILDERS), build, jobs=2, stop=stopped.set)
    with pytest.raises(BuildError, match="exit code 7") as caught:
        runner.run()
    assert caught.value.exit_status == 7
    assert runner.failed_stage == 2
    assert finished == [1], "stage 1 was waited for; stage 3 never started"


def test_a_stage_stopped_by_the_stop_is_never_the_failure_reported() -> None:
    """A stage may see the build stopping (StagesStopped) before the failing stage's
    error arrives: the failure is still the one raised."""
    release = threading.Event()

    def build(number: int, stage: Stage) -> None:
        if number == 1:
            raise StagesStopped("the push-permission check failed")
        if number == 2:
            release.wait(0.5)  # reported after stage 1's StagesStopped
            raise BuildError("denied: push to registry")

    with pytest.raises(BuildError, match="denied"):
        _runner(stages(TWO_BUILDERS), build, jobs=2).run()


def _step(stage: int, step: int, text: str = "RUN x", line: int = 2) -> StepInfo:
    return StepInfo(stage, 3, None, step, 2, text, line)


def test_stage_events_stop_a_stage_at_its_next_call_and_report_the_others_stopped() -> None:
    out = io.StringIO()
    events = StageEvents(ConsoleReporter(out, json_lines=True))
    events.stage_started(1, 3, "one", "busybox")
    events.step_started(_step(1, 2, "RUN sleep 100", 2))
    events.stage_started(2, 3, "two", "busybox")
    events.step_started(_step(2, 2, "RUN exit 7", 4))
    events.stopping.set()
    with pytest.raises(StagesStopped):
        events.step_started(_step(1, 3))
    events.stopped(failed=2)
    events.reporter.failed(Failure(1, "error: Dockerfile:4: exit code 7", {}))
    records = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [(r["event"], r["stage"]) for r in records[-2:]] == [("stopped", 1), ("error", 2)]
    assert records[-2]["msg"] == "[1/3] STEP 2/2: stopped (another stage failed)"
    assert records[-1]["line"] == 4 and records[-1]["instruction"] == "RUN exit 7"


def test_a_reporter_without_stage_stopped_still_works() -> None:
    """A reporter written before stages ran at once lacks the new event."""

    class Old(NullReporter):
        stage_stopped = None  # type: ignore[assignment]

    events = StageEvents(Old())
    events.stage_started(1, 2, None, "busybox")
    events.stopped(failed=2)


def test_the_live_view_shows_every_running_step_and_cancels_the_stopped() -> None:
    out = io.StringIO()
    view = TerminalReporter(out, width=80, height=20, interval=3600)
    view.step_started(_step(1, 2, "RUN make left", 2))
    view.step_started(_step(2, 2, "RUN make right", 4))
    view.step_output(_step(1, 2, "RUN make left", 2), b"left-out")
    view.step_output(_step(2, 2, "RUN make right", 4), b"right-out")
    live = [line.rstrip() for line in view._live_lines()]
    assert any(line.startswith("=> [1/3] STEP 2/2: RUN make left") for line in live), live
    assert any(line.startswith("=> [2/3] STEP 2/2: RUN make right") for line in live), live
    assert "=> => # left-out" in live and "=> => # right-out" in live
    view.stage_stopped(1)
    view.failed(Failure(1, "error: exit code 7", {}))
    text = out.getvalue()
    assert "=> CANCELED [1/3] STEP 2/2: RUN make left" in text
    assert "=> ERROR [2/3] STEP 2/2: RUN make right" in text
    assert "=> ERROR [1/3]" not in text
