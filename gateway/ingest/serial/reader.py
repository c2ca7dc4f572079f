"""The port thread of one serial source: bytes in, protocol engine, actions out.

``SerialReader.run(stop)`` is a supervised thread body. It reads with a short timeout (never
past the engine's next deadline), feeds the engine, and carries out what the engine asks:
``Send`` is written to the device, ``Deliver`` goes to the sink (which queues it durably) and
the outcome back to the engine (which then ACKs or NAKs), ``Note`` is counted and logged.
Nothing a device sends can end the thread: an engine that raises is logged, counted and reset.
A lost port is reopened with backoff, and the engine reset, while the rest of the gateway runs.
"""

from __future__ import annotations

import logging
import threading
import traceback
from collections.abc import Callable
from dataclasses import dataclass

from gateway.clock import Clock
from gateway.ingest.serial.engine import Action, Deliver, Note, ProtocolEngine, Send
from gateway.ingest.serial.message import DeviceMessage
from gateway.ingest.serial.monitor import SerialMonitor
from gateway.ingest.serial.port import PortLostError, SerialPort, WriteStalledError
from gateway.logsetup import event

READ_CHUNK = 4096  # bytes per read: the engine never gets more than this at once
MAX_READ_WAIT = 0.2  # seconds; how quickly a stop request is seen while the line is quiet

Sink = Callable[[DeviceMessage], bool]

# Engine notes about how a good message was read, not about a fault on the line: logged at INFO
# the first time a port sees them (then DEBUG), and not counted as a streak of line trouble.
INFORMATIONAL = frozenset(
    {
        "unmapped_results",
        "unit_not_mapped",
        "value_not_numeric",
        "report_ended_by_patient_change",
        "duplicate_frame",
        "busy",
        "contention",
    }
)


class EngineClock:
    """The time given to the engine: wall-clock seconds that never jump during a message.

    Engines stamp messages with it (DeviceMessage.received_at) and measure protocol timeouts
    with it. A Raspberry Pi without a real-time clock steps its wall clock (at boot, when NTP
    answers); a step in the middle of a message would fire or stall its timeouts. So the time
    runs on the monotonic clock from an anchor, and the anchor follows the wall clock only
    while the engine has nothing pending.
    """

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self._wall = clock.now()
        self._mono = clock.monotonic()

    def now(self, idle: bool) -> float:
        """The engine's time; ``idle`` (nothing pending) lets it follow the wall clock again."""
        if idle:
            self._wall = self.clock.now()
            self._mono = self.clock.monotonic()
            return self._wall
        return self._wall + (self.clock.monotonic() - self._mono)


@dataclass
class _Streak:
    """Problems of one kind since the last good message: logged at the first, counted after."""

    count: int = 0


