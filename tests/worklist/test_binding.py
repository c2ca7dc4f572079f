"""The binding rules (docs/binding.md), one test a rule, against an in-memory worklist."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest

from gateway.identity import PatientIdentity
from gateway.ingest.sidecar import Sidecar
from gateway.worklist.binding import (
    DETAIL_MARK,
    HELD_NO_IDENTITY,
    Binder,
    Binding,
    item_identity,
    loggable_reason,
)
from gateway.worklist.item import WorklistItem
from gateway.worklist.selection import Selection
from tests.worklist.factory import make_item

JANE_US = make_item(
    patient_id="P-JANE", patient_name="Doe^Jane", accession_number="ACC1", step_id="S1"
)
JANE_CT = make_item(
    patient_id="P-JANE",
    patient_name="Doe^Jane",
    accession_number="ACC2",
    study_instance_uid="1.2.3.2",
    step_id="S2",
)
JOHN = make_item(
    patient_id="P-JOHN",
    patient_name="Roe^John",
    accession_number="ACC3",
    study_instance_uid="1.2.3.3",
    step_id="S3",
    birth_date="19700202",
    sex="M",
)


@dataclass
class FakeLookup:
    """The worklist cache's lookups over a list; exact matches, like WorklistCache.find."""

    steps: list[WorklistItem] = field(default_factory=list)

    def find(
        self, *, accession_number: str | None = None, patient_id: str | None = None
    ) -> list[WorklistItem]:
        if not accession_number and not patient_id:
            return []
        return [
            s
            for s in self.steps
            if (not accession_number or s.accession_number == accession_number)
            and (not patient_id or s.patient_id == patient_id)
        ]

    def get(self, key: str) -> WorklistItem | None:
        return next((s for s in self.steps if s.key == key), None)

    def items(self) -> list[WorklistItem]:
        return list(self.steps)


@dataclass
class FakeSelection:
    """A room selection that is whatever the test says."""

    selected: WorklistItem | None = None

    def current(self) -> Selection | None:
        if self.selected is None:
            return None
        return Selection(self.selected.key, self.selected.accession_number, 0.0, "cli:test")


def binder(
    *steps: WorklistItem, selected: WorklistItem | None = None, require_match: bool = True
) -> Binder:
    return Binder(FakeLookup(list(steps)), FakeSelection(selected), require_match)


def sidecar(**values: str) -> Sidecar:
    return Sidecar(Path("x.jpg.json"), PatientIdentity(**values))


def name(**values: str) -> PatientIdentity:
    return PatientIdentity(**values)


SECRETS = ("P-JANE", "P-JOHN", "Doe", "Roe", "ACC1", "ACC2", "ACC3", "P-NEW", "19700202")


def assert_held(result: Binding, starts: str) -> None:
    """Held with a reason starting so; what logs get of it (its summary) names no value.

    The queue's reason may go on to name the IDs the operator needs (after DETAIL_MARK).
    """
    assert result.item is None
    assert result.source == "none"
    assert result.held_reason is not None
    assert result.held_reason.startswith(starts), result.held_reason
    logged = loggable_reason(result.held_reason)
    assert not any(s in logged for s in SECRETS), logged


# --- (a) the selected procedure ---------------------------------------------------------------


def test_selected_procedure_binds_a_file_without_identifiers() -> None:
    result = binder(JANE_US, JOHN, selected=JANE_US).bind(name(), None)
    assert (result.item, result.source, result.held_reason) == (JANE_US, "selection", None)
    assert result.identity == item_identity(JANE_US)


def test_selection_wins_over_a_file_name_patient_with_two_steps() -> None:
    result = binder(JANE_US, JANE_CT, selected=JANE_CT).bind(name(patient_id="P-JANE"), None)
    assert (result.item, result.source) == (JANE_CT, "selection")


def test_file_name_patient_other_than_the_selected_one_is_a_conflict() -> None:
    result = binder(JANE_US, JOHN, selected=JANE_US).bind(name(patient_id="P-JOHN"), None)
    assert_held(result, "conflict: the file name's patient ID is not the selected procedure's")


