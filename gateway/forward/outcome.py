"""The result of trying to deliver one object: data, not exceptions."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class FailureClass(StrEnum):
    """Why a delivery attempt failed; decides backoff and whether to give up."""

    CONNECTION_REFUSED = "connection_refused"  # nothing listening, host unreachable, DNS
    TIMEOUT = "timeout"  # connect, ACSE, DIMSE or network timeout
    TLS = "tls"  # handshake failed: certificate, protocol, cipher
    ASSOCIATION_REJECTED = "association_rejected"  # A-ASSOCIATE-RJ, transient (busy, congested)
    # A-ASSOCIATE-RJ rejected-permanent (an AE title not recognised...): a person must act
    ASSOCIATION_REJECTED_PERMANENT = "association_rejected_permanent"
    ASSOCIATION_ABORTED = "association_aborted"  # A-ABORT / connection lost mid-association
    NO_PRESENTATION_CONTEXT = "no_presentation_context"  # SOP class / transfer syntax refused
    DIMSE_FAILURE = "dimse_failure"  # C-STORE response with a failure status
    OUT_OF_RESOURCES = "out_of_resources"  # C-STORE status 0xA7xx: the PACS is full, for everyone
    UNREADABLE = "unreadable"  # the queued file itself could not be read or decoded
    INTERNAL = "internal"  # the gateway itself failed (a bug): that object is retried after backoff


class OutcomeKind(StrEnum):
    """What the lane does next."""

    DELIVERED = "delivered"  # confirmed by the PACS: never send again
    RETRY = "retry"  # transient: try again after backoff
    REFUSED = "refused"  # permanent: move to failed with the reason


@dataclass(frozen=True)
class SendOutcome:
    """Result of one C-STORE attempt."""

    kind: OutcomeKind
    reason: str = ""
    failure_class: FailureClass | None = None
    status: int | None = None  # the DIMSE status, when a response came
    # With NO_PRESENTATION_CONTEXT from a negotiation: the SOP classes the association accepted
    # (empty: it accepted none of the proposed contexts). None: no negotiation to go by.
    accepted_sop_classes: frozenset[str] | None = None
