"""DeliveryLane: the loop that drains one destination's queue through a StoreSender.

After every attempt the lane asks ``forward.condition.condition_after`` whose failure it was
(its docstring holds the table). A failure of the destination (unreachable, out of resources,
refusing what it must take) holds the whole lane: it waits before the next attempt of any
object, so a down or full PACS is not hammered with every queued object, and no object goes to
``failed`` for it. A paused destination is probed at each backoff step with its next object
(the negotiation is the test); the first attempt the PACS answers as a working PACS ends it.
A PACS that rejects the association for good (A-ASSOCIATE-RJ permanent: our AE title or the
one we call not recognised) is REJECTED: a person must change a configuration, the reason says
who and what (forward.rejection); the lane keeps every object and tries at the backoff ceiling,
so the fix is picked up without an operator and the PACS is not hammered meanwhile.
An object's own failure (a DIMSE failure status, a SOP class the PACS does not take while it
takes the others, an unreadable file) concerns only that object; the lane moves on.

Logging, per destination: the start of an outage (or a change of its kind) at ERROR, repeats at
DEBUG with a reminder at INFO on ``ReminderSchedule`` (1, 3, 7, 15, 30 min in, then every
15 min), the recovery at INFO with the outage's length. An object's first retry is a WARNING;
its repeats are DEBUG, with one at INFO on a second schedule of the same rate per destination.

A fault of the state storage (disk full past the reserve, read-only, I/O error) never ends the
lane. While the queue can still be read it claims in memory (gateway.spool.store) and the lane
delivers as usual; when it cannot claim at all it raises, and the lane waits (the destination's
backoff, at most STORAGE_WAIT_CAP seconds, so it resumes soon after the fault clears) and tries
again. Logged when it starts or changes, and at recovery with its length.
"""

from __future__ import annotations

import logging
import threading
from typing import Protocol

from gateway.clock import Clock
from gateway.config import Destination
from gateway.forward.backoff import Backoff
from gateway.forward.condition import (
    Condition,
    LaneStatus,
    ReminderSchedule,
    condition_after,
    describe,
)
from gateway.forward.outcome import FailureClass, OutcomeKind, SendOutcome
from gateway.logsetup import event
from gateway.spool.entries import SpoolEntry
from gateway.storagefault import StorageFault, StorageNotReadyError

_FIRST_EVENT = {
    Condition.UNREACHABLE: "destination_unreachable",
    Condition.OUT_OF_RESOURCES: "destination_out_of_resources",
    Condition.PAUSED: "destination_paused",
    Condition.REJECTED: "destination_rejected",
}
_REPEAT_EVENT = {
    Condition.UNREACHABLE: "destination_still_unreachable",
    Condition.OUT_OF_RESOURCES: "destination_still_out_of_resources",
    Condition.PAUSED: "destination_still_paused",
    Condition.REJECTED: "destination_still_rejected",
}
STORAGE_WAIT_CAP = 5.0  # seconds: the longest wait between tries while the state storage fails


class QueueLike(Protocol):
    """The part of the spool a lane uses."""

    def claim_next(self, destination: str) -> SpoolEntry | None: ...

    def mark_sent(self, delivery_id: int) -> None: ...

    def mark_retry(
        self,
        delivery_id: int,
        failure_class: str,
        reason: str,
        next_attempt_at: float,
        status: int | None = None,
    ) -> None: ...

    def mark_failed(
        self, delivery_id: int, failure_class: str, reason: str, status: int | None = None
    ) -> None: ...

    def next_due(self, destination: str) -> float | None: ...

    def wait_for_work(self, destination: str, timeout: float) -> None: ...


class SenderLike(Protocol):
    """The part of StoreSender a lane uses."""

    def send(self, entry: SpoolEntry) -> SendOutcome: ...

    def release_if_idle(self) -> None: ...

    def interrupt(self) -> None: ...

    def close(self) -> None: ...


def _status_field(outcome: SendOutcome) -> str | None:
    return None if outcome.status is None else f"0x{outcome.status:04X}"


