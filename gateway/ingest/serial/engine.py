"""The contract between a serial port and a device protocol (ASTM E1381, line-kv, print-capture).

A protocol engine is pure: it never reads, writes or sleeps. The port thread feeds it the bytes
that arrived and the time, and carries out the actions it returns: bytes to write to the device,
complete messages to queue, and events to count and log. A message is acknowledged to the device
only after the port thread reports it durably queued (``committed``), so nothing the device
thinks was delivered can be lost in a power cut.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from gateway.ingest.serial.message import DeviceMessage


@dataclass(frozen=True)
class Send:
    """Write these bytes to the device (ACK, NAK, ENQ, EOT, or a reply)."""

    data: bytes


@dataclass(frozen=True)
class Deliver:
    """A complete message; queue it durably, then call ``committed(token, ok)``."""

    message: DeviceMessage
    token: int  # identifies this delivery in committed()


@dataclass(frozen=True)
class Note:
    """Something to count and log: ``counter`` names a counter ("bad_checksum", "noise", ...)."""

    counter: str
    detail: str = ""  # no patient data: sizes, frame numbers, reasons


Action = Send | Deliver | Note


class ProtocolEngine(Protocol):
    """One device protocol's state machine for one port session."""

    def feed(self, data: bytes, now: float) -> list[Action]:
        """Bytes from the device (any split: one byte, half a frame, several frames)."""
        ...

    def poll(self, now: float) -> list[Action]:
        """Time passed without bytes: protocol timeouts, idle ends of reports."""
        ...

    def committed(self, token: int, ok: bool, now: float) -> list[Action]:
        """The delivery ``token`` is durably queued (ok) or could not be (not ok: NAK/refuse)."""
        ...

    def next_deadline(self) -> float | None:
        """When poll() must be called next at the latest; None when nothing is pending."""
        ...

    def reset(self) -> list[Action]:
        """The port was lost and reopened: forget partial state (counted, never delivered)."""
        ...
