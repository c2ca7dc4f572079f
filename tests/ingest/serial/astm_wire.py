"""An in-memory serial line between an AstmSender (the instrument) and an AstmReceiver (us).

Time is simulated: the wire jumps to the next deadline of either engine, so tests of 15 s and
30 s timeouts never sleep. ``line`` may rewrite what the instrument sends (lost or added bytes).
"""

from __future__ import annotations

import tomllib
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from gateway.ingest.serial.astm_link import AstmReceiver
from gateway.ingest.serial.astm_records import encode_records
from gateway.ingest.serial.astm_sender import AstmSender
from gateway.ingest.serial.engine import Action, Deliver, Note, Send
from gateway.ingest.serial.message import DeviceMessage
from gateway.ingest.serial.profile import DeviceProfile

PROFILE_FILE = Path(__file__).parents[3] / "gateway" / "profiles" / "astm-e1394.toml"


def builtin_profile() -> DeviceProfile:
    """The built-in astm-e1394 profile, read straight from its file."""
    with PROFILE_FILE.open("rb") as f:
        return DeviceProfile.model_validate(tomllib.load(f))


def simulator_messages(profile: DeviceProfile) -> list[bytes]:
    """The profile's simulator messages as record streams."""
    return [encode_records(m.splitlines()) for m in profile.simulator.messages]


@dataclass
class Wire:
    """Connects the two engines; records what each side saw and counted."""

    sender: AstmSender
    receiver: AstmReceiver
    commit: Callable[[DeviceMessage], bool] = lambda _m: True
    line: Callable[[bytes], bytes] = lambda data: data
    now: float = 0.0
    delivered: list[DeviceMessage] = field(default_factory=list)  # every Deliver, in order
    queued: list[DeviceMessage] = field(default_factory=list)  # those committed ok
    host_notes: list[Note] = field(default_factory=list)
    device_notes: list[Note] = field(default_factory=list)
    to_host: bytearray = field(default_factory=bytearray)
    to_device: bytearray = field(default_factory=bytearray)
    _pending: deque[tuple[str, bytes]] = field(default_factory=deque)

    def run(self, max_steps: int = 10_000) -> None:
        """Run until the sender is done (every message delivered or abandoned)."""
        for _ in range(max_steps):
            self._device(self.sender.poll(self.now))
            self._host(self.receiver.poll(self.now))
            self._pump()
            if self.sender.done:
                return
            deadlines = [
                d
                for d in (self.sender.next_deadline(), self.receiver.next_deadline())
                if d is not None
            ]
            self.now = max(self.now, min(deadlines))
        raise AssertionError("the sender never finished")

    def host_counts(self) -> dict[str, int]:
        """How often each receiver counter was noted."""
        return _counts(self.host_notes)

    def device_counts(self) -> dict[str, int]:
        """How often each sender counter was noted."""
        return _counts(self.device_notes)

    def _pump(self) -> None:
        while self._pending:
            side, data = self._pending.popleft()
            if side == "host":
                self._host(self.receiver.feed(data, self.now))
            else:
                self._device(self.sender.feed(data, self.now))

    def _device(self, actions: list[Send | Note]) -> None:
        for action in actions:
            if isinstance(action, Send):
                data = self.line(action.data)
                self.to_host += data
                self._pending.append(("host", data))
            else:
                self.device_notes.append(action)

    def _host(self, actions: list[Action]) -> None:
        for action in actions:
            if isinstance(action, Send):
                self.to_device += action.data
                self._pending.append(("device", action.data))
            elif isinstance(action, Deliver):
                self.delivered.append(action.message)
                ok = self.commit(action.message)
                if ok:
                    self.queued.append(action.message)
                self._host(self.receiver.committed(action.token, ok, self.now))
            else:
                self.host_notes.append(action)


def _counts(notes: list[Note]) -> dict[str, int]:
    out: dict[str, int] = {}
    for note in notes:
        out[note.counter] = out.get(note.counter, 0) + 1
    return out