def test_sidecar_accession_of_another_order_than_the_selected_one_is_a_conflict() -> None:
    result = binder(JANE_US, JANE_CT, selected=JANE_US).bind(
        name(), sidecar(accession_number="ACC2")
    )
    assert_held(result, "conflict: the sidecar's accession number")


def test_sidecar_birth_date_other_than_the_scheduled_patients_is_a_conflict() -> None:
    result = binder(JOHN, selected=JOHN).bind(name(), sidecar(birth_date="19700203"))
    assert_held(result, "conflict: the sidecar's birth date")


def test_names_are_not_compared() -> None:
    result = binder(JANE_US, selected=JANE_US).bind(name(patient_name="DOE^JANE"), None)
    assert result.item == JANE_US
    assert result.identity.patient_name == "Doe^Jane"  # the worklist's spelling is written


def test_selection_whose_step_left_the_cache_gives_way_to_the_file_name() -> None:
    gone = make_item(accession_number="OLD", step_id="S9", study_instance_uid="1.2.3.9")
    result = binder(JOHN, selected=gone).bind(name(accession_number="ACC3"), None)
    assert (result.item, result.source) == (JOHN, "filename")


def test_selection_whose_step_left_the_cache_is_named_in_the_held_reason() -> None:
    gone = make_item(accession_number="OLD", step_id="S9", study_instance_uid="1.2.3.9")
    result = binder(JOHN, selected=gone).bind(name(), None)
    assert_held(result, "no worklist match: the selected procedure is no longer in the worklist")


# --- (b) the file name looked up ----------------------------------------------------------------


def test_file_name_accession_binds_its_one_step() -> None:
    result = binder(JANE_US, JANE_CT, JOHN).bind(name(accession_number="ACC2"), None)
    assert (result.item, result.source, result.held_reason) == (JANE_CT, "filename", None)


def test_file_name_patient_id_with_one_step_binds_it() -> None:
    result = binder(JANE_US, JOHN).bind(name(patient_id="P-JOHN"), None)
    assert (result.item, result.source) == (JOHN, "filename")
    assert (result.identity.birth_date, result.identity.sex) == ("19700202", "M")


def test_file_name_patient_id_with_two_steps_is_ambiguous() -> None:
    result = binder(JANE_US, JANE_CT).bind(name(patient_id="P-JANE"), None)
    assert_held(result, "ambiguous: 2 scheduled steps match the file name's identifiers")


def test_file_name_accession_of_one_patient_and_patient_id_of_another_is_a_conflict() -> None:
    # Issue 10 A3: this was "no worklist match" (one joint lookup found nothing), and with
    # require_match off the object went on with the file name's identity.
    result = binder(JANE_US, JOHN).bind(name(patient_id="P-JOHN", accession_number="ACC1"), None)
    assert_held(result, "conflict: the file name's accession number is scheduled for another")
    assert result.held_reason == (
        "conflict: the file name's accession number is scheduled for another patient"
        + DETAIL_MARK
        + "accession number ACC1 is scheduled for patient ID P-JANE;"
        " the file name says patient ID P-JOHN, scheduled for accession number ACC3"
    )


def test_accession_with_two_steps_is_ambiguous() -> None:
    second_step = make_item(patient_id="P-JANE", accession_number="ACC1", step_id="S1b")
    result = binder(JANE_US, second_step).bind(name(accession_number="ACC1"), None)
    assert_held(result, "ambiguous: 2 scheduled steps")


def test_unknown_accession_is_held_when_a_match_is_required() -> None:
    result = binder(JANE_US).bind(name(patient_id="P-NEW", accession_number="ACC9"), None)
    assert_held(result, "no worklist match")
    # The held object keeps what the file name said, for the operator to reconcile.
    assert result.identity == name(patient_id="P-NEW", accession_number="ACC9")


def test_no_identifiers_anywhere_is_held_when_a_match_is_required() -> None:
    result = binder(JANE_US).bind(name(patient_name="Doe^Jane"), None)
    assert_held(result, "no worklist match: no procedure selected and no identifiers")


# --- (c) the sidecar ---------------------------------------------------------------------------


def test_sidecar_accession_binds_when_the_file_name_has_nothing() -> None:
    result = binder(JANE_US, JOHN).bind(name(), sidecar(accession_number="ACC3"))
    assert (result.item, result.source) == (JOHN, "sidecar")


