"""A live view of a serial line's framing for the web panel: what passed, never what it said.

The reader hands every chunk it reads and writes to :meth:`SerialMonitor.record`. The monitor
classifies the bytes as they pass (ENQ, ACK, NAK, EOT; ASTM frames with their number, length,
end mark and checksum verdict; other bytes as a count) and keeps the last events in a bounded
ring. Frame text is never stored: a frame carries patient data. It watches both directions
independently and never influences the protocol engine.
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass
from typing import Literal

from gateway.clock import Clock
from gateway.ingest.serial.astm_frames import (
    ACK,
    ENQ,
    EOT,
    ETX,
    LF,
    MAX_FRAME,
    NAK,
    STX,
    FrameError,
    parse_frame,
)

Direction = Literal["in", "out"]
CAPACITY = 500  # events kept per port: a few minutes of a busy ASTM transfer
_CONTROL = {ENQ: "ENQ", ACK: "ACK", NAK: "NAK", EOT: "EOT"}


@dataclass(frozen=True)
class LineEvent:
    """One framing event on the line; ``seq`` grows by one per event, from 1."""

    seq: int
    at: float  # wall clock, epoch seconds
    direction: Direction  # "in": from the device; "out": written by the gateway
    kind: str  # ENQ, ACK, NAK, EOT, frame, bad_frame, bytes
    length: int = 1  # bytes the event covers
    frame_number: int | None = None
    final: bool | None = None  # frame ended with ETX (True) or ETB (False)
    checksum_ok: bool | None = None
    problem: str | None = None  # for bad_frame: malformed, bad_checksum, restricted_character


class _Direction:
    """Framing state of one direction: inside a frame (bytes since STX) or between frames."""

    def __init__(self) -> None:
        self.frame: bytearray | None = None


class SerialMonitor:
    """Bounded, thread-safe ring of the line's framing events."""

    def __init__(self, clock: Clock, capacity: int = CAPACITY) -> None:
        self._clock = clock
        self._events: deque[LineEvent] = deque(maxlen=capacity)
        self._seq = 0
        self._lock = threading.Lock()
        self._state: dict[Direction, _Direction] = {"in": _Direction(), "out": _Direction()}

    def record(self, direction: Direction, data: bytes) -> None:
        """Classify a chunk read from (``in``) or written to (``out``) the device."""
        with self._lock:
            state = self._state[direction]
            loose = 0  # bytes outside frames that are no control character, reported as a count
            for byte in data:
                if state.frame is not None:
                    state.frame.append(byte)
                    if byte == LF:
                        self._frame_done(direction, bytes(state.frame))
                        state.frame = None
                    elif len(state.frame) > MAX_FRAME:
                        self._add(direction, "bad_frame", len(state.frame), problem="overlong")
                        state.frame = None
                elif byte == STX:
                    loose = self._flush_loose(direction, loose)
                    state.frame = bytearray((byte,))
                elif byte in _CONTROL:
                    loose = self._flush_loose(direction, loose)
                    self._add(direction, _CONTROL[byte])
                else:
                    loose += 1
            self._flush_loose(direction, loose)

    def events(self, after: int = 0, limit: int = CAPACITY) -> list[LineEvent]:
        """Events with ``seq`` greater than ``after``, oldest first, at most ``limit``."""
        with self._lock:
            found = [e for e in self._events if e.seq > after]
        return found[:limit]

    @property
    def last_seq(self) -> int:
        """The sequence number of the newest event (0: none yet)."""
        with self._lock:
            return self._seq

    def _flush_loose(self, direction: Direction, count: int) -> int:
        if count:
            self._add(direction, "bytes", count)
        return 0

    def _frame_done(self, direction: Direction, raw: bytes) -> None:
        checked = parse_frame(raw)
        number = raw[1] - 0x30 if len(raw) > 1 and 0 <= raw[1] - 0x30 <= 7 else None
        if isinstance(checked, FrameError):
            self._add(
                direction,
                "bad_frame",
                len(raw),
                frame_number=number,
                checksum_ok=False if checked.reason == "bad_checksum" else None,
                problem=checked.reason,
                final=(raw[-5] == ETX) if len(raw) >= 5 else None,
            )
            return
        self._add(
            direction,
            "frame",
            len(raw),
            frame_number=checked.number,
            final=checked.final,
            checksum_ok=True,
        )

    def _add(
        self,
        direction: Direction,
        kind: str,
        length: int = 1,
        *,
        frame_number: int | None = None,
        final: bool | None = None,
        checksum_ok: bool | None = None,
        problem: str | None = None,
    ) -> None:
        self._seq += 1
        self._events.append(
            LineEvent(
                seq=self._seq,
                at=self._clock.now(),
                direction=direction,
                kind=kind,
                length=length,
                frame_number=frame_number,
                final=final,
                checksum_ok=checksum_ok,
                problem=problem,
            )
        )
