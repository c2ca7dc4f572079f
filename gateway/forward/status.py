"""What a C-STORE response status means for the object: pure, table-driven classification.

The table (DICOM PS3.7 Annex C and PS3.4 Annex B.2.3):

======================  ===========  ================  =====================================
status                  outcome      failure class     why
======================  ===========  ================  =====================================
0x0000                  DELIVERED                      success
0x0001, 0xB000–0xBFFF   DELIVERED                      warning: stored, the reason records it
0xA700–0xA7FF           RETRY        out_of_resources  out of resources: the PACS is full or
                                                       busy for every object, not this one;
                                                       the lane backs off (forward/condition)
0xA900–0xA9FF           REFUSED      dimse_failure     data set does not match SOP class
0xC000–0xCFFF           REFUSED      dimse_failure     cannot understand
0x0117                  REFUSED      dimse_failure     invalid SOP instance
0x0122                  REFUSED      dimse_failure     SOP class not supported
0x0124                  REFUSED      dimse_failure     not authorised
0x0211, 0x0212          REFUSED      dimse_failure     unrecognised operation, mistyped argument
0x0110                  RETRY        dimse_failure     processing failure
0x0210                  RETRY        dimse_failure     duplicate invocation
0x0213                  RETRY        dimse_failure     resource limitation
anything else           RETRY        dimse_failure     unknown failure status: retried
======================  ===========  ================  =====================================

Every non-delivered outcome carries its row's failure class and the status.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.forward.outcome import FailureClass, OutcomeKind, SendOutcome


@dataclass(frozen=True)
class StatusRule:
    """One row of the table: statuses ``low``..``high`` inclusive."""

    low: int
    high: int
    kind: OutcomeKind
    meaning: str
    failure_class: FailureClass = FailureClass.DIMSE_FAILURE


STATUS_TABLE: tuple[StatusRule, ...] = (
    StatusRule(0x0000, 0x0000, OutcomeKind.DELIVERED, "success"),
    StatusRule(0x0001, 0x0001, OutcomeKind.DELIVERED, "warning: requested optional attributes"),
    StatusRule(0xB000, 0xB000, OutcomeKind.DELIVERED, "warning: coercion of data elements"),
    StatusRule(0xB006, 0xB006, OutcomeKind.DELIVERED, "warning: elements discarded"),
    StatusRule(0xB007, 0xB007, OutcomeKind.DELIVERED, "warning: data set does not match SOP class"),
    StatusRule(0xB000, 0xBFFF, OutcomeKind.DELIVERED, "warning"),
    StatusRule(
        0xA700, 0xA7FF, OutcomeKind.RETRY, "out of resources", FailureClass.OUT_OF_RESOURCES
    ),
    StatusRule(0xA900, 0xA9FF, OutcomeKind.REFUSED, "data set does not match SOP class"),
    StatusRule(0xC000, 0xCFFF, OutcomeKind.REFUSED, "cannot understand"),
    StatusRule(0x0117, 0x0117, OutcomeKind.REFUSED, "invalid SOP instance"),
    StatusRule(0x0122, 0x0122, OutcomeKind.REFUSED, "SOP class not supported"),
    StatusRule(0x0124, 0x0124, OutcomeKind.REFUSED, "not authorised"),
    StatusRule(0x0211, 0x0211, OutcomeKind.REFUSED, "unrecognised operation"),
    StatusRule(0x0212, 0x0212, OutcomeKind.REFUSED, "mistyped argument"),
    StatusRule(0x0110, 0x0110, OutcomeKind.RETRY, "processing failure"),
    StatusRule(0x0210, 0x0210, OutcomeKind.RETRY, "duplicate invocation"),
    StatusRule(0x0213, 0x0213, OutcomeKind.RETRY, "resource limitation"),
)


def rule_for(status: int) -> StatusRule:
    """The first table row that covers ``status``; unknown statuses are a retryable failure."""
    for rule in STATUS_TABLE:
        if rule.low <= status <= rule.high:
            return rule
    return StatusRule(status, status, OutcomeKind.RETRY, "unknown failure status")


def classify_status(status: int) -> SendOutcome:
    """The outcome of a C-STORE response carrying ``status``."""
    rule = rule_for(status)
    code = f"0x{status:04X}"
    if rule.kind is OutcomeKind.DELIVERED:
        reason = "" if status == 0 else f"stored with {rule.meaning} ({code})"
        return SendOutcome(OutcomeKind.DELIVERED, reason, None, status)
    verb = "refused" if rule.kind is OutcomeKind.REFUSED else "failed (will retry)"
    return SendOutcome(
        rule.kind,
        f"C-STORE {verb} by the PACS: {rule.meaning} ({code})",
        rule.failure_class,
        status,
    )
