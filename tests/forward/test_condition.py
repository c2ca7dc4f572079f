"""condition_after follows the table in its docstring; the reminder schedule is bounded."""

from __future__ import annotations

import itertools

import pytest

from gateway.forward.condition import (
    Condition,
    LaneStatus,
    ReminderSchedule,
    condition_after,
    describe,
)
from gateway.forward.outcome import FailureClass, OutcomeKind, SendOutcome

CT = "1.2.840.10008.5.1.4.1.1.2"
SC = "1.2.840.10008.5.1.4.1.1.7"
PDF = "1.2.840.10008.5.1.4.1.1.104.1"


def no_context(accepted: frozenset[str] | None) -> SendOutcome:
    return SendOutcome(
        OutcomeKind.REFUSED,
        "no presentation context",
        FailureClass.NO_PRESENTATION_CONTEXT,
        accepted_sop_classes=accepted,
    )


@pytest.mark.parametrize(
    "failure",
    [
        FailureClass.CONNECTION_REFUSED,
        FailureClass.TIMEOUT,
        FailureClass.TLS,
        FailureClass.ASSOCIATION_REJECTED,
        FailureClass.ASSOCIATION_ABORTED,
    ],
)
def test_connection_failures_make_the_destination_unreachable(failure: FailureClass) -> None:
    outcome = SendOutcome(OutcomeKind.RETRY, "down", failure)
    assert condition_after(outcome, CT, set()) is Condition.UNREACHABLE


def test_a_permanent_rejection_is_its_own_condition_not_unreachable() -> None:
    # Issue 11 item 15: "calling AE title not recognised" showed as unreachable, for ever.
    outcome = SendOutcome(
        OutcomeKind.RETRY, "PACS rejected our AE title", FailureClass.ASSOCIATION_REJECTED_PERMANENT
    )
    assert condition_after(outcome, CT, {CT}) is Condition.REJECTED
    status = LaneStatus("pacs", Condition.REJECTED, "PACS rejected our AE title", 0.0, 2, 700.0)
    assert describe(status, 100.0) == (
        "pacs: rejected by the PACS, 2 attempts, next in 600 s (PACS rejected our AE title)"
    )


def test_out_of_resources_is_the_destinations_whatever_the_outcome_kind() -> None:
    for kind in (OutcomeKind.RETRY, OutcomeKind.REFUSED):
        outcome = SendOutcome(kind, "full", FailureClass.OUT_OF_RESOURCES, 0xA700)
        assert condition_after(outcome, CT, {CT}) is Condition.OUT_OF_RESOURCES


@pytest.mark.parametrize(
    "outcome",
    [
        SendOutcome(OutcomeKind.DELIVERED, "", None, 0),
        SendOutcome(OutcomeKind.REFUSED, "cannot understand", FailureClass.DIMSE_FAILURE, 0xC000),
        SendOutcome(OutcomeKind.RETRY, "busy", FailureClass.DIMSE_FAILURE, 0x0110),
        SendOutcome(OutcomeKind.REFUSED, "unreadable", FailureClass.UNREADABLE),
        SendOutcome(OutcomeKind.RETRY, "bug", FailureClass.INTERNAL),
    ],
)
def test_object_outcomes_leave_the_destination_ok(outcome: SendOutcome) -> None:
    assert condition_after(outcome, CT, {CT}) is Condition.OK


def test_an_association_that_accepts_nothing_pauses_even_a_never_seen_class() -> None:
    assert condition_after(no_context(frozenset()), PDF, set()) is Condition.PAUSED
    assert condition_after(no_context(frozenset()), CT, {CT}) is Condition.PAUSED


def test_a_class_accepted_before_and_refused_now_pauses_though_others_are_accepted() -> None:
    assert condition_after(no_context(frozenset({SC})), CT, {CT, SC}) is Condition.PAUSED


def test_a_never_accepted_class_refused_while_others_are_accepted_is_the_objects() -> None:
    assert condition_after(no_context(frozenset({SC})), PDF, {SC}) is Condition.OK
    assert condition_after(no_context(frozenset({SC})), PDF, set()) is Condition.OK


def test_its_class_accepted_but_none_of_its_syntaxes_is_the_objects() -> None:
    assert condition_after(no_context(frozenset({CT, SC})), CT, {CT}) is Condition.OK


def test_a_refusal_without_negotiation_evidence_is_the_objects() -> None:
    assert condition_after(no_context(None), CT, {CT}) is Condition.OK


def test_reminders_double_their_gap_up_to_the_cap() -> None:
    schedule = ReminderSchedule(first=60.0, cap=900.0)
    schedule.start(0.0)
    fired = [t for t in range(0, 4 * 3600, 5) if schedule.due(float(t))]
    assert fired[:5] == [60, 180, 420, 900, 1800]
    gaps = [b - a for a, b in itertools.pairwise(fired[4:])]
    assert gaps and all(g == 900 for g in gaps)
    assert len(fired) == 5 + (4 * 3600 - 1800 - 1) // 900


def test_a_new_outage_restarts_the_schedule() -> None:
    schedule = ReminderSchedule(first=60.0, cap=900.0)
    schedule.start(0.0)
    assert schedule.due(60.0)
    schedule.start(1000.0)
    assert not schedule.due(1059.0)
    assert schedule.due(1060.0)


def test_describe_says_what_an_operator_needs() -> None:
    status = LaneStatus("pacs", Condition.UNREACHABLE, "connection refused", 0.0, 14, 400.0)
    assert describe(status, 100.0) == (
        "pacs: still unreachable, 14 attempts, next in 300 s (connection refused)"
    )
    assert describe(LaneStatus("pacs", Condition.OK), 0.0) == "pacs: delivering"
