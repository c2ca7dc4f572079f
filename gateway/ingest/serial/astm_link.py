"""The host (receiver) side of ASTM E1381 as a ProtocolEngine: pure, fed bytes and the time.

ENQ is answered ACK (NAK while an earlier message is still being queued). Frames numbered
1..7, 0, ... are checked: a good one is ACKed, a bad checksum, a wrong frame number, a malformed
or over-long frame is NAKed (the instrument retransmits it), a repeat of the frame just ACKed is
ACKed again and ignored; EOT ends the transfer. One deliberate choice: the frame that completes a
message (the one carrying the L record) is not ACKed on arrival. The message is delivered, and
the ACK goes out only on ``committed(ok=True)``, once it is durably queued; ``ok=False`` NAKs it
and the instrument retransmits (after six NAKs it gives up and repeats the message later). A
message whose ACK never reached the instrument is repeated by it and yields the same bytes, so
the queue sees a duplicate, never a loss. Bytes outside ENQ and frames are noise: counted,
ignored. Buffers are bounded: a frame by 247 bytes, a message by ``max_message_bytes``.
"""

from __future__ import annotations

import enum

from gateway.ingest.serial.astm_frames import (
    ACK,
    ENQ,
    EOT,
    LF,
    MAX_FRAME,
    NAK,
    STX,
    Frame,
    FrameError,
    next_number,
    parse_frame,
)
from gateway.ingest.serial.astm_records import ends_with_terminator, to_messages
from gateway.ingest.serial.engine import Action, Deliver, Note, Send
from gateway.ingest.serial.profile import AstmProtocol, DeviceProfile

_ACK = Send(bytes([ACK]))
_NAK = Send(bytes([NAK]))


class _State(enum.Enum):
    NEUTRAL = "neutral"  # waiting for ENQ
    TRANSFER = "transfer"  # established: frames or EOT
    COMMIT = "commit"  # the final frame's reply waits for committed()


