"""Presentation contexts proposed, accepted and rejected, logged at DEBUG: listener and forwarder.

"No presentation context" is the commonest first failure between a modality, the gateway and a
PACS, and only the negotiation shows it: which SOP class was proposed in which transfer
syntaxes, and what the other side answered (PS3.8 Table 9-18: accepted, user rejection,
no reason, abstract syntax not supported, transfer syntaxes not supported). One line per
context, at DEBUG, so a normal log stays quiet and ``[gateway] log_level = "DEBUG"`` shows it:

==============================  =================================================================
event                           when
==============================  =================================================================
presentation_context_accepted   the association was accepted; this context with ``transfer_syntax``
presentation_context_rejected   the association was accepted; this context not (``result`` says
                                why: abstract syntax or transfer syntaxes not supported, ...)
presentation_context_proposed   the association itself was rejected, or refused "local limit
                                exceeded": what was proposed, unanswered
==============================  =================================================================

Every line has ``side`` (``listener``: a caller proposed to us; ``forwarder``: we proposed to a
PACS), both AE titles, ``context_id``, ``abstract_syntax`` (UID and name) and ``proposed_syntaxes``.
AE titles and UIDs of SOP classes identify devices and services, never patients.

The handlers are pynetdicom event handlers (EVT_ACCEPTED, EVT_REJECTED): the listener binds them
on each association, the forwarder passes them to ``AE.associate``. The listener's front door
answers some requests itself, before pynetdicom sees them (a calling AE title not allowed, no
association slot free): it logs those with :func:`log_request`, from the request it decoded.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from pydicom.uid import UID
from pynetdicom import evt
from pynetdicom.events import Event, EventType

from gateway.logsetup import event as log_event

ACCEPTED = "presentation_context_accepted"
REJECTED = "presentation_context_rejected"
PROPOSED = "presentation_context_proposed"


@dataclass(frozen=True)
class ContextLine:
    """One presentation context of one negotiation, as logged."""

    name: str  # ACCEPTED, REJECTED or PROPOSED
    context_id: int
    abstract_syntax: str  # "1.2.840.10008.5.1.4.1.1.2 (CT Image Storage)"
    proposed_syntaxes: str  # comma-separated UIDs
    transfer_syntax: str | None = None  # the accepted one
    result: str | None = None  # why rejected, in PS3.8 words


def _named(uid: str) -> str:
    name = UID(uid).name
    return uid if not name or name == uid else f"{uid} ({name})"


def context_lines(requested: Sequence[Any], negotiated: Sequence[Any] | None) -> list[ContextLine]:
    """The lines for ``requested`` contexts; ``negotiated`` None when the association was rejected.

    Both are pynetdicom PresentationContext lists (``negotiated``: accepted and rejected ones,
    each with ``result``); a requested context missing from ``negotiated`` is shown as proposed.
    """
    answers = {cx.context_id: cx for cx in negotiated or ()}
    lines = []
    for cx in sorted(requested, key=lambda c: c.context_id or 0):
        context_id = int(cx.context_id or 0)
        abstract = _named(str(cx.abstract_syntax))
        proposed = ", ".join(str(ts) for ts in cx.transfer_syntax)
        answer = answers.get(cx.context_id) if negotiated is not None else None
        if answer is None:
            lines.append(ContextLine(PROPOSED, context_id, abstract, proposed))
        elif answer.result == 0:
            accepted = str(answer.transfer_syntax[0]) if answer.transfer_syntax else None
            lines.append(ContextLine(ACCEPTED, context_id, abstract, proposed, accepted))
        else:
            why = str(answer.status).lower()
            lines.append(ContextLine(REJECTED, context_id, abstract, proposed, result=why))
    return lines


def log_negotiation(logger: logging.Logger, assoc: Any, side: str, *, accepted: bool) -> None:
    """Log every context of ``assoc``'s negotiation at DEBUG (nothing is built above DEBUG)."""
    if not logger.isEnabledFor(logging.DEBUG):
        return
    negotiated = [*assoc.accepted_contexts, *assoc.rejected_contexts] if accepted else None
    lines = context_lines(assoc.requestor.requested_contexts, negotiated)
    _log_lines(logger, side, assoc.requestor.ae_title, assoc.acceptor.ae_title, lines)


def log_request(logger: logging.Logger, request: Any, side: str) -> None:
    """Log every context an A-ASSOCIATE-RQ proposed, at DEBUG, for a request answered unheard.

    ``request`` is the A-ASSOCIATE primitive of a request rejected (or refused for want of an
    association slot) before any negotiation: each context is logged as PROPOSED.
    """
    if not logger.isEnabledFor(logging.DEBUG):
        return
    lines = context_lines(request.presentation_context_definition_list, None)
    _log_lines(logger, side, request.calling_ae_title, request.called_ae_title, lines)


def _log_lines(
    logger: logging.Logger, side: str, calling: object, called: object, lines: list[ContextLine]
) -> None:
    for line in lines:
        fields = {k: v for k, v in vars(line).items() if k != "name" and v is not None}
        log_event(
            logger,
            logging.DEBUG,
            line.name,
            side=side,
            calling_ae=str(calling or "").strip(),
            called_ae=str(called or "").strip(),
            **fields,
        )


Handler = tuple[EventType, Callable[[Event], None]]


def negotiation_handlers(logger: logging.Logger, side: str) -> list[Handler]:
    """pynetdicom (event, handler) pairs that log each negotiation's contexts at DEBUG."""

    def on_accepted(event: Event) -> None:
        log_negotiation(logger, event.assoc, side, accepted=True)

    def on_rejected(event: Event) -> None:
        log_negotiation(logger, event.assoc, side, accepted=False)

    return [(evt.EVT_ACCEPTED, on_accepted), (evt.EVT_REJECTED, on_rejected)]