def test_sidecar_resolves_an_ambiguous_file_name_it_agrees_with() -> None:
    result = binder(JANE_US, JANE_CT).bind(
        name(patient_id="P-JANE"), sidecar(accession_number="ACC2")
    )
    assert (result.item, result.source) == (JANE_CT, "sidecar")


def test_file_name_match_and_sidecar_of_another_patient_is_a_conflict() -> None:
    result = binder(JANE_US, JOHN).bind(name(accession_number="ACC1"), sidecar(patient_id="P-JOHN"))
    assert_held(result, "conflict: the sidecar's patient ID is not the file name's")


def test_malformed_sidecar_holds_the_object() -> None:
    broken = Sidecar(Path("x.jpg.meta"), PatientIdentity(), "sidecar line 2 is not key = value")
    result = binder(JANE_US, selected=JANE_US).bind(name(), broken)
    assert_held(result, "sidecar malformed: sidecar line 2 is not key = value")


# --- require_match = false -------------------------------------------------------------------


def test_without_required_match_an_unknown_patient_is_sent_with_the_file_name_identity() -> None:
    result = binder(JANE_US, require_match=False).bind(
        name(patient_id="P-NEW", patient_name="New^Pat"), sidecar(birth_date="20000101")
    )
    assert (result.item, result.held_reason, result.source) == (None, None, "file-name identity")
    assert result.identity == PatientIdentity(
        patient_id="P-NEW", patient_name="New^Pat", birth_date="20000101"
    )


def test_without_required_match_ambiguity_is_still_held() -> None:
    result = binder(JANE_US, JANE_CT, require_match=False).bind(name(patient_id="P-JANE"), None)
    assert_held(result, "ambiguous")


def test_without_required_match_a_conflict_is_still_held() -> None:
    result = binder(JANE_US, JOHN, selected=JANE_US, require_match=False).bind(
        name(patient_id="P-JOHN"), None
    )
    assert_held(result, "conflict")


def test_without_required_match_no_patient_id_is_held() -> None:
    result = binder(JANE_US, require_match=False).bind(name(patient_name="New^Pat"), None)
    assert_held(result, HELD_NO_IDENTITY)


# --- no [worklist] ---------------------------------------------------------------------------


def test_without_worklist_the_file_name_identity_is_used() -> None:
    result = Binder(None, None, require_match=True).bind(name(patient_id="P-NEW"), None)
    assert (result.item, result.held_reason, result.source) == (None, None, "file-name identity")


def test_without_worklist_no_patient_id_is_held() -> None:
    result = Binder(None, None, require_match=True).bind(name(accession_number="ACC1"), None)
    assert_held(result, HELD_NO_IDENTITY)


def test_without_worklist_a_sidecar_gives_the_identity() -> None:
    result = Binder(None, None, require_match=True).bind(name(), sidecar(patient_id="P-NEW"))
    assert (result.identity.patient_id, result.source) == ("P-NEW", "sidecar")


@pytest.mark.parametrize(
    ("file_values", "side_values", "field_label"),
    [
        ({"patient_id": "P-NEW"}, {"patient_id": "P-OTHER"}, "patient ID"),
        ({"patient_id": "P-NEW", "accession_number": "A"}, {"accession_number": "B"}, "accession"),
    ],
)
def test_without_worklist_file_name_and_sidecar_disagreeing_is_a_conflict(
    file_values: dict[str, str], side_values: dict[str, str], field_label: str
) -> None:
    result = Binder(None, None, require_match=False).bind(
        name(**file_values), sidecar(**side_values)
    )
    assert_held(result, f"conflict: the file name and the sidecar give different {field_label}")
    assert result.identity.patient_id == "P-NEW"  # the file name's values are kept


def test_binding_from_identity_is_the_no_worklist_rule() -> None:
    assert Binding.from_identity(name(patient_id="P-NEW")).held_reason is None
    assert Binding.from_identity(name()).held_reason == HELD_NO_IDENTITY


# --- keys of one source naming different patients (issue 10 A3) -----------------------------

CARRIERS = ("file name", "device message", "received object")


