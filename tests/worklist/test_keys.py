"""The key rule (gateway/worklist/keys.py): every row of its table, one case or more a row.

Worklist for the cases: Jane (P-JANE) has accession ACC1 with two steps (S1, S1b) and ACC2;
John (P-JOHN) has ACC3; the RIS gave ACC9 to both Jane and Mia (P-MIA); P-NONE has no step.
"""

from __future__ import annotations

import pytest

from gateway.worklist.item import WorklistItem
from gateway.worklist.keys import KeyJudgement, KeyVerdict, judge_keys
from tests.worklist.factory import make_item

JANE_1 = make_item(patient_id="P-JANE", accession_number="ACC1", step_id="S1")
JANE_1B = make_item(patient_id="P-JANE", accession_number="ACC1", step_id="S1b")
JANE_2 = make_item(patient_id="P-JANE", accession_number="ACC2", step_id="S2")
JOHN_3 = make_item(patient_id="P-JOHN", accession_number="ACC3", step_id="S3")
JANE_9 = make_item(patient_id="P-JANE", accession_number="ACC9", step_id="S9")
MIA_9 = make_item(patient_id="P-MIA", accession_number="ACC9", step_id="S9m")
ORPHAN = make_item(patient_id="", accession_number="ACC5", step_id="S5")
WORKLIST = (JANE_1, JANE_1B, JANE_2, JOHN_3, JANE_9, MIA_9, ORPHAN)


def judge(accession: str | None, patient_id: str | None) -> KeyJudgement:
    """judge_keys with the lookups done as the binder does them (each key on its own)."""
    by_accession = [s for s in WORKLIST if accession and s.accession_number == accession]
    by_patient = [s for s in WORKLIST if patient_id and s.patient_id == patient_id]
    return judge_keys(accession, patient_id, by_accession, by_patient)


@pytest.mark.parametrize(
    ("accession", "patient_id", "verdict", "steps"),
    [
        # no keys: the worklist is not consulted
        (None, None, KeyVerdict.NO_KEYS, ()),
        ("", "", KeyVerdict.NO_KEYS, ()),
        # an accession whose steps are for several patients: contradiction, with or without P
        ("ACC9", None, KeyVerdict.CONTRADICTION, (JANE_9, MIA_9)),
        ("ACC9", "P-JANE", KeyVerdict.CONTRADICTION, (JANE_9, MIA_9)),
        # accession and patient ID of different patients (P with steps of its own, or none)
        ("ACC1", "P-JOHN", KeyVerdict.CONTRADICTION, (JANE_1, JANE_1B)),
        ("ACC3", "P-JANE", KeyVerdict.CONTRADICTION, (JOHN_3,)),
        ("ACC3", "P-NONE", KeyVerdict.CONTRADICTION, (JOHN_3,)),
        ("ACC5", "P-JANE", KeyVerdict.CONTRADICTION, (ORPHAN,)),
        # accession (and the patient ID agreeing): one step, several, none
        ("ACC3", None, KeyVerdict.MATCH, (JOHN_3,)),
        ("ACC3", "P-JOHN", KeyVerdict.MATCH, (JOHN_3,)),
        ("ACC1", None, KeyVerdict.AMBIGUOUS, (JANE_1, JANE_1B)),
        ("ACC1", "P-JANE", KeyVerdict.AMBIGUOUS, (JANE_1, JANE_1B)),
        ("ACC7", None, KeyVerdict.UNMATCHED, ()),
        ("ACC7", "P-JOHN", KeyVerdict.UNMATCHED, ()),  # never bound to John's other order
        ("ACC7", "P-NONE", KeyVerdict.UNMATCHED, ()),
        # patient ID alone
        (None, "P-JOHN", KeyVerdict.MATCH, (JOHN_3,)),
        (None, "P-JANE", KeyVerdict.AMBIGUOUS, (JANE_1, JANE_1B, JANE_2, JANE_9)),
        (None, "P-NONE", KeyVerdict.UNMATCHED, ()),
    ],
)
def test_every_row_of_the_table(
    accession: str | None,
    patient_id: str | None,
    verdict: KeyVerdict,
    steps: tuple[WorklistItem, ...],
) -> None:
    judgement = judge(accession, patient_id)
    assert judgement.verdict is verdict
    assert judgement.steps == steps
    assert judgement.step == (steps[0] if verdict is KeyVerdict.MATCH else None)


def test_a_contradiction_names_both_patients_and_the_other_patients_orders() -> None:
    assert judge("ACC3", "P-JANE").detail("received object") == (
        "accession number ACC3 is scheduled for patient ID P-JOHN;"
        " the received object says patient ID P-JANE,"
        " scheduled for accession number ACC1, ACC2, ACC9"
    )


def test_a_contradiction_says_when_the_objects_patient_has_no_step() -> None:
    assert judge("ACC3", "P-NONE").detail("device message") == (
        "accession number ACC3 is scheduled for patient ID P-JOHN;"
        " the device message says patient ID P-NONE, who has no scheduled step"
    )


def test_an_accession_of_several_patients_names_them_all() -> None:
    judgement = judge("ACC9", None)
    assert judgement.scheduled_patients == ("P-JANE", "P-MIA")
    assert judgement.detail("file name") == (
        "accession number ACC9 is scheduled for patient IDs P-JANE, P-MIA"
    )


def test_a_step_without_patient_id_is_named_so() -> None:
    assert judge("ACC5", "P-JANE").scheduled_patients == ("(none)",)


def test_ambiguity_lists_the_candidate_steps() -> None:
    assert judge("ACC1", None).detail("file name") == (
        "accession number ACC1 has 2 scheduled steps: ACC1 (step S1), ACC1 (step S1b)"
    )


def test_match_and_unmatched_need_no_detail() -> None:
    assert judge("ACC3", "P-JOHN").detail("file name") == ""
    assert judge("ACC7", None).detail("file name") == ""
