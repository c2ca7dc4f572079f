"""Plays a device profile's simulator messages onto a serial line, as the device would.

astm-e1394: each message is one E1381 session driven by AstmSender (ENQ, frames, answers to
ACK/NAK/contention, retransmissions, EOT). line-kv and print-capture: the bytes as the device
writes them, with ``pause_seconds`` between messages. Faults (:mod:`gateway.simulate.faults`)
are applied to the messages they name.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import serial

from gateway.ingest.serial.astm_records import encode_records
from gateway.ingest.serial.astm_sender import AstmSender
from gateway.ingest.serial.engine import Note, Send
from gateway.ingest.serial.profile import (
    AstmProtocol,
    DeviceProfile,
    LineKvProtocol,
    PrintCaptureProtocol,
)
from gateway.simulate.faults import (
    Injection,
    astm_faults,
    at_wrong_rate,
    drop_middle,
    for_message,
    junk,
    noise,
)

READ_WAIT = 0.1


class LineLike(Protocol):
    """The part of a pyserial port the simulator uses."""

    timeout: float | None
    baudrate: int

    @property
    def in_waiting(self) -> int: ...

    def read(self, size: int = 1) -> bytes: ...

    def write(self, data: bytes, /) -> int | None: ...

    def flush(self) -> None: ...


@dataclass
class PlayReport:
    """What happened: messages played, and for ASTM which the host acknowledged."""

    played: int = 0
    delivered: int = 0  # astm-e1394: ACKed to the end; other protocols: written
    abandoned: int = 0  # astm-e1394: given up after the sender's attempts
    events: dict[str, int] = field(default_factory=dict)


def open_line(port: str, baudrate: int) -> serial.SerialBase:
    """The device's end of the line: a device path, a pty, or a pyserial URL."""
    line: serial.SerialBase = serial.serial_for_url(port, baudrate=baudrate, timeout=READ_WAIT)
    return line


def emulates_rate(port: str) -> bool:
    """True when the line has no real baud rate (pty, socket): wrong-baud is then emulated."""
    if "://" in port:
        return True
    try:
        return str(Path(port).resolve()).startswith("/dev/pts/")
    except OSError:
        return False


