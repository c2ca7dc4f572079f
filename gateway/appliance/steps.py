"""Boot steps as data: a name, whether it runs once or every boot, and a function.

The rules:

* steps run in list order; each returns a :class:`StepResult` (outcomes are data);
* a **once** step that returns DONE or UNCHANGED gets a marker
  ``<markers>/<name>.done``, written (durably) only after the step returned, that is after its
  effect is durable; at later boots a step with a marker is SKIPPED. A power cut before the
  marker means the step runs again, so every step must converge when re-run on what a cut left
  (each step's docstring says how it does);
* an **every-boot** step has no marker: it looks at the box as it is and converges on it each
  time (the console text, files dropped on the card, the setup token's state);
* ATTENTION is a result that needs a person (a refused file, a card that cannot be grown); it
  gets no marker, so the step is looked at again at the next boot;
* a step that raises an ``Exception``, or whose marker cannot be written, is FAILED (the
  message kept), gets no marker, and the next steps still run: a card that cannot be grown
  must not keep the setup token from the console.
  ``BaseException``s that are not ``Exception`` (KeyboardInterrupt, SystemExit, the tests'
  simulated power cut) stop everything, as a power cut would.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Generic, TypeVar

from gateway.appliance.files import ensure_dir, write_file

C = TypeVar("C")


class StepStatus(StrEnum):
    """What became of one step in this run."""

    DONE = "done"  # it changed something now
    UNCHANGED = "unchanged"  # the box already was as the step wants it
    SKIPPED = "skipped"  # a once step completed at an earlier boot (its marker is there)
    ATTENTION = "attention"  # done what it could; a person must fix something (details say what)
    FAILED = "failed"  # it raised; tried again at the next boot


NEEDS_A_PERSON = frozenset({StepStatus.ATTENTION, StepStatus.FAILED})


@dataclass(frozen=True)
class StepResult:
    """One step's outcome: a one-line summary, and details for the report."""

    status: StepStatus
    summary: str
    details: tuple[str, ...] = ()


@dataclass(frozen=True)
class Step(Generic[C]):
    """One boot step over a context of type ``C``."""

    name: str
    once: bool
    run: Callable[[C], StepResult]


@dataclass(frozen=True)
class StepRecord:
    """A step's name with its result."""

    name: str
    result: StepResult


def marker_path(markers: Path, name: str) -> Path:
    """The marker of a completed once step."""
    return markers / f"{name}.done"


def run_steps(steps: Sequence[Step[C]], context: C, markers: Path) -> list[StepRecord]:
    """Run ``steps`` on ``context`` by the rules above; the records in order."""
    records: list[StepRecord] = []
    for step in steps:
        marker = marker_path(markers, step.name)
        if step.once and marker.exists():
            records.append(
                StepRecord(
                    step.name, StepResult(StepStatus.SKIPPED, "completed at an earlier boot")
                )
            )
            continue
        try:
            result = step.run(context)
        except Exception as exc:  # noqa: BLE001 - the outcome is data: reported, tried next boot
            result = StepResult(StepStatus.FAILED, f"{type(exc).__name__}: {exc}")
        if step.once and result.status in (StepStatus.DONE, StepStatus.UNCHANGED):
            try:
                ensure_dir(markers, 0o755)
                write_file(marker, f"{result.summary}\n".encode(), 0o644)
            except OSError as exc:
                # The effect is there but not known to be: the step runs again next boot (it
                # converges), and this boot says why instead of stopping the later steps.
                result = StepResult(
                    StepStatus.FAILED, f"{result.summary}; its marker was not written: {exc}"
                )
        records.append(StepRecord(step.name, result))
    return records