class DeliveryLane:
    """Claims, sends and records objects for one destination until told to stop."""

    def __init__(
        self,
        destination: Destination,
        queue: QueueLike,
        sender: SenderLike,
        backoff: Backoff,
        clock: Clock,
        logger: logging.Logger,
        *,
        wait_cap_seconds: float = 0.5,
    ) -> None:
        self._destination = destination
        self._queue = queue
        self._sender = sender
        self._backoff = backoff
        self._clock = clock
        self._log = logger
        self._wait_cap = wait_cap_seconds
        self._blocked_until = 0.0
        self._lane_failures = 0
        self._down_since: float | None = None
        self._condition = Condition.OK
        self._accepted_before: set[str] = set()
        self._reminder = ReminderSchedule()
        # Repeated retries of objects (the destination answers, an object keeps failing): the
        # same bounded rate at INFO, per destination, from the lane's first such repeat.
        self._retry_reminder = ReminderSchedule()
        self._retry_reminder_started = False
        self._interrupted = threading.Event()
        self._status = LaneStatus(destination.name, Condition.OK)
        self._storage_fault: StorageFault | None = None
        self._storage_failures = 0
        self._storage_since = 0.0

    @property
    def destination(self) -> str:
        """The name of the destination this lane delivers to."""
        return self._destination.name

    @property
    def down_since(self) -> float | None:
        """Wall time of the first failure of the current outage; None while the PACS answers."""
        return self._down_since

    @property
    def status(self) -> LaneStatus:
        """The destination's condition now (a snapshot: safe to read from any thread)."""
        return self._status

    def interrupt(self) -> None:
        """From another thread, at the stop deadline: abort the send in flight.

        The object goes back to pending, due at once (at the next start): the stop interrupted
        it, the PACS did not refuse it.
        """
        self._interrupted.set()
        self._sender.interrupt()

    @property
    def storage_fault(self) -> StorageFault | None:
        """The state storage fault that stops this lane from claiming now, or None."""
        return self._storage_fault

    def run(self, stop: threading.Event) -> None:
        """Deliver until ``stop`` is set; then release the association gracefully."""
        name = self._destination.name
        try:
            while not stop.is_set():
                now = self._clock.now()
                if now < self._blocked_until:
                    self._queue.wait_for_work(name, min(self._blocked_until - now, self._wait_cap))
                    continue
                try:
                    entry = self._queue.claim_next(name)
                    self._storage_back()
                    if entry is None:
                        self._idle(now)
                        continue
                except StorageNotReadyError as exc:
                    self._storage_failed(exc)
                    continue
                self._record(entry, self._send(entry))
        finally:
            self._sender.close()

    def _send(self, entry: SpoolEntry) -> SendOutcome:
        try:
            return self._sender.send(entry)
        except Exception as exc:  # noqa: BLE001 - one poison object must not stop the lane
            self._log.error(
                "sender failed unexpectedly",
                exc_info=True,
                extra={"destination": self._destination.name, "delivery_id": entry.delivery_id},
            )
            return SendOutcome(
                OutcomeKind.RETRY,
                f"internal error in the sender ({type(exc).__name__}); see the log",
                FailureClass.INTERNAL,
            )

    def _idle(self, now: float) -> None:
        self._sender.release_if_idle()
        due = self._queue.next_due(self._destination.name)
        # A floor keeps a retry that is due but not yet claimable from spinning the loop.
        timeout = self._wait_cap if due is None else min(max(due - now, 0.01), self._wait_cap)
        self._queue.wait_for_work(self._destination.name, timeout)

    def _record(self, entry: SpoolEntry, outcome: SendOutcome) -> None:
        if self._interrupted.is_set() and outcome.kind is OutcomeKind.RETRY:
            self._put_back(entry, outcome)
            return
        condition = condition_after(outcome, entry.sop_class_uid, self._accepted_before)
        self._learn(entry, outcome)
        if condition is Condition.OK:
            self._lane_answered()
            self._record_object(entry, outcome)
        else:
            self._lane_failed(entry, outcome, condition)

    def _learn(self, entry: SpoolEntry, outcome: SendOutcome) -> None:
        """Remember the SOP classes this destination takes (evidence for forward.condition)."""
        if outcome.kind is OutcomeKind.DELIVERED:
            self._accepted_before.add(entry.sop_class_uid)
        if outcome.accepted_sop_classes:
            self._accepted_before.update(outcome.accepted_sop_classes)

    def _record_object(self, entry: SpoolEntry, outcome: SendOutcome) -> None:
        failure = outcome.failure_class
        if outcome.kind is OutcomeKind.DELIVERED:
            self._queue.mark_sent(entry.delivery_id)
            self._object_event(
                logging.INFO,
                "delivered",
                entry,
                size=entry.size,
                note=outcome.reason or None,
            )
            return
        failure_class = str(failure or FailureClass.DIMSE_FAILURE)
        if outcome.kind is OutcomeKind.REFUSED:
            self._queue.mark_failed(
                entry.delivery_id, failure_class, outcome.reason, outcome.status
            )
            self._object_event(
                logging.ERROR,
                "delivery_refused",
                entry,
                failure_class=failure_class,
                status=_status_field(outcome),
                reason=outcome.reason,
            )
            return
        delay = self._backoff.delay(entry.attempts + 1)
        now = self._clock.now()
        self._queue.mark_retry(
            entry.delivery_id,
            failure_class,
            outcome.reason,
            now + delay,
            outcome.status,
        )
        event(
            self._log,
            logging.WARNING if entry.attempts == 0 else self._repeat_level(now),
            "delivery_deferred",
            destination=self._destination.name,
            delivery_id=entry.delivery_id,
            failure_class=failure_class,
            status=_status_field(outcome),
            reason=outcome.reason,
            attempts=entry.attempts + 1,
            retry_in_seconds=round(delay, 1),
        )

    def _repeat_level(self, now: float) -> int:
        """INFO for a repeated object retry when the reminder schedule says so, else DEBUG."""
        if not self._retry_reminder_started:
            self._retry_reminder_started = True
            self._retry_reminder.start(now)
        return logging.INFO if self._retry_reminder.due(now) else logging.DEBUG

    def _put_back(self, entry: SpoolEntry, outcome: SendOutcome) -> None:
        """The stop aborted this send: pending again, due now, no outage declared."""
        self._queue.mark_retry(
            entry.delivery_id,
            str(outcome.failure_class or FailureClass.ASSOCIATION_ABORTED),
            "interrupted by the gateway's stop; sent again at the next start",
            self._clock.now(),
        )
        self._object_event(logging.INFO, "delivery_interrupted", entry)

    def _object_event(self, level: int, name: str, entry: SpoolEntry, **fields: object) -> None:
        """Log one object's event: destination, delivery id and SOP instance first, then fields."""
        event(
            self._log,
            level,
            name,
            destination=self._destination.name,
            delivery_id=entry.delivery_id,
            sop_instance_uid=entry.sop_instance_uid,
            **fields,
        )

    def _lane_failed(self, entry: SpoolEntry, outcome: SendOutcome, condition: Condition) -> None:
        now = self._clock.now()
        self._lane_failures += 1
        # A permanent rejection will not clear by itself: no quick retries, only the ceiling.
        if condition is Condition.REJECTED:
            delay = self._backoff.ceiling()
        else:
            delay = self._backoff.delay(self._lane_failures)
        self._blocked_until = now + delay
        failure_class = str(outcome.failure_class)
        self._queue.mark_retry(
            entry.delivery_id, failure_class, outcome.reason, self._blocked_until, outcome.status
        )
        first = self._down_since is None
        if first:
            self._down_since = now
            self._reminder.start(now)
        changed = condition is not self._condition
        self._condition = condition
        self._status = LaneStatus(
            self._destination.name,
            condition,
            outcome.reason,
            self._down_since,
            self._lane_failures,
            self._blocked_until,
        )
        fields: dict[str, object] = {
            "destination": self._destination.name,
            "condition": str(condition),
            "failure_class": failure_class,
            "status": _status_field(outcome),
            "reason": outcome.reason,
            "attempts": self._lane_failures,
            "retry_in_seconds": round(delay, 1),
        }
        if changed:
            event(self._log, logging.ERROR, _FIRST_EVENT[condition], **fields)
            return
        level = logging.INFO if self._reminder.due(now) else logging.DEBUG
        assert self._down_since is not None
        event(
            self._log,
            level,
            _REPEAT_EVENT[condition],
            summary=describe(self._status, now),
            outage_seconds=round(now - self._down_since, 1),
            **fields,
        )

    def _storage_failed(self, exc: StorageNotReadyError) -> None:
        now = self._clock.now()
        self._storage_failures += 1
        delay = min(self._backoff.delay(self._storage_failures), STORAGE_WAIT_CAP)
        self._blocked_until = max(self._blocked_until, now + delay)
        if self._storage_fault is not exc.fault:
            if self._storage_fault is None:
                self._storage_since = now
            event(
                self._log,
                logging.ERROR,
                "delivery paused: state storage failed",
                destination=self._destination.name,
                fault=str(exc.fault),
                reason=str(exc),
            )
        self._storage_fault = exc.fault

    def _storage_back(self) -> None:
        if self._storage_fault is None:
            return
        event(
            self._log,
            logging.INFO,
            "delivery resumed: state storage recovered",
            destination=self._destination.name,
            outage_seconds=round(self._clock.now() - self._storage_since, 1),
            attempts=self._storage_failures,
        )
        self._storage_fault = None
        self._storage_failures = 0

    def _lane_answered(self) -> None:
        if self._down_since is not None:
            event(
                self._log,
                logging.INFO,
                "destination_recovered",
                destination=self._destination.name,
                condition=str(self._condition),
                outage_seconds=round(self._clock.now() - self._down_since, 1),
                failed_attempts=self._lane_failures,
            )
            self._status = LaneStatus(self._destination.name, Condition.OK)
        self._down_since = None
        self._condition = Condition.OK
        self._lane_failures = 0
        self._blocked_until = 0.0
