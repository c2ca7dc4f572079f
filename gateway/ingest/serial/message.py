"""What a device says, once its protocol is peeled off: one complete message, I/O-free."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from gateway.identity import PatientIdentity


@dataclass(frozen=True)
class Concept:
    """A coded concept (code value, coding scheme designator, code meaning), e.g. from LOINC."""

    value: str
    scheme: str
    meaning: str


@dataclass(frozen=True)
class Measurement:
    """One result: a named, coded quantity with its UCUM unit, as the profile maps it."""

    name: str  # the device's own name or test ID, e.g. "HR" or "^^^GLU"
    concept: Concept  # what was measured, from the profile's mapping
    value: str  # decimal text as the device sent it (kept exact; never re-rounded)
    unit: str  # UCUM code, e.g. "mm[Hg]", "/min", "mg/dL"; "1" when unitless
    flags: tuple[str, ...] = ()  # abnormal flags or status as sent (ASTM R record 7 and 9)
    observed_at: str | None = None  # DICOM DT when the device gave a time


@dataclass(frozen=True)
class DeviceMessage:
    """A complete message from a device: measurements, or free text (a report or print job)."""

    source: str  # the [[ingest.serial]] name
    kind: Literal["measurements", "text"]
    identity: PatientIdentity  # what the device said about the patient (may be empty)
    received_at: float  # wall clock, seconds since the epoch, when the message completed
    measurements: tuple[Measurement, ...] = ()
    text: str | None = None  # free text; for print jobs the pages separated by form feeds
    title: str = ""  # document title, from the profile (e.g. "Blood gas report")
    raw: bytes = field(default=b"", repr=False)  # the message bytes as received (bounded)
    sequence: int = 0  # counter within the port's session, for logs; not an identifier
    # True when the device resends a message it saw no acknowledgement for (ASTM): the resend
    # must be the same instance, so its UIDs must not depend on when it arrived. Protocols
    # without acknowledgement never resend, and two identical reports are two observations.
    resent_until_acknowledged: bool = False

    @property
    def digest_input(self) -> bytes:
        """The bytes UIDs are derived from: a resent message yields the same UIDs."""
        head = self.source.encode() + b"\x00"
        if not self.resent_until_acknowledged:
            head += repr(self.received_at).encode() + b"\x00"
        return head + self.raw
