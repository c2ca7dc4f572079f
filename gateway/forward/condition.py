"""What one delivery outcome says about the destination as a whole: pure, table-driven.

The lane asks ``condition_after`` after every attempt. A condition other than OK is the
destination's, not the object's: the lane backs off (or pauses) as a whole, the object stays
pending with its attempt counted, and nothing goes to ``failed`` for it. OK means the
destination answered as a working PACS does: the outcome concerns that object alone.

=================================================  ================  ===============================
outcome (failure class; evidence)                  condition         what the lane does
=================================================  ================  ===============================
delivered; an object-level failure (dimse_failure  OK                records the object's outcome;
other than 0xA7xx, unreadable, internal)                            an outage ends (recovered)
connection_refused, timeout, tls,                  UNREACHABLE       backs off the whole lane
association_rejected (transient),
association_aborted
association_rejected_permanent (A-ASSOCIATE-RJ     REJECTED          waits at the backoff ceiling
rejected-permanent: an AE title not recognised)                      before each attempt; the reason
                                                                     says who must change what
                                                                     (forward/rejection)
out_of_resources (C-STORE status 0xA7xx)           OUT_OF_RESOURCES  backs off the whole lane: the
                                                                     PACS is full for every object
no_presentation_context; the association accepted  PAUSED            pauses the destination with the
none of the proposed contexts                                        reason; probes with its next
                                                                     object at each backoff step
no_presentation_context; its SOP class was         PAUSED            the same: the PACS's
accepted before (delivered, or accepted in an                        configuration changed under us
association, since the lane started) and the
association accepted none of its contexts
no_presentation_context; its SOP class accepted,   OK                the object fails for good: none
but none of its syntaxes that we can send                            of its own syntaxes can be sent
no_presentation_context; other SOP classes         OK                the object fails for good: the
accepted in the same association, its own never                      PACS takes the others
no_presentation_context without evidence           OK                as the sender's outcome says
=================================================  ================  ===============================

The evidence is ``SendOutcome.accepted_sop_classes``: the SOP classes the association accepted
when the object's contexts were refused. The sender proposes the union of what recent objects
needed, so "the others are accepted" is usually seen in the same association; a lane that has
only seen refusals cannot tell a PACS that lacks one SOP class from one that accepts nothing,
and pauses rather than fail objects for good.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from gateway.forward.outcome import FailureClass, SendOutcome


class Condition(StrEnum):
    """The destination as the lane sees it."""

    OK = "ok"  # answering: failures, if any, are the objects'
    UNREACHABLE = "unreachable"  # no connection or association: backing off
    OUT_OF_RESOURCES = "out_of_resources"  # the PACS answers 0xA7xx: backing off
    PAUSED = "paused"  # refuses what it must take (misconfigured): probed, not fed
    REJECTED = "rejected"  # rejects the association for good (AE title): a person must act


UNREACHABLE_CLASSES = frozenset(
    {
        FailureClass.CONNECTION_REFUSED,
        FailureClass.TIMEOUT,
        FailureClass.TLS,
        FailureClass.ASSOCIATION_REJECTED,
        FailureClass.ASSOCIATION_ABORTED,
    }
)
"""Failure classes that say the PACS cannot be reached at all."""


def condition_after(
    outcome: SendOutcome, sop_class_uid: str, accepted_before: Collection[str]
) -> Condition:
    """The destination's condition as this outcome of an object of ``sop_class_uid`` shows it.

    ``accepted_before``: SOP classes this destination accepted since the lane started.
    """
    failure = outcome.failure_class
    if failure in UNREACHABLE_CLASSES:
        return Condition.UNREACHABLE
    if failure is FailureClass.OUT_OF_RESOURCES:
        return Condition.OUT_OF_RESOURCES
    if failure is FailureClass.ASSOCIATION_REJECTED_PERMANENT:
        return Condition.REJECTED
    if failure is not FailureClass.NO_PRESENTATION_CONTEXT:
        return Condition.OK
    accepted = outcome.accepted_sop_classes
    if accepted is None or sop_class_uid in accepted:
        return Condition.OK
    if sop_class_uid in accepted_before or not accepted:
        return Condition.PAUSED
    return Condition.OK


@dataclass(frozen=True)
class LaneStatus:
    """A destination's condition, for the status line, the panel, the API and the metrics."""

    destination: str
    condition: Condition
    reason: str = ""  # the last failure's reason while not OK
    since: float | None = None  # wall time the outage began
    attempts: int = 0  # failed attempts of the outage
    next_attempt_at: float | None = None  # wall time of the next attempt (the probe, if paused)


class StatusSource(Protocol):
    """What shows a destination's condition (a DeliveryLane)."""

    @property
    def status(self) -> LaneStatus: ...


def describe(status: LaneStatus, now: float) -> str:
    """One line for an operator: ``pacs: still unreachable, 14 attempts, next in 300 s``."""
    words = {
        Condition.OK: "delivering",
        Condition.UNREACHABLE: "still unreachable",
        Condition.OUT_OF_RESOURCES: "still out of resources",
        Condition.PAUSED: "paused",
        Condition.REJECTED: "rejected by the PACS",
    }[status.condition]
    if status.condition is Condition.OK:
        return f"{status.destination}: {words}"
    text = f"{status.destination}: {words}, {status.attempts} attempts"
    if status.next_attempt_at is not None:
        text += f", next in {max(0.0, status.next_attempt_at - now):.0f} s"
    return f"{text} ({status.reason})" if status.reason else text


class ReminderSchedule:
    """When an ongoing condition is worth one more line at INFO: pure, time passed in.

    The first reminder comes ``first`` seconds into the outage, and the gap doubles after each
    up to ``cap``: with the defaults at about 1, 3, 7, 15 and 30 min, then every 15 min (at most
    four lines an hour per destination, however short the backoff). Reminders ride on attempts
    (there is no timer), so a longer backoff spaces them further.
    """

    def __init__(self, first: float = 60.0, cap: float = 900.0) -> None:
        self._first = first
        self._cap = cap
        self._gap = first
        self._next: float | None = None

    def start(self, now: float) -> None:
        """An outage began at ``now``."""
        self._gap = self._first
        self._next = now + self._first

    def due(self, now: float) -> bool:
        """Whether a repeat at ``now`` gets a reminder; if so the next one is pushed back."""
        if self._next is None or now < self._next:
            return False
        self._gap = min(self._gap * 2, self._cap)
        self._next = now + self._gap
        return True
