"""In-memory stand-ins for the spool and the sender, driven by a FakeClock."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from gateway.clock import FakeClock
from gateway.forward.outcome import SendOutcome
from gateway.spool.entries import SpoolEntry


@dataclass
class Recorded:
    """What the lane told the queue about one delivery."""

    state: str = "pending"
    due: float = 0.0
    retries: list[tuple[str, str, float, int | None]] = field(default_factory=list)
    failure: tuple[str, str, int | None] | None = None


class FakeQueue:
    """A spool in memory. Waiting advances the fake clock instead of sleeping.

    With ``stop`` given, it sets it once nothing is left to deliver, so ``lane.run`` returns.
    """

    def __init__(
        self,
        clock: FakeClock,
        entries: list[SpoolEntry],
        stop: threading.Event | None = None,
        on_wait: Callable[[], None] | None = None,
    ) -> None:
        self.clock = clock
        self.entries = {e.delivery_id: e for e in entries}
        self.records = {e.delivery_id: Recorded(due=clock.now()) for e in entries}
        self.waits: list[float] = []
        self._stop = stop
        self._on_wait = on_wait
        self._lock = threading.Lock()

    def claim_next(self, destination: str) -> SpoolEntry | None:
        with self._lock:
            due = [
                (r.due, i)
                for i, r in self.records.items()
                if r.state == "pending" and r.due <= self.clock.now()
            ]
            if not due:
                return None
            _, delivery_id = min(due)
            self.records[delivery_id].state = "sending"
            return self.entries[delivery_id]

    def mark_sent(self, delivery_id: int) -> None:
        with self._lock:
            self.records[delivery_id].state = "sent"

    def mark_retry(
        self,
        delivery_id: int,
        failure_class: str,
        reason: str,
        next_attempt_at: float,
        status: int | None = None,
    ) -> None:
        with self._lock:
            record = self.records[delivery_id]
            record.state, record.due = "pending", next_attempt_at
            record.retries.append((failure_class, reason, next_attempt_at, status))
            entry = self.entries[delivery_id]
            self.entries[delivery_id] = replace(entry, attempts=entry.attempts + 1)

    def mark_failed(
        self, delivery_id: int, failure_class: str, reason: str, status: int | None = None
    ) -> None:
        with self._lock:
            record = self.records[delivery_id]
            record.state, record.failure = "failed", (failure_class, reason, status)

    def next_due(self, destination: str) -> float | None:
        with self._lock:
            dues = [r.due for r in self.records.values() if r.state == "pending"]
            return min(dues) if dues else None

    def wait_for_work(self, destination: str, timeout: float) -> None:
        self.waits.append(timeout)
        if self._on_wait is not None:
            self._on_wait()
        if self._stop is not None and all(
            r.state in ("sent", "failed") for r in self.records.values()
        ):
            self._stop.set()
        self.clock.advance(timeout)

    def states(self) -> dict[int, str]:
        with self._lock:
            return {i: r.state for i, r in self.records.items()}


class FakeSender:
    """Answers each send from a script; records (delivery_id, fake time) of every call."""

    def __init__(self, clock: FakeClock, script: Callable[[SpoolEntry, int], SendOutcome]) -> None:
        self.clock = clock
        self.script = script
        self.calls: list[tuple[int, float]] = []
        self.idle_checks = 0
        self.closed = False
        self.interrupted = False

    def send(self, entry: SpoolEntry) -> SendOutcome:
        self.calls.append((entry.delivery_id, self.clock.now()))
        return self.script(entry, len(self.calls))

    def release_if_idle(self) -> None:
        self.idle_checks += 1

    def interrupt(self) -> None:
        self.interrupted = True

    def close(self) -> None:
        self.closed = True
