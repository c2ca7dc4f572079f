"""The instrument (sender) side of ASTM E1381, pure, for the modality simulator and the tests.

Establishment: ENQ, then ACK (go), NAK (the host is busy: wait 10 s, try again) or ENQ
(contention: the host has priority; the instrument waits ``contention_wait``, 20 s, before its
next ENQ). Transfer: each frame waits for ACK; a NAK retransmits it, and after
``max_retransmissions`` NAKs of one frame the message is aborted with EOT. No reply within 15 s
(``frame_ack_timeout``) aborts it too, as E1381 prescribes. An aborted message is repeated whole
later (after ``retry_wait``); after ``max_attempts`` tries that ended in an abort, a busy NAK or
contention, it is abandoned (the simulator must end; a real instrument keeps it). EOT ends a
delivered message. ``AstmFaults`` injects the errors a bad line or a bad device produces.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field

from gateway.ingest.serial.astm_frames import ACK, ENQ, EOT, NAK, frame_message
from gateway.ingest.serial.engine import Note, Send
from gateway.ingest.serial.profile import AstmProtocol, DeviceProfile

SenderAction = Send | Note


@dataclass(frozen=True)
class AstmFaults:
    """Errors to inject. Frame numbers here count every frame sent, retransmissions included,
    from 1 for the sender's first frame; each fault fires once."""

    bad_checksum_frames: AbstractSet[int] = field(default_factory=frozenset)
    noise_before: bytes = b""  # sent before each message's first ENQ
    drop_bytes_in_frame: int | None = None  # this frame loses ``drop_count`` bytes mid-text
    drop_count: int = 3
    partial_frame: int | None = None  # this frame is cut after half its bytes
    stall_after_frame: int | None = None  # after this frame's ACK, silence for stall_seconds
    stall_seconds: float = 0.0
    flood_frames: int = 0  # well-formed junk frames sent, unsolicited, before each message


class _State(enum.Enum):
    IDLE = "idle"  # between attempts; wakes at _wake
    ESTABLISH = "establish"  # ENQ sent, waiting for ACK / NAK / ENQ
    AWAIT_ACK = "await-ack"  # a frame sent, waiting for its reply
    STALL = "stall"  # injected silence mid-message


