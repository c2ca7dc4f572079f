"""Looking steps up in the worklist: the protocol the cache serves, and the rules on top of it."""

from __future__ import annotations

from typing import Protocol

from gateway.worklist.item import WorklistItem


class WorklistLookup(Protocol):
    """What binding, selection and reconciliation need of the worklist cache."""

    def get(self, key: str) -> WorklistItem | None:
        """The step with this key, if cached and not expired."""
        ...

    def find(
        self, *, accession_number: str | None = None, patient_id: str | None = None
    ) -> list[WorklistItem]:
        """Steps matching every given identifier exactly (none given: none)."""
        ...


class NoSuchStepError(LookupError):
    """No cached scheduled step has the accession number (and step ID) asked for."""


class SeveralStepsError(LookupError):
    """More than one cached step matches; the operator must name the step."""


def one_step(lookup: WorklistLookup, accession: str, step: str | None) -> WorklistItem:
    """The one scheduled step with this accession number (and step ID, when given)."""
    matches = lookup.find(accession_number=accession)
    if step is not None:
        matches = [m for m in matches if m.scheduled_procedure_step_id == step]
    if not matches:
        what = f"accession number {accession}" + (f" and step {step}" if step else "")
        raise NoSuchStepError(f"no scheduled step with {what} in the worklist cache")
    if len(matches) > 1:
        steps = ", ".join(sorted(m.scheduled_procedure_step_id or "(none)" for m in matches))
        raise SeveralStepsError(
            f"{len(matches)} scheduled steps have accession number {accession}"
            f" (steps: {steps}); name the step"
        )
    return matches[0]


class EmptyWorklist:
    """A lookup that knows no step: for a gateway without [worklist], or before any refresh."""

    def get(self, key: str) -> WorklistItem | None:
        """Always None."""
        return None

    def find(
        self, *, accession_number: str | None = None, patient_id: str | None = None
    ) -> list[WorklistItem]:
        """Always empty."""
        return []