@pytest.mark.parametrize("carrier", CARRIERS)
@pytest.mark.parametrize("require_match", [True, False])
def test_accession_of_one_step_and_patient_id_of_another_hold_for_every_carrier(
    carrier: str, require_match: bool
) -> None:
    result = binder(JANE_US, JOHN, require_match=require_match).bind(
        name(accession_number="ACC1", patient_id="P-JOHN"), None, carrier=carrier
    )
    assert_held(result, f"conflict: the {carrier}'s accession number is scheduled for another")
    assert result.held_reason is not None
    assert result.held_reason.endswith(
        f"accession number ACC1 is scheduled for patient ID P-JANE;"
        f" the {carrier} says patient ID P-JOHN, scheduled for accession number ACC3"
    )
    # The held object keeps what its carrier said, for the operator to reconcile.
    assert result.identity == name(accession_number="ACC1", patient_id="P-JOHN")


@pytest.mark.parametrize("carrier", CARRIERS)
def test_accession_of_a_step_and_a_patient_id_with_no_step_hold(carrier: str) -> None:
    # The case: with require_match off (as for C-STOREs) this was sent unchanged.
    result = binder(JANE_US, JOHN, require_match=False).bind(
        name(accession_number="ACC3", patient_id="P-NEW"), None, carrier=carrier
    )
    assert_held(result, f"conflict: the {carrier}'s accession number is scheduled for another")
    assert result.held_reason is not None
    assert result.held_reason.endswith(
        f"ACC3 is scheduled for patient ID P-JOHN; the {carrier} says patient ID P-NEW,"
        " who has no scheduled step"
    )


def test_a_sidecar_naming_two_patients_holds_even_when_the_file_name_matches() -> None:
    result = binder(JANE_US, JANE_CT, JOHN).bind(
        name(accession_number="ACC3"), sidecar(accession_number="ACC1", patient_id="P-JOHN")
    )
    assert_held(result, "conflict: the sidecar's accession number is scheduled for another")


def test_a_selection_does_not_excuse_keys_that_contradict_each_other() -> None:
    result = binder(JANE_US, JOHN, selected=JANE_US).bind(
        name(accession_number="ACC1", patient_id="P-JOHN"), None
    )
    assert_held(result, "conflict: the file name's accession number is scheduled for another")


def test_a_selection_with_a_carrier_of_another_order_names_both_orders() -> None:
    result = binder(JANE_US, JOHN, selected=JANE_US).bind(
        name(accession_number="ACC3"), None, carrier="device message"
    )
    assert_held(
        result, "conflict: the device message's accession number is not the selected procedure's"
    )
    assert result.held_reason is not None
    assert result.held_reason.endswith(
        "the step chosen by the selected procedure is accession number ACC1 for patient ID"
        " P-JANE; the device message says accession number ACC3"
    )


def test_an_accession_the_worklist_does_not_hold_is_never_bound_to_the_patients_other_step() -> (
    None
):
    keys = name(accession_number="ACC9", patient_id="P-JOHN")
    loose = binder(JANE_US, JOHN, require_match=False).bind(keys, None, carrier="received object")
    assert (loose.item, loose.held_reason, loose.identity) == (None, None, keys)
    strict = binder(JANE_US, JOHN).bind(keys, None, carrier="received object")
    assert_held(strict, "no worklist match: no scheduled step matches the received object's")


def test_an_accession_narrows_a_patient_with_several_steps() -> None:
    result = binder(JANE_US, JANE_CT).bind(
        name(accession_number="ACC2", patient_id="P-JANE"), None, carrier="received object"
    )
    assert (result.item, result.source) == (JANE_CT, "filename")


def test_ambiguity_names_the_candidate_steps_for_the_operator() -> None:
    result = binder(JANE_US, JANE_CT).bind(name(patient_id="P-JANE"), None)
    assert result.held_reason == (
        "ambiguous: 2 scheduled steps match the file name's identifiers"
        + DETAIL_MARK
        + "patient ID P-JANE has 2 scheduled steps: ACC1 (step S1), ACC2 (step S2)"
    )


def test_logs_get_the_summary_of_a_reason() -> None:
    assert loggable_reason("conflict: x" + DETAIL_MARK + "patient ID P-JANE") == "conflict: x"
    assert loggable_reason(HELD_NO_IDENTITY) == HELD_NO_IDENTITY
    assert loggable_reason(None) == ""
