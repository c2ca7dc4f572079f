"""Records that leave the spool: deliveries to claim, results of enqueue."""

from __future__ import annotations

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
