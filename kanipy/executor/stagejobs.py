"""Building the stages of a build at the same time, as far as they allow (issue 14).

A stage reads the stages named by its ``FROM``, ``COPY --from`` and ``RUN --mount
from=`` (``Stage.depends_on``, found by planning); an image named there is no
stage. A stage starts, on a thread of its own, once the stage it is built ``FROM``
is built (a stage from an image starts at once and pulls it); a step that reads
another stage waits for that stage there (the engine's ``_wait_for_stage``), with
its job slot free meanwhile. So a final stage pulls its base and runs its first
steps while the builders it copies from still run, as BuildKit does. At most
``jobs`` stages are under way; among the stages ready at once the first in the
file starts first, and every stage only ever waits for earlier ones, so the
earliest unfinished stage can always run: no stage waits forever.

What a user sees stays that of one stage after another: the image and the step
summaries are the same (the engine orders summaries by stage), each reporter
event names its stage, and a failure is reported once. When a stage fails, the
others are told to stop (``stop``: the engine ends their running RUN steps, and
``StageEvents`` raises ``StagesStopped`` at their next step or transfer), every
thread is waited for, so that no work directory is removed under a running
step, and the first failure is raised. A signal in the main thread (Ctrl-C,
SIGTERM) stops the stages the same way and is raised after them.
"""

from __future__ import annotations

import contextvars
import logging
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING

from kanipy.errors import UsageError

if TYPE_CHECKING:  # the CLI's log formatter imports this module: keep it light
    from kanipy.dockerfile import Stage
    from kanipy.executor.progress import BuildReporter, StepInfo, StepSummary
    from kanipy.registry.progress import ProgressEvent

log = logging.getLogger(__name__)

# The number (1-based, among the stages built) of the stage whose work the current
# thread is doing; logging records carry it (the JSON log's ``stage``), so that
# lines of stages built at once can be told apart.
current_stage: contextvars.ContextVar[int | None] = contextvars.ContextVar(
    "kanipy_current_stage", default=None)


class StagesStopped(BaseException):
    """Raised in a stage's thread once the build is stopping (another stage failed).

    Not an ``Exception``, as KeyboardInterrupt is not: the handlers that turn problems
    into warnings and go on (the layer cache's, a cached layer's fetch) must let it
    through, not make a stopping stage go on uncached."""


def stage_jobs(asked: int | None) -> int:
    """How many stages may be built at once: ``--jobs``, else the CPUs this process
    may use, at least 2.

    Independent stages are mostly builders: a pull, then RUN steps that compile.
    More of them at once than there are CPUs only adds memory and disk pressure,
    while two overlap a pull with a step even on one CPU.
    """
    if asked is None:
        try:
            cpus = len(os.sched_getaffinity(0))
        except (AttributeError, OSError):
            cpus = os.cpu_count() or 1
        return max(2, cpus)
    if asked < 1:
        raise UsageError(f"--jobs {asked}: give 1 or more (1 builds the stages one after "
                         "another)")
    return asked


def start_after(stages: Sequence[Stage]) -> dict[int, int | None]:
    """For each stage (by index), the stage among ``stages`` it is built ``FROM``: it
    starts once that one is built. None: its base is an image (or scratch)."""
    built = {stage.index for stage in stages}
    return {stage.index: stage.base.index
            if not isinstance(stage.base, str) and stage.base.index in built else None
            for stage in stages}


def overlap_possible(stages: Sequence[Stage]) -> bool:
    """Whether two of ``stages`` could ever be under way at once: false for a chain,
    where each stage is built FROM the one before it (and for a single stage)."""
    after = start_after(stages)
    return any(after[stages[i].index] != stages[i - 1].index for i in range(1, len(stages)))


