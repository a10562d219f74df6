"""What a build reports while it runs: steps, their output, transfers.

The engine calls a ``BuildReporter``; the CLI's implementation renders the
events on stderr. The library itself never prints.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from kanipy.fieldwise import Fieldwise
from kanipy.oci.digest import Digest
from kanipy.registry.progress import ProgressEvent


def human_bytes(size: float) -> str:
    """``size`` for people: ``134 B``, ``2.5 MB`` (here, not in the terminal view, so a
    plain log's summary does not load that view)."""
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size:.1f} GB"  # pragma: no cover - the loop returns


@dataclass(frozen=True, repr=False, eq=False)
class StepInfo(Fieldwise):
    """One instruction of one stage, as shown to a user: ``[2/3] STEP 4/9: RUN make``."""

    stage_number: int  # 1-based among the stages being built
    stage_count: int
    stage_name: str | None
    step_number: int  # 1-based within the stage
    step_count: int
    text: str  # the instruction after expansion
    line: int | None  # Dockerfile line

    @property
    def label(self) -> str:
        return f"[{self.stage_number}/{self.stage_count}] STEP {self.step_number}/{self.step_count}"


@dataclass(frozen=True, repr=False, eq=False)
class StepSummary(Fieldwise):
    step: StepInfo
    seconds: float
    layer_size: int | None  # compressed bytes; None when the step added no layer
    # The digest of the step's layer blob; None when the step added no layer.
    layer_digest: Digest | None = None
    # True when the step's layer came from the layer cache instead of running
    # the step (--cache).
    cached: bool = False


class BuildReporter(Protocol):
    def stage_started(self, number: int, count: int, name: str | None, base: str) -> None: ...

    def step_started(self, step: StepInfo) -> None: ...

    def step_output(self, step: StepInfo, line: bytes) -> None: ...

    def step_finished(self, summary: StepSummary) -> None: ...

    def transfer(self, event: ProgressEvent) -> None: ...

    def stage_stopped(self, number: int) -> None:
        """Stage ``number`` was stopped unfinished because another stage failed (stages
        built at the same time, ``--jobs``); its running step, if any, will not finish."""
        ...

    def pushed(self, reference: str, digest: str) -> None: ...

    def finished(self, summaries: list[StepSummary]) -> None: ...


class NullReporter:
    """Reports nothing; for library callers and tests that do not watch progress."""

    def stage_started(self, number: int, count: int, name: str | None, base: str) -> None:
        pass

    def step_started(self, step: StepInfo) -> None:
        pass

    def step_output(self, step: StepInfo, line: bytes) -> None:
        pass

    def step_finished(self, summary: StepSummary) -> None:
        pass

    def transfer(self, event: ProgressEvent) -> None:
        pass

    def stage_stopped(self, number: int) -> None:
        pass

    def pushed(self, reference: str, digest: str) -> None:
        pass

    def finished(self, summaries: list[StepSummary]) -> None:
        pass
