"""ASTM E1381 frames: build and check ``STX FN text ETB|ETX C1 C2 CR LF``, pure byte logic.

The checksum is the sum of the bytes from the frame number up to and including ETB or ETX,
modulo 256, written as two uppercase hex digits. A frame carries at most 240 text characters
(247 bytes with its framing, E1381 §6.3); a longer record continues in ETB frames and ends in an
ETX frame. Frame numbers run 1..7, 0, 1, ... from the first frame of a transfer.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

ENQ = 0x05
ACK = 0x06
NAK = 0x15
EOT = 0x04
STX = 0x02
ETX = 0x03
ETB = 0x17
CR = 0x0D
LF = 0x0A

MAX_TEXT = 240
MAX_FRAME = MAX_TEXT + 7  # STX, FN, ETB|ETX, C1, C2, CR, LF
MIN_FRAME = 7  # a frame with empty text

# E1381 restricts these from frame text: they are the link's own control characters (SOH, STX,
# ETX, EOT, ENQ, ACK, DLE, NAK, SYN, ETB, LF, DC1-DC4). CR is allowed: it ends each record. NUL
# is refused too: E1394 text never carries it, and a NUL gained or lost in transit leaves the
# modulo-256 checksum unchanged, so refusing it closes the one single-byte error it cannot see.
RESTRICTED = frozenset(b"\x00\x01\x02\x03\x04\x05\x06\x0a\x10\x11\x12\x13\x14\x15\x16\x17")


@dataclass(frozen=True)
class Frame:
    """One checked frame: its number (0-7), text, and whether it ends a record (ETX)."""

    number: int
    text: bytes
    final: bool


@dataclass(frozen=True)
class FrameError:
    """Why bytes between STX and LF are not a frame; ``reason`` is a counter name."""

    reason: str  # "malformed", "bad_checksum", "restricted_character"
    detail: str = ""


def checksum(body: bytes) -> bytes:
    """The two uppercase hex digits over ``body`` (frame number through ETB/ETX)."""
    return f"{sum(body) % 256:02X}".encode("ascii")


def build_frame(number: int, text: bytes, final: bool) -> bytes:
    """One frame; ``text`` is at most 240 bytes and free of restricted characters."""
    if not 0 <= number <= 7:
        raise ValueError(f"frame number {number} is not 0-7")
    if len(text) > MAX_TEXT:
        raise ValueError(f"frame text of {len(text)} bytes exceeds {MAX_TEXT}")
    if any(b in RESTRICTED for b in text):
        raise ValueError("frame text contains a restricted control character")
    body = bytes([0x30 + number]) + text + bytes([ETX if final else ETB])
    return bytes([STX]) + body + checksum(body) + b"\r\n"


def parse_frame(data: bytes) -> Frame | FrameError:
    """Check bytes that run from STX to LF inclusive; never raises."""
    if len(data) < MIN_FRAME or len(data) > MAX_FRAME:
        return FrameError("malformed", f"{len(data)} bytes")
    if data[0] != STX or data[-2:] != b"\r\n":
        return FrameError("malformed", "no STX or no CR LF")
    number = data[1] - 0x30
    end = data[-5]
    if not 0 <= number <= 7 or end not in (ETX, ETB):
        return FrameError("malformed", "frame number or end mark")
    body = data[1:-4]
    if data[-4:-2].upper() != checksum(body):  # lower case is not E1381, but harmless
        return FrameError("bad_checksum", f"frame {number}")
    text = data[2:-5]
    if any(b in RESTRICTED for b in text):
        return FrameError("restricted_character", f"frame {number}")
    return Frame(number, text, end == ETX)


def next_number(number: int) -> int:
    """The frame number after ``number`` (7 is followed by 0)."""
    return (number + 1) % 8


def frame_message(records: bytes, first: int = 1) -> Iterator[bytes]:
    """Frames for a record stream (each record ends with CR): one or more frames per record.

    Each record starts a new frame; a record longer than 240 bytes is split into ETB frames
    with its last part in an ETX frame, as E1381 and E1394 expect.
    """
    number = first
    for record in _records(records):
        for start in range(0, len(record), MAX_TEXT):
            chunk = record[start : start + MAX_TEXT]
            yield build_frame(number, chunk, start + MAX_TEXT >= len(record))
            number = next_number(number)


def _records(stream: bytes) -> Iterator[bytes]:
    start = 0
    while start < len(stream):
        end = stream.find(b"\r", start)
        stop = len(stream) if end < 0 else end + 1
        yield stream[start:stop]
        start = stop
