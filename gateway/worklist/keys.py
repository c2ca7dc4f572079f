"""Which scheduled step an object's own keys name: pure, table-driven (docs/binding.md).

An object carries at most two keys into the worklist: an Accession Number and a Patient ID,
from one carrier (a dropped file's name, its sidecar, a device message, a received C-STORE).
Each key is looked up on its own, so that keys naming different patients are seen as the
contradiction they are; a joint lookup would only find "no step" and let the object go on as
unmatched. The caller does the lookups (``by_accession``: the cached steps with the object's
accession number; ``by_patient``: with its patient ID) and turns the verdict into a binding.

The table, first matching row wins ("A's patients": the patient IDs of the steps with A):

=====  ======  ========================================  =============  ========================
acc.   pat.    the worklist                              verdict        why
=====  ======  ========================================  =============  ========================
-      -       (not consulted)                           NO_KEYS        nothing to look up
A      any     A's steps are for two or more patients    CONTRADICTION  the RIS gives one order
                                                                        to several patients: no
                                                                        step can be trusted
A      P       A's steps are for a patient other than P  CONTRADICTION  the object's order is
                                                                        another patient's (P may
                                                                        have steps of its own or
                                                                        none: held either way)
A      any     one step has A                            MATCH          that step
A      any     several steps have A                      AMBIGUOUS      the operator names one
A      any     no step has A                             UNMATCHED      an order the cache does
                                                                        not hold (another day's,
                                                                        another RIS's); never
                                                                        bound to P's other steps
-      P       one step has P                            MATCH          that step
-      P       several steps have P                      AMBIGUOUS      the operator names one
-      P       no step has P                             UNMATCHED      not scheduled here
=====  ======  ========================================  =============  ========================

Keys compare exactly (as :meth:`WorklistLookup.find` does); names, birth date and sex are not
keys and are compared by the binder against the chosen step only. A step with an empty Patient
ID is "for patient (none)": an object that gives a patient ID contradicts it.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass

from gateway.worklist.item import WorklistItem

NO_PATIENT_ID = "(none)"  # how a step without a Patient ID is named in a reason


class KeyVerdict(enum.Enum):
    """What the object's keys say about the worklist (one row of the module's table)."""

    NO_KEYS = "no keys"
    MATCH = "match"
    AMBIGUOUS = "ambiguous"
    UNMATCHED = "unmatched"
    CONTRADICTION = "contradiction"


@dataclass(frozen=True)
class KeyJudgement:
    """The verdict with the facts an operator needs to act on it.

    ``steps``: MATCH the one step, AMBIGUOUS the candidates, CONTRADICTION the accession's steps.
    ``scheduled_patients``: CONTRADICTION, the patient IDs the worklist gives the accession.
    ``patients_accessions``: CONTRADICTION, the accession numbers scheduled for the object's
    patient ID (empty: that patient has no step).
    """

    verdict: KeyVerdict
    accession_number: str | None
    patient_id: str | None
    steps: tuple[WorklistItem, ...] = ()
    scheduled_patients: tuple[str, ...] = ()
    patients_accessions: tuple[str, ...] = ()

    @property
    def step(self) -> WorklistItem | None:
        """The matched step (MATCH only)."""
        return self.steps[0] if self.verdict is KeyVerdict.MATCH else None

    def detail(self, carrier: str) -> str:
        """The facts in one sentence, IDs included (for the operator's queue, never for logs).

        ``carrier`` names where the keys came from ("file name", "received object", ...).
        """
        if self.verdict is KeyVerdict.CONTRADICTION:
            scheduled = ", ".join(self.scheduled_patients)
            text = f"accession number {self.accession_number} is scheduled for patient ID"
            text += f"s {scheduled}" if len(self.scheduled_patients) > 1 else f" {scheduled}"
            if self.patient_id is None:
                return text
            text += f"; the {carrier} says patient ID {self.patient_id}"
            if self.patients_accessions:
                text += ", scheduled for accession number " + ", ".join(self.patients_accessions)
            else:
                text += ", who has no scheduled step"
            return text
        if self.verdict is KeyVerdict.AMBIGUOUS:
            steps = ", ".join(_step_name(s) for s in self.steps)
            return f"{_keys(self)} has {len(self.steps)} scheduled steps: {steps}"
        return ""


def judge_keys(
    accession_number: str | None,
    patient_id: str | None,
    by_accession: Sequence[WorklistItem],
    by_patient: Sequence[WorklistItem],
) -> KeyJudgement:
    """The row of the module's table that the object's keys and their lookups fall in."""
    acc, pid = accession_number or None, patient_id or None
    if acc is None and pid is None:
        return KeyJudgement(KeyVerdict.NO_KEYS, None, None)
    if acc is None:
        return _by_count(KeyJudgement(KeyVerdict.UNMATCHED, None, pid), tuple(by_patient))
    steps = tuple(by_accession)
    patients = tuple(sorted({s.patient_id or NO_PATIENT_ID for s in steps}))
    if len(patients) > 1 or (pid is not None and steps and patients != (pid,)):
        others = sorted({s.accession_number for s in by_patient if s.accession_number != acc})
        return KeyJudgement(
            KeyVerdict.CONTRADICTION, acc, pid, steps, patients, tuple(a for a in others if a)
        )
    return _by_count(KeyJudgement(KeyVerdict.UNMATCHED, acc, pid), steps)


def _by_count(base: KeyJudgement, steps: tuple[WorklistItem, ...]) -> KeyJudgement:
    if not steps:
        return base
    verdict = KeyVerdict.MATCH if len(steps) == 1 else KeyVerdict.AMBIGUOUS
    return KeyJudgement(verdict, base.accession_number, base.patient_id, steps)


def _keys(judgement: KeyJudgement) -> str:
    if judgement.accession_number is not None:
        return f"accession number {judgement.accession_number}"
    return f"patient ID {judgement.patient_id}"


def _step_name(step: WorklistItem) -> str:
    accession = step.accession_number or "(no accession number)"
    return f"{accession} (step {step.scheduled_procedure_step_id or '(no ID)'})"
