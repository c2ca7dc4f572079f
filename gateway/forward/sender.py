"""StoreSender: delivers queued objects to one PACS over a reused association."""

from __future__ import annotations

import logging
import ssl

from gateway.clock import Clock
from gateway.config import Destination
from gateway.forward.contexts import (
    ContextPlan,
    Route,
    choose_route,
    conversion_failed_reason,
    conversion_note,
    no_route_reason,
)
from gateway.forward.link import Connector, Link
from gateway.forward.outcome import FailureClass, OutcomeKind, SendOutcome
from gateway.forward.payload import PayloadError, load_converted, read_info
from gateway.forward.status import classify_status
from gateway.spool.entries import SpoolEntry

_log = logging.getLogger(__name__)


_CONVERTED_EVENTS = {
    Route.DECODE: "object decoded for the PACS",
    Route.TO_LITTLE_ENDIAN: "object converted to little endian for the PACS",
}


def _about(entry: SpoolEntry, reason: str) -> str:
    """A reason about one object, naming it: the operator finds it by either number."""
    return f"object {entry.object_id} (SOP Instance {entry.sop_instance_uid}): {reason}"


class StoreSender:
    """C-STORE SCU for one destination; used from one thread (its lane).

    The association is kept between objects and released gracefully after
    ``idle_release_seconds`` without traffic, or when an object needs a presentation context
    that was never proposed (then the next association proposes the union of what recent
    objects needed).
    """

    def __init__(
        self,
        destination: Destination,
        calling_ae_title: str,
        ssl_context: ssl.SSLContext | None,
        clock: Clock,
    ) -> None:
        self._destination = destination
        self._clock = clock
        self._connector = Connector(destination, calling_ae_title, ssl_context)
        self._plan = ContextPlan()
        self._link: Link | None = None
        self._last_used = clock.monotonic()

    def send(self, entry: SpoolEntry) -> SendOutcome:
        """Deliver one object; never raises for network, peer or file problems."""
        try:
            info = read_info(entry.path)
        except PayloadError as exc:
            kind = OutcomeKind.REFUSED if exc.permanent else OutcomeKind.RETRY
            return SendOutcome(kind, str(exc), FailureClass.UNREADABLE)
        if (info.sop_class_uid, info.sop_instance_uid) != (
            entry.sop_class_uid,
            entry.sop_instance_uid,
        ):
            return SendOutcome(
                OutcomeKind.REFUSED,
                "queued file does not hold the object its queue record names",
                FailureClass.UNREADABLE,
            )
        sop, syntax = info.sop_class_uid, info.transfer_syntax_uid
        self._plan.want(sop, syntax)
        link = self._link_for(sop, syntax)
        if isinstance(link, SendOutcome):
            if link.failure_class is FailureClass.NO_PRESENTATION_CONTEXT:
                self._plan.forget(sop)
            return link
        try:
            return self._store(entry, link, sop, syntax)
        finally:
            self._last_used = self._clock.monotonic()
            if not link.usable:
                self._link = None

    def _link_for(self, sop: str, syntax: str) -> Link | SendOutcome:
        link = self._link
        if link is not None and not link.usable:
            link.abort()
            link = self._link = None
        if link is not None and (sop, syntax) not in link.proposed:
            _log.debug(
                "reassociating for a new presentation context",
                extra={"destination": self._destination.name, "transfer_syntax": syntax},
            )
            link.release()
            link = self._link = None
        if link is None:
            opened = self._connector.open(self._plan.proposal())
            if isinstance(opened, SendOutcome):
                return opened
            _log.debug(
                "association established",
                extra={
                    "destination": self._destination.name,
                    "proposed": len(opened.proposed),
                    "accepted": len(opened.accepted),
                },
            )
            link = self._link = opened
        return link

    def _store(self, entry: SpoolEntry, link: Link, sop: str, syntax: str) -> SendOutcome:
        route = choose_route(link.accepted, sop, syntax)
        if route is Route.NONE:
            return SendOutcome(
                OutcomeKind.REFUSED,
                _about(entry, no_route_reason(link.accepted, sop, syntax)),
                FailureClass.NO_PRESENTATION_CONTEXT,
            )
        note = conversion_note(route, syntax)
        if route is Route.AS_STORED:
            result = link.store(entry.path)
        else:
            try:
                dataset = load_converted(entry.path, route)
            except PayloadError as exc:
                if not exc.permanent:
                    return SendOutcome(OutcomeKind.RETRY, str(exc), FailureClass.UNREADABLE)
                return SendOutcome(
                    OutcomeKind.REFUSED,
                    _about(entry, conversion_failed_reason(route, sop, syntax, str(exc))),
                    FailureClass.NO_PRESENTATION_CONTEXT,
                )
            if note:
                _log.info(
                    _CONVERTED_EVENTS[route],
                    extra={
                        "destination": self._destination.name,
                        "delivery_id": entry.delivery_id,
                        "from_syntax": syntax,
                    },
                )
            result = link.store(dataset)
            del dataset
        if isinstance(result, SendOutcome):
            return result
        outcome = classify_status(result)
        if note and outcome.kind is OutcomeKind.DELIVERED:
            reason = f"{outcome.reason}; {note}" if outcome.reason else note
            outcome = SendOutcome(outcome.kind, reason, outcome.failure_class, outcome.status)
        return outcome

    def release_if_idle(self) -> None:
        """Release the association gracefully once it has been idle long enough."""
        link = self._link
        if link is None:
            return
        if not link.usable:
            link.abort()
            self._link = None
            return
        idle = self._clock.monotonic() - self._last_used
        if idle >= self._destination.idle_release_seconds:
            _log.debug(
                "releasing idle association",
                extra={"destination": self._destination.name, "idle_seconds": round(idle, 1)},
            )
            self.close()

    def close(self) -> None:
        """Graceful A-RELEASE if associated."""
        link, self._link = self._link, None
        if link is not None:
            link.release()
