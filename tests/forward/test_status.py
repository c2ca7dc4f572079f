"""C-STORE status classification follows the documented table."""

from __future__ import annotations

import pytest

from gateway.forward.outcome import FailureClass, OutcomeKind
from gateway.forward.status import classify_status


@pytest.mark.parametrize("status", [0x0001, 0xB000, 0xB006, 0xB007, 0xB123])
def test_warnings_are_delivered_and_the_reason_records_the_warning(status: int) -> None:
    outcome = classify_status(status)
    assert outcome.kind is OutcomeKind.DELIVERED
    assert outcome.status == status
    assert f"0x{status:04X}" in outcome.reason
    assert "warning" in outcome.reason


def test_success_is_delivered_without_a_reason() -> None:
    outcome = classify_status(0x0000)
    assert (outcome.kind, outcome.reason, outcome.failure_class) == (
        OutcomeKind.DELIVERED,
        "",
        None,
    )


@pytest.mark.parametrize(
    ("status", "words"),
    [
        (0xA900, "does not match SOP class"),
        (0xC000, "cannot understand"),
        (0xCFFF, "cannot understand"),
        (0x0117, "invalid SOP instance"),
        (0x0122, "SOP class not supported"),
        (0x0124, "not authorised"),
        (0x0211, "unrecognised operation"),
        (0x0212, "mistyped argument"),
    ],
)
def test_permanent_failures_are_refused(status: int, words: str) -> None:
    outcome = classify_status(status)
    assert outcome.kind is OutcomeKind.REFUSED
    assert outcome.failure_class is FailureClass.DIMSE_FAILURE
    assert outcome.status == status
    assert words in outcome.reason


@pytest.mark.parametrize(
    ("status", "words"),
    [
        (0x0110, "processing failure"),
        (0x0210, "duplicate invocation"),
        (0x0213, "resource limitation"),
        (0x0105, "unknown failure status"),
        (0xFE00, "unknown failure status"),
    ],
)
def test_transient_and_unknown_failures_are_retried(status: int, words: str) -> None:
    outcome = classify_status(status)
    assert outcome.kind is OutcomeKind.RETRY
    assert outcome.failure_class is FailureClass.DIMSE_FAILURE
    assert words in outcome.reason


@pytest.mark.parametrize("status", [0xA700, 0xA701, 0xA7FF])
def test_out_of_resources_is_retried_as_a_condition_of_the_whole_pacs(status: int) -> None:
    # Issue 10 B12: 0xA7xx used to be refused for good, sending a whole backlog to failed.
    outcome = classify_status(status)
    assert outcome.kind is OutcomeKind.RETRY
    assert outcome.failure_class is FailureClass.OUT_OF_RESOURCES
    assert outcome.status == status
    assert "out of resources" in outcome.reason