class SerialReader:
    """Runs one port: reads, drives the protocol engine, writes its replies, delivers messages."""

    def __init__(
        self,
        *,
        source: str,
        port: SerialPort,
        engine_factory: Callable[[], ProtocolEngine],
        sink: Sink,
        clock: Clock,
        logger: logging.Logger,
    ) -> None:
        self.source = source
        self.port = port
        self.engine_factory = engine_factory
        self.engine = engine_factory()
        self.sink = sink
        self.clock = clock
        self.log = logger
        self.engine_clock = EngineClock(clock)
        self.counters: dict[str, int] = {}
        self._streaks: dict[str, _Streak] = {}
        self._lock = threading.Lock()  # stats() is read from other threads (status, web)
        self.monitor = SerialMonitor(clock)  # framing events for the panel's live view
        self.last_activity: float | None = None  # wall clock of the last message queued

    # -- thread body -------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """Serve the port until ``stop`` is set; the port is closed on the way out."""
        try:
            while not stop.is_set():
                if not self.port.is_open:
                    if not self._open():
                        stop.wait(self.port.retry_delay())
                    continue
                self.step()
        finally:
            self.port.close()

    def _open(self) -> bool:
        if not self.port.open():
            return False
        if self.port.reopened:
            self._count("reopened")
            # Whatever was half-received before the loss cannot be completed after it.
            self._safely(lambda: self.engine.reset())
        return True

    def step(self) -> None:
        """One read (bounded by the engine's deadline) and the engine's reaction to it."""
        timeout = self._read_timeout()
        try:
            data = self.port.read(READ_CHUNK, timeout)
        except PortLostError:
            self._count("port_lost")
            return
        if data:
            self._count("bytes_in", len(data))
            self.monitor.record("in", data)
            self._safely(lambda: self.engine.feed(data, self._now()))
        else:
            self._safely(lambda: self.engine.poll(self._now()))
        # A deadline can pass while bytes keep arriving (a slow trickle of noise).
        deadline = self._deadline()
        if deadline is not None and deadline <= self._now():
            self._safely(lambda: self.engine.poll(self._now()))

    def _read_timeout(self) -> float:
        deadline = self._deadline()
        if deadline is None:
            return MAX_READ_WAIT
        return max(0.0, min(MAX_READ_WAIT, deadline - self._now()))

    def _deadline(self) -> float | None:
        try:
            return self.engine.next_deadline()
        except Exception as exc:  # noqa: BLE001 - counted and reset by _engine_failed
            self._engine_failed(exc)
            return None

    def _now(self) -> float:
        return self.engine_clock.now(idle=self._idle())

    def _idle(self) -> bool:
        try:
            return self.engine.next_deadline() is None
        except Exception:  # noqa: BLE001 - the next engine call meets it and resets
            return False

    # -- actions -----------------------------------------------------------------------------

    def _safely(self, call: Callable[[], list[Action]]) -> None:
        """Run an engine call and carry out its actions; an engine that raises is reset."""
        try:
            actions = call()
        except Exception as exc:  # noqa: BLE001 - nothing a device sends may end the port thread
            self._engine_failed(exc)
            return
        self._carry_out(actions)

    def _carry_out(self, actions: list[Action]) -> None:
        pending = list(actions)
        while pending:
            action = pending.pop(0)
            if isinstance(action, Send):
                self._send(action.data)
            elif isinstance(action, Deliver):
                ok = self._deliver(action.message)
                try:
                    pending.extend(self.engine.committed(action.token, ok, self._now()))
                except Exception as exc:  # noqa: BLE001 - as in _safely
                    self._engine_failed(exc)
                    return
            elif isinstance(action, Note):
                self._note(action)

    def _send(self, data: bytes) -> None:
        if not self.port.is_open:
            return  # lost just now; the engine is reset when it comes back
        try:
            self.port.write(data)
        except PortLostError:
            self._count("port_lost")
            return
        except WriteStalledError:
            self._count("write_stalled")
            return
        self._count("bytes_out", len(data))
        self.monitor.record("out", data)

    def _deliver(self, message: DeviceMessage) -> bool:
        try:
            ok = self.sink(message)
        except Exception as exc:  # noqa: BLE001 - a failing sink is a refused delivery (NAK)
            event(
                self.log,
                logging.ERROR,
                "serial delivery failed",
                source=self.source,
                **_failure(exc),
            )
            ok = False
        if ok:
            self._count("delivered")
            self.last_activity = self.clock.now()
            self._recovered()
        else:
            self._count("refused")
        event(
            self.log,
            logging.INFO if ok else logging.WARNING,
            "message queued" if ok else "message not queued; device will be refused",
            source=self.source,
            sequence=message.sequence,
            kind=message.kind,
            measurements=len(message.measurements),
            size=len(message.raw),
        )
        return ok

    def _note(self, note: Note) -> None:
        self._count(note.counter)
        if note.counter in INFORMATIONAL:
            level = logging.INFO if self.counters[note.counter] == 1 else logging.DEBUG
        else:
            streak = self._streaks.setdefault(note.counter, _Streak())
            streak.count += 1
            # Log the transition, not the repeat: the first of a kind since the last good message.
            level = logging.WARNING if streak.count == 1 else logging.DEBUG
        event(
            self.log,
            level,
            "serial line event",
            source=self.source,
            counter=note.counter,
            detail=note.detail,
        )

    def _recovered(self) -> None:
        if self._streaks:
            seen = ",".join(f"{k}={v.count}" for k, v in sorted(self._streaks.items()))
            event(
                self.log,
                logging.INFO,
                "good message after line events",
                source=self.source,
                events=seen,
            )
            self._streaks.clear()

    def _engine_failed(self, exc: Exception) -> None:
        self._count("engine_error")
        event(
            self.log,
            logging.ERROR,
            "protocol engine failed; reset",
            source=self.source,
            **_failure(exc),
        )
        try:
            actions = self.engine.reset()
        except Exception as again:  # noqa: BLE001 - start over with a fresh engine
            event(
                self.log,
                logging.ERROR,
                "protocol engine reset failed; replaced",
                source=self.source,
                **_failure(again),
            )
            self.engine = self.engine_factory()
            return
        for action in actions:
            if isinstance(action, Send):
                self._send(action.data)
            elif isinstance(action, Note):
                self._note(action)

    # -- counters ----------------------------------------------------------------------------

    def _count(self, name: str, n: int = 1) -> None:
        with self._lock:
            self.counters[name] = self.counters.get(name, 0) + n

    def stats(self) -> dict[str, int]:
        """Counters since start: bytes_in/out, delivered, refused, port_lost, reopened, notes."""
        with self._lock:
            return dict(self.counters)


def _failure(exc: BaseException) -> dict[str, str]:
    """What to log of an exception: its type and where, not its message (it may quote data)."""
    frames = traceback.extract_tb(exc.__traceback__)
    where = f"{frames[-1].filename.rsplit('/', 1)[-1]}:{frames[-1].lineno}" if frames else ""
    return {"error": type(exc).__name__, "at": where}