class AstmSender:
    """Plays record streams (see ``encode_records``) to a host as an E1381 instrument would."""

    def __init__(
        self,
        profile: DeviceProfile,
        messages: Sequence[bytes],
        inject: AstmFaults | None = None,
        *,
        retry_wait: float = 10.0,
        busy_wait: float = 10.0,
        max_attempts: int = 3,
    ) -> None:
        if not isinstance(profile.link, AstmProtocol):
            raise ValueError(f"profile {profile.name!r} is not an astm-e1394 profile")
        self.link = profile.link
        self.pause = profile.simulator.pause_seconds
        self.faults = inject or AstmFaults()
        self.retry_wait = retry_wait
        self.busy_wait = busy_wait
        self.max_attempts = max_attempts
        self._frames = [list(frame_message(m)) for m in messages]
        self.delivered: list[int] = []  # indexes of messages the host ACKed to the end
        self.abandoned: list[int] = []  # indexes given up after max_attempts
        self._index = 0
        self._attempts = 0
        self._fresh = True  # the next ENQ is this message's first: inject the "before" faults
        self._state = _State.IDLE
        self._wake = 0.0  # IDLE and STALL: when to act
        self._deadline = 0.0  # ESTABLISH and AWAIT_ACK: the reply timeout
        self._frame = 0  # index of the frame in flight within the message
        self._naks = 0
        self._sent = 0  # frames transmitted so far (the fault numbering)
        self._stalled = False

    @property
    def done(self) -> bool:
        """Every message was delivered or abandoned."""
        return self._index >= len(self._frames) and self._state is _State.IDLE

    def next_deadline(self) -> float | None:
        """When poll() must run next; None when done."""
        if self.done:
            return None
        if self._state in (_State.IDLE, _State.STALL):
            return self._wake
        return self._deadline

    def poll(self, now: float) -> list[SenderAction]:
        """Start a message, end a stall, or time out waiting for the host."""
        deadline = self.next_deadline()
        if deadline is None or now < deadline:
            return []
        if self._state is _State.IDLE:
            return self._enquire(now)
        if self._state is _State.STALL:
            self._state = _State.AWAIT_ACK
            return self._transmit(now)
        if self._state is _State.ESTABLISH:
            return self._abort(now, "establish_timeout", "no reply to ENQ")
        return self._abort(now, "ack_timeout", f"no reply to frame {self._sent}")

    def feed(self, data: bytes, now: float) -> list[SenderAction]:
        """Bytes from the host: the replies ACK, NAK, ENQ (EOT counts as ACK, per E1381)."""
        actions: list[SenderAction] = []
        for byte in data:
            if self._state is _State.ESTABLISH:
                actions += self._establish_reply(byte, now)
            elif self._state is _State.AWAIT_ACK:
                actions += self._frame_reply(byte, now)
            elif byte == ENQ:
                # The simulator only sends; a host that wants to talk is told it is busy.
                actions.append(Send(bytes([NAK])))
        return actions

    def _enquire(self, now: float) -> list[SenderAction]:
        actions: list[SenderAction] = []
        if self._fresh:
            self._fresh = False
            if self.faults.noise_before:
                actions += [Send(self.faults.noise_before), Note("injected", "noise")]
            if self.faults.flood_frames:
                junk = b"".join(frame_message(b"X|junk\r" * self.faults.flood_frames, first=1))
                actions += [Send(junk), Note("injected", f"{self.faults.flood_frames} frames")]
        self._state = _State.ESTABLISH
        self._deadline = now + self.link.frame_ack_timeout
        actions.append(Send(bytes([ENQ])))
        return actions

    def _establish_reply(self, byte: int, now: float) -> list[SenderAction]:
        if byte == ACK:
            self._state, self._frame, self._naks = _State.AWAIT_ACK, 0, 0
            return self._transmit(now)
        if byte == NAK:
            return self._retry_later(now, self.busy_wait, Note("busy", "host NAKed ENQ"))
        if byte == ENQ:
            # Contention: the host has priority; the instrument waits before its next ENQ.
            note = Note("contention", "host sent ENQ too")
            return self._retry_later(now, self.link.contention_wait, note)
        return []

    def _frame_reply(self, byte: int, now: float) -> list[SenderAction]:
        if byte in (ACK, EOT):
            return self._acked(now)
        if byte == NAK:
            self._naks += 1
            if self._naks >= self.link.max_retransmissions:
                return self._abort(now, "aborted", f"frame NAKed {self._naks} times")
            return [Note("nak", f"frame {self._sent}"), *self._transmit(now)]
        return []

    def _acked(self, now: float) -> list[SenderAction]:
        self._frame += 1
        self._naks = 0
        frames = self._frames[self._index]
        if self._frame >= len(frames):
            self.delivered.append(self._index)
            self._next_message()
            self._state, self._wake = _State.IDLE, now + self.pause
            return [Send(bytes([EOT])), Note("delivered", f"message {len(self.delivered)}")]
        if self.faults.stall_after_frame == self._sent and not self._stalled:
            self._stalled = True
            self._state, self._wake = _State.STALL, now + self.faults.stall_seconds
            return [Note("injected", f"silence {self.faults.stall_seconds} s")]
        return self._transmit(now)

    def _transmit(self, now: float) -> list[SenderAction]:
        self._sent += 1
        frame = self._frames[self._index][self._frame]
        notes: list[SenderAction] = []
        if self._sent in self.faults.bad_checksum_frames:
            wrong = f"{(int(frame[-4:-2], 16) + 1) % 256:02X}".encode()
            frame = frame[:-4] + wrong + frame[-2:]
            notes.append(Note("injected", f"bad checksum in frame {self._sent}"))
        if self._sent == self.faults.drop_bytes_in_frame:
            middle = max(2, len(frame) // 2 - self.faults.drop_count // 2)
            frame = frame[:middle] + frame[middle + self.faults.drop_count :]
            notes.append(Note("injected", f"bytes dropped from frame {self._sent}"))
        if self._sent == self.faults.partial_frame:
            frame = frame[: len(frame) // 2]
            notes.append(Note("injected", f"frame {self._sent} cut short"))
        self._state = _State.AWAIT_ACK
        self._deadline = now + self.link.frame_ack_timeout
        return [Send(frame), *notes]

    def _abort(self, now: float, counter: str, detail: str) -> list[SenderAction]:
        return [Send(bytes([EOT])), *self._retry_later(now, self.retry_wait, Note(counter, detail))]

    def _retry_later(self, now: float, wait: float, note: Note) -> list[SenderAction]:
        actions: list[SenderAction] = [note]
        self._attempts += 1
        if self._attempts >= self.max_attempts:
            self.abandoned.append(self._index)
            actions.append(Note("abandoned", f"message {self._index + 1}"))
            self._next_message()
        self._state, self._wake = _State.IDLE, now + wait
        return actions

    def _next_message(self) -> None:
        self._index += 1
        self._attempts = 0
        self._fresh = True