class DeviceSimulator:
    """Plays ``count`` messages (cycling through the profile's) onto ``line``."""

    def __init__(
        self,
        profile: DeviceProfile,
        line: LineLike,
        *,
        injections: tuple[Injection, ...] = (),
        count: int | None = None,
        messages: Sequence[str] | None = None,
        emulate_rate: bool = True,
        retry_wait: float = 10.0,
        log: Callable[[str], None] = lambda _text: None,
    ) -> None:
        self.profile = profile
        self.line = line
        self.injections = injections
        self.messages = list(messages if messages is not None else profile.simulator.messages)
        if not self.messages:
            raise ValueError(f"profile {profile.name!r} has no simulator messages")
        self.count = len(self.messages) if count is None else count
        self.emulate_rate = emulate_rate
        self.retry_wait = retry_wait
        self.log = log
        self.report = PlayReport()

    def run(self, stop: threading.Event | None = None) -> PlayReport:
        """Play every message (or until ``stop``); returns the report."""
        stop = stop or threading.Event()
        for index in range(self.count):
            if stop.is_set():
                break
            if index and stop.wait(self._pause()):
                break
            text = self.messages[index % len(self.messages)]
            faults = for_message(self.injections, index + 1)
            if isinstance(self.profile.link, AstmProtocol):
                self._play_astm(text, faults, stop)
            else:
                self._play_raw(text, faults, stop)
            self.report.played += 1
        return self.report

    # -- astm-e1394 --------------------------------------------------------------------------

    def _play_astm(self, text: str, faults: tuple[Injection, ...], stop: threading.Event) -> None:
        sender = AstmSender(
            self.profile,
            [encode_records(text.splitlines())],
            astm_faults(faults),
            retry_wait=self.retry_wait,
            busy_wait=self.retry_wait,
        )
        wrong = next((f for f in faults if f.kind == "wrong-baud"), None)
        garble = wrong is not None  # the first attempt only: then the "device" is set right
        while not sender.done and not stop.is_set():
            now = time.monotonic()
            actions = sender.poll(now)
            deadline = sender.next_deadline()
            wait = READ_WAIT if deadline is None else max(0.0, min(READ_WAIT, deadline - now))
            self.line.timeout = wait
            data = self.line.read(1)
            if data and self.line.in_waiting:
                data += self.line.read(self.line.in_waiting)
            if data:
                actions += sender.feed(data, time.monotonic())
            for action in actions:
                if isinstance(action, Send):
                    payload = action.data
                    if garble and wrong is not None:
                        payload = self._wrong_rate(payload, wrong)
                    self._write(payload)
                elif isinstance(action, Note):
                    self._event(action.counter, action.detail)
                    if action.counter in ("establish_timeout", "ack_timeout", "aborted"):
                        garble = False
        self.report.delivered += len(sender.delivered)
        self.report.abandoned += len(sender.abandoned)

    # -- line-kv, print-capture --------------------------------------------------------------

    def _play_raw(self, text: str, faults: tuple[Injection, ...], stop: threading.Event) -> None:
        encoding = getattr(self.profile.link, "encoding", "latin-1")
        data = text.encode(encoding)
        kinds = {f.kind: f for f in faults}
        if "bad-checksum" in kinds:
            raise ValueError("bad-checksum applies to astm-e1394 profiles only")
        if "noise" in kinds:
            self._write(noise(int(kinds["noise"].amount)))
            self._event("injected", "noise")
            stop.wait(self._pause())
        if "flood" in kinds:
            self._write(junk(int(kinds["flood"].amount)))
            self._event("injected", "flood")
            stop.wait(self._pause())
        if "drop" in kinds:
            data = drop_middle(data, int(kinds["drop"].amount))
            self._event("injected", "dropped bytes")
        if "partial" in kinds:
            data = data[: len(data) // 2]
            self._event("injected", "message cut short")
        if "wrong-baud" in kinds:
            data = self._wrong_rate(data, kinds["wrong-baud"])
        if "silence" in kinds:
            half = len(data) // 2
            self._write(data[:half])
            self._event("injected", f"silence {kinds['silence'].amount} s")
            stop.wait(kinds["silence"].amount)
            data = data[half:]
        self._write(data)
        self.report.delivered += 1

    # -- helpers -----------------------------------------------------------------------------

    def _pause(self) -> float:
        """The pause between messages; longer than the idle timeout where only silence ends one."""
        pause = self.profile.simulator.pause_seconds
        link = self.profile.link
        if isinstance(link, PrintCaptureProtocol) or (
            isinstance(link, LineKvProtocol) and link.terminator_pattern is None
        ):
            # Otherwise two messages would reach the gateway as one report. The margin grows
            # with the timeout: the gateway times silence from when it reads, and a busy box
            # reads late.
            pause = max(pause, link.idle_timeout * 1.5 + 0.5)
        return pause

    def _wrong_rate(self, data: bytes, fault: Injection) -> bytes:
        right = self.line.baudrate
        wrong = int(fault.amount) or max(50, right // 2)
        if self.emulate_rate:
            return at_wrong_rate(data, wrong, right)
        # A real UART: the bytes really go out at the other rate.
        self.line.flush()
        self.line.baudrate = wrong
        try:
            self._write(data)
        finally:
            self.line.baudrate = right
        return b""

    def _write(self, data: bytes) -> None:
        if data:
            self.line.write(data)
            self.line.flush()

    def _event(self, counter: str, detail: str) -> None:
        self.report.events[counter] = self.report.events.get(counter, 0) + 1
        self.log(f"{counter}: {detail}" if detail else counter)