class StageRunner:
    """Runs ``build(number, stage)`` for each stage on threads (see the module docstring)."""

    def __init__(self, stages: Sequence[Stage], build: Callable[[int, Stage], object],
                 *, jobs: int, stop: Callable[[], None]) -> None:
        self.stages = list(stages)
        self.build = build
        self.jobs = jobs
        self.stop = stop
        self._after = start_after(self.stages)
        self._cond = threading.Condition()
        self._done: set[int] = set()
        self._active = 0  # stages under way, less those waiting in ``waiting()``
        self._threads: dict[int, threading.Thread] = {}
        self._outcomes: list[tuple[int, int, BaseException | None]] = []
        self.stopping = threading.Event()
        self.failed_stage: int | None = None  # the number of the stage that failed first

    def run(self) -> None:
        numbered = list(enumerate(self.stages, start=1))
        failure: BaseException | None = None
        stopped: StagesStopped | None = None
        try:
            while len(self._done) < len(self.stages):
                with self._cond:
                    if not self._outcomes:  # no stage starts once a failure is in
                        self._start_ready(numbered)
                        if not self._threads:  # a stage none can start: a bug
                            raise RuntimeError("no stage can start: "
                                               f"{sorted(self._after.items())}")
                        self._cond.wait()  # an outcome, or a stage waiting (a free slot)
                        continue
                    outcomes, self._outcomes = self._outcomes, []
                for number, index, error in outcomes:
                    self._threads.pop(index).join()
                    if error is None:
                        self._done.add(index)
                    elif isinstance(error, StagesStopped):
                        # Stopped because of another stage's failure, which is what the
                        # user hears of (it may arrive just after this).
                        stopped = stopped or error
                    elif failure is None:
                        failure, self.failed_stage = error, number
                if failure is None and stopped is not None and not self._threads:
                    failure = stopped
                if failure is not None:
                    break
        except BaseException:
            # A signal in the main thread (the CLI raises it here): stop every stage,
            # wait for them, then let it go on.
            self._stop_all()
            raise
        if failure is not None:
            self._stop_all()
            raise failure

    def _start_ready(self, numbered: list[tuple[int, Stage]]) -> None:
        for number, stage in numbered:
            if self._active >= self.jobs:
                return
            if stage.index in self._done or stage.index in self._threads:
                continue
            after = self._after[stage.index]
            if after is not None and after not in self._done:
                continue
            thread = threading.Thread(target=self._work, args=(number, stage),
                                      name=f"kanipy-stage-{number}", daemon=True)
            self._threads[stage.index] = thread
            self._active += 1
            thread.start()

    def _work(self, number: int, stage: Stage) -> None:
        error: BaseException | None = None
        try:
            self.build(number, stage)
        except BaseException as exc:  # handed to the main thread  # noqa: BLE001
            error = exc
        with self._cond:
            self._active -= 1
            self._outcomes.append((number, stage.index, error))
            self._cond.notify_all()

    def _stop_all(self) -> None:
        """Tell every stage under way to stop and wait for each (a second signal meanwhile
        is ignored by the CLI; one that is not still lets the threads end first)."""
        self.stopping.set()
        self.stop()
        interrupted: BaseException | None = None
        for thread in list(self._threads.values()):
            while thread.is_alive():
                try:
                    thread.join()
                except BaseException as exc:  # noqa: BLE001 - raised once they ended
                    interrupted = interrupted or exc
        self._threads.clear()
        if interrupted is not None:
            raise interrupted

    @contextmanager
    def waiting(self) -> Iterator[None]:
        """A stage's thread waits for another stage: its job slot is free meanwhile,
        so that the stage it waits for can start."""
        with self._cond:
            self._active -= 1
            self._cond.notify_all()
        try:
            yield
        finally:
            with self._cond:
                self._active += 1


class StageEvents:
    """The reporter as the stages' threads see it: one call at a time, and every call a
    point where a stopping build stops the thread (``StagesStopped``).

    It remembers what each stage has under way, so that when a stage fails the
    stages stopped because of it are reported as stopped (``stopped``), and the
    reporter's remaining running step is the one that failed.
    """

    def __init__(self, reporter: BuildReporter) -> None:
        self.reporter = reporter
        self.stopping = threading.Event()
        self._lock = threading.RLock()
        self._running: dict[int, StepInfo | None] = {}

    def _check(self) -> None:
        if self.stopping.is_set():
            raise StagesStopped("the build is stopping: another stage failed")

    def stage_started(self, number: int, count: int, name: str | None, base: str) -> None:
        self._check()
        with self._lock:
            self._running[number] = None
            self.reporter.stage_started(number, count, name, base)

    def step_started(self, step: StepInfo) -> None:
        self._check()
        with self._lock:
            self._running[step.stage_number] = step
            self.reporter.step_started(step)

    def step_output(self, step: StepInfo, line: bytes) -> None:
        with self._lock:
            self.reporter.step_output(step, line)

    def step_finished(self, summary: StepSummary) -> None:
        with self._lock:
            self._running.pop(summary.step.stage_number, None)
            self.reporter.step_finished(summary)

    def transfer(self, event: ProgressEvent) -> None:
        self._check()
        with self._lock:
            self.reporter.transfer(event)

    def pushed(self, reference: str, digest: str) -> None:
        with self._lock:
            self.reporter.pushed(reference, digest)

    def finished(self, summaries: list[StepSummary]) -> None:
        with self._lock:
            self.reporter.finished(summaries)

    def stage_stopped(self, number: int) -> None:
        with self._lock:
            self._running.pop(number, None)
            # A reporter written before stages ran at once may not know the event.
            report = getattr(self.reporter, "stage_stopped", None)
            if report is not None:
                report(number)

    def stopped(self, failed: int | None) -> None:
        """Report every stage still under way, but the one that failed, as stopped."""
        with self._lock:
            for number in list(self._running):
                if number != failed:
                    self.stage_stopped(number)


__all__ = ["StageEvents", "StageRunner", "StagesStopped", "current_stage",
           "overlap_possible", "stage_jobs", "start_after"]