class AstmReceiver:
    """ASTM E1381 receiver carrying E1394 records (ProtocolEngine), for one port session."""

    def __init__(self, profile: DeviceProfile, source: str, max_message_bytes: int) -> None:
        if not isinstance(profile.link, AstmProtocol):
            raise ValueError(f"profile {profile.name!r} is not an astm-e1394 profile")
        self.profile = profile
        self.source = source
        self.max_message_bytes = max_message_bytes
        self._timeout = profile.link.receive_timeout
        self._state = _State.NEUTRAL
        self._frame: bytearray | None = None  # bytes since STX, while inside a frame
        self._overlong = 0  # bytes of a frame past MAX_FRAME, skipped until its LF
        self._message = bytearray()  # text of the frames accepted in this message
        self._expected = 1
        self._last: int | None = None  # number of the frame ACKed last (a repeat is ignored)
        self._discarding = False  # this message grew too long: NAK its frames until EOT
        self._deadline: float | None = None
        self._final: Frame | None = None  # the frame whose ACK waits for committed()
        self._outstanding: set[int] = set()  # tokens of the deliveries in _final's message
        self._refused = False  # one of them could not be queued
        self._orphans: set[int] = set()  # tokens whose transfer ended before the commit
        self._next_token = 1
        self._sequence = 0

    def feed(self, data: bytes, now: float) -> list[Action]:
        """Bytes from the instrument, split anywhere."""
        actions: list[Action] = []
        noise = 0
        for byte in data:
            if self._frame is not None:
                self._frame_byte(byte, now, actions)
            elif self._state is _State.NEUTRAL:
                if byte == ENQ:
                    self._establish(now, actions)
                else:
                    noise += 1
            elif self._state is _State.TRANSFER:
                if byte == STX:
                    self._frame = bytearray([STX])
                elif byte == EOT:
                    self._end_of_transfer(actions)
                else:
                    noise += 1
            elif byte == EOT:  # _State.COMMIT: the instrument gave up waiting for our reply
                self._orphans |= self._outstanding
                self._clear_final()
                self._to_neutral()
                actions.append(Note("sender_abort", "EOT while the message was being queued"))
            elif byte == ENQ:
                actions += [_NAK, Note("busy", "ENQ while a message is being queued")]
            else:
                noise += 1
        if noise:
            actions.append(Note("noise", f"{noise} bytes outside frames"))
        return actions

    def poll(self, now: float) -> list[Action]:
        """The E1381 receiver timeout: no frame or EOT within 30 s ends the transfer."""
        deadline = self.next_deadline()
        if deadline is None or now < deadline:
            return []
        lost = len(self._message) + len(self._frame or b"")
        self._to_neutral()
        return [Note("receive_timeout", f"{lost} bytes of an incomplete message discarded")]

    def committed(self, token: int, ok: bool, now: float) -> list[Action]:
        """Reply to the final frame once every delivery of its message is queued (or not)."""
        if token in self._orphans:
            self._orphans.discard(token)
            return [Note("late_commit", f"token {token} ok={ok} after the transfer ended")]
        if token not in self._outstanding or self._final is None:
            return []
        self._outstanding.discard(token)
        self._refused |= not ok
        if self._outstanding:
            return []
        final, refused = self._final, self._refused
        self._clear_final()
        self._state = _State.TRANSFER
        self._deadline = now + self._timeout
        if refused:
            return [_NAK, Note("not_queued", f"frame {final.number} NAKed for a retransmission")]
        self._accepted(final.number)
        self._message.clear()
        return [_ACK]

    def next_deadline(self) -> float | None:
        """The receive timeout while a transfer is open."""
        return self._deadline if self._state is _State.TRANSFER else None

    def reset(self) -> list[Action]:
        """The port was lost: drop any partial message (counted), forget the session."""
        partial = len(self._message) + len(self._frame or b"")
        self._orphans |= self._outstanding
        self._clear_final()
        self._to_neutral()
        return [Note("reset", f"{partial} bytes of a partial message discarded")] if partial else []

    def _establish(self, now: float, actions: list[Action]) -> None:
        if self._orphans:
            actions += [_NAK, Note("busy", "ENQ while a message is being queued")]
            return
        self._state = _State.TRANSFER
        self._expected, self._last = 1, None
        self._message.clear()
        self._discarding = False
        self._deadline = now + self._timeout
        actions.append(_ACK)

    def _frame_byte(self, byte: int, now: float, actions: list[Action]) -> None:
        frame = self._frame
        assert frame is not None
        if byte in (STX, EOT):
            # A frame cut short: the instrument timed out and aborted, or bytes were lost.
            actions.append(Note("partial_frame", f"{len(frame) + self._overlong} bytes"))
            self._frame, self._overlong = None, 0
            if byte == STX:
                self._frame = bytearray([STX])
            else:
                self._end_of_transfer(actions)
            return
        if self._overlong or len(frame) >= MAX_FRAME:
            self._overlong += 1
        else:
            frame.append(byte)
        if byte == LF:
            self._frame_done(now, actions)

    def _frame_done(self, now: float, actions: list[Action]) -> None:
        raw, overlong = bytes(self._frame or b""), self._overlong
        self._frame, self._overlong = None, 0
        self._deadline = now + self._timeout  # E1381: the timer restarts with each reply
        if overlong:
            actions += [_NAK, Note("frame_too_long", f"{len(raw) + overlong} bytes")]
            return
        parsed = parse_frame(raw)
        if isinstance(parsed, FrameError):
            actions += [_NAK, Note(parsed.reason, parsed.detail)]
        elif self._discarding:
            actions.append(_NAK)
        elif parsed.number == self._expected:
            self._take(parsed, now, actions)
        elif parsed.number == self._last:
            actions += [_ACK, Note("duplicate_frame", f"frame {parsed.number}")]
        else:
            detail = f"frame {parsed.number}, expected {self._expected}"
            actions += [_NAK, Note("wrong_frame_number", detail)]

    def _take(self, frame: Frame, now: float, actions: list[Action]) -> None:
        if len(self._message) + len(frame.text) > self.max_message_bytes:
            self._discarding = True
            self._message.clear()
            actions += [_NAK, Note("message_too_long", f"over {self.max_message_bytes} bytes")]
            return
        stream = bytes(self._message) + frame.text
        if not (frame.final and ends_with_terminator(stream)):
            self._message += frame.text
            self._accepted(frame.number)
            actions.append(_ACK)
            return
        self._state = _State.COMMIT
        self._final = frame
        self._refused = False
        self._sequence += 1
        for message in to_messages(stream, self.profile, self.source, now, self._sequence):
            token = self._next_token
            self._next_token += 1
            self._outstanding.add(token)
            actions.append(Deliver(message, token))

    def _accepted(self, number: int) -> None:
        self._last = number
        self._expected = next_number(number)

    def _end_of_transfer(self, actions: list[Action]) -> None:
        if self._message and not self._discarding:
            actions.append(Note("incomplete_message", f"{len(self._message)} bytes, no L record"))
        self._to_neutral()

    def _to_neutral(self) -> None:
        self._state = _State.NEUTRAL
        self._frame, self._overlong = None, 0
        self._message.clear()
        self._discarding = False
        self._deadline = None

    def _clear_final(self) -> None:
        self._final = None
        self._outstanding = set()
        self._refused = False
