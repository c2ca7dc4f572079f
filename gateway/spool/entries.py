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
    sources: int = 1  # distinct sources the object now has (ObjectSource)
    merged: bool = False  # a duplicate from another source, now recorded beside the first


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


class SourceChannel(StrEnum):
    """How an object's source reached the gateway."""

    FILE = "file"  # a drop folder
    SERIAL = "serial"  # a device message on a serial line
    DICOM = "dicom"  # a C-STORE to our listener
    UNRECORDED = "unrecorded"  # queued before sources were recorded (older firmware)


@dataclass(frozen=True)
class ObjectSource:
    """One arrival an object came from: the operator's answer to "which file was this?".

    An object has one source, or more when the same instance arrived again from elsewhere (a
    DICOM file dropped under two names, a C-STORE from two peers): the spool keeps one object
    and records every distinct source, so none disappears without a trace. The same source
    arriving again (a re-read after a crash, a resend) is not recorded twice.
    """

    channel: SourceChannel
    source: str  # the configured source name: drop folder, serial line, "dicom:<calling AE>"
    sha256: str  # of the bytes as they arrived, hex
    arrived_at: float  # seconds since the epoch, when the gateway took it
    size: int | None = None  # bytes as they arrived; None when not recorded
    file_name: str | None = None  # file: path inside the folder (printable_name text)
    port: str | None = None  # serial: the port (device path or pyserial URL)
    calling_ae: str | None = None  # dicom: the calling AE title
    peer_address: str | None = None  # dicom: the peer's IP address
    # What the file name said about the patient that could not be used, and why (see
    # gateway.ingest.identity.FilenameIdentity.note); None when nothing was refused.
    identity_note: str | None = None
    hint_patient_id: str | None = None  # a valid patient ID from an unusable identity
    hint_accession_number: str | None = None  # likewise, a valid accession number

    @property
    def hints(self) -> tuple[tuple[str, str], ...]:
        """The hint's values as (label, value) pairs, for the operator's views only."""
        pairs = (
            ("patient ID", self.hint_patient_id),
            ("accession number", self.hint_accession_number),
        )
        return tuple((label, value) for label, value in pairs if value)

    @property
    def label(self) -> str:
        """One line naming the source for people: where it came from and through what."""
        if self.channel == SourceChannel.FILE:
            return f"{self.source}: {self.file_name}"
        if self.channel == SourceChannel.SERIAL:
            return f"{self.source} (serial {self.port})" if self.port else self.source
        if self.channel == SourceChannel.DICOM:
            peer = f" from {self.peer_address}" if self.peer_address else ""
            return f"C-STORE by {self.calling_ae or '(no AE title)'}{peer}"
        return f"{self.source} (details not recorded)"


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
    sources: tuple[ObjectSource, ...] = ()  # every arrival it came from, first one first


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
