"""Records that leave the spool: deliveries to claim, results of enqueue."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path


class DeliveryState(StrEnum):
    """Life of one object towards one destination.

    held -> pending -> sending -> sent
                         |  ^
                         v  |   (retry after backoff)
                       pending
                         |
                         v
                       failed (permanent refusal; operator may retry or purge)
    """

    HELD = "held"
    PENDING = "pending"
    SENDING = "sending"
    SENT = "sent"
    FAILED = "failed"


@dataclass(frozen=True)
class SpoolEntry:
    """One delivery claimed by a lane: the object file to send to one destination."""

    delivery_id: int
    object_id: int
    destination: str
    path: Path
    sop_class_uid: str
    sop_instance_uid: str
    transfer_syntax_uid: str
    size: int
    attempts: int  # attempts made before this one


@dataclass(frozen=True)
class EnqueueResult:
    """Outcome of enqueue: the object id, and whether the same object was already queued."""

    object_id: int
    duplicate: bool


@dataclass(frozen=True)
class DeliveryInfo:
    """One delivery as the operator sees it (``queue list``, ``queue show``)."""

    delivery_id: int
    object_id: int
    destination: str
    state: DeliveryState
    attempts: int
    size: int  # bytes of the object's payload
    sop_instance_uid: str
    source: str  # the ingest source (drop folder name) it came from
    enqueued_at: float
    next_attempt_at: float
    sent_at: float | None
    last_error: str | None  # reason of the last failed attempt (kept after a later success)
    last_error_at: float | None
    failure_class: str | None  # a FailureClass value
    status: int | None  # DIMSE status of the last failed attempt, when a response came


@dataclass(frozen=True)
class ObjectInfo:
    """One queued object with every delivery of it."""

    object_id: int
    sop_class_uid: str
    sop_instance_uid: str
    transfer_syntax_uid: str
    study_instance_uid: str
    source_sha256: str
    source: str
    kind: str
    size: int
    enqueued_at: float
    held_reason: str | None
    payload: Path | None  # None once every destination has it and the file was removed
    deliveries: tuple[DeliveryInfo, ...]


@dataclass(frozen=True)
class DestinationStats:
    """The queue towards one destination, for status lines and the web panel."""

    destination: str
    configured: bool  # False: removed from the config; its deliveries stay but are not claimed
    counts: Mapping[DeliveryState, int]  # every state present, zero when none
    oldest_pending_at: float | None  # enqueue time of the oldest pending or sending delivery
    bytes_pending: int  # payload bytes still to send (held, pending, sending)
    last_success_at: float | None
    last_error: str | None
    last_error_at: float | None
