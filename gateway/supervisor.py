"""The supervisor: owns every service thread, starts them in order and stops them in reverse.

A service is a named pair of start/stop callables, or a long-running function given a stop event
that the supervisor runs in its own thread. A thread that dies unexpectedly is restarted within a
budget (5 restarts in 60 s, as Frigate's watchdog does); past it the supervisor gives up, which
ends the daemon with a non-zero status so systemd restarts it with a clean slate.

A thread that has not returned by the stop deadline (a C-STORE to a PACS that stopped reading)
is interrupted: the ``interrupt`` given with it runs in the stopping thread and must make the body
return soon (a lane aborts its association). The process must exit even so: every service thread
is a daemon, and whatever the body leaves unfinished is recovered at the next start.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from gateway.clock import Clock
from gateway.logsetup import event

log = logging.getLogger("gateway.supervisor")

ThreadBody = Callable[[threading.Event], None]
INTERRUPT_GRACE_SECONDS = 2.0  # after an interrupt, for the body to record what it was doing


class RestartBudgetExceededError(Exception):
    """A service thread kept dying; the daemon must stop and let systemd restart it."""


@dataclass
class _Service:
    name: str
    start: Callable[[], None]
    stop: Callable[[], None]


@dataclass
class _Worker:
    name: str
    body: ThreadBody
    interrupt: Callable[[], None] | None = None
    stop_event: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None
    failures: deque[float] = field(default_factory=lambda: deque(maxlen=16))
    error: BaseException | None = None


class Supervisor:
    """Starts services in the order added, stops them in reverse, and restarts dead threads."""

    def __init__(
        self,
        clock: Clock,
        *,
        restart_limit: int = 5,
        restart_window: float = 60.0,
        stop_timeout: float = 8.0,
        interrupt_grace: float = INTERRUPT_GRACE_SECONDS,
    ) -> None:
        self._clock = clock
        self._restart_limit = restart_limit
        self._restart_window = restart_window
        self._stop_timeout = stop_timeout
        self._interrupt_grace = interrupt_grace
        self._steps: list[_Service | _Worker] = []
        self._started: list[_Service | _Worker] = []
        self._lock = threading.Lock()

    def add(self, name: str, start: Callable[[], None], stop: Callable[[], None]) -> None:
        """A service with its own start and stop (opening a database, an observer...)."""
        self._steps.append(_Service(name, start, stop))

    def add_thread(
        self, name: str, body: ThreadBody, interrupt: Callable[[], None] | None = None
    ) -> None:
        """A long-running body(stop_event) run in a thread the supervisor owns and joins.

        ``interrupt`` (from the stopping thread, once, if the body outlives the stop deadline)
        must make the body return: abort what it is blocked in.
        """
        self._steps.append(_Worker(name, body, interrupt))

    @property
    def names(self) -> list[str]:
        """Service names in start order."""
        return [step.name for step in self._steps]

    def start_all(self) -> None:
        """Start every service in order; if one fails, stop those already started and re-raise."""
        for step in self._steps:
            try:
                if isinstance(step, _Service):
                    step.start()
                else:
                    self._launch(step)
            except BaseException:
                log.exception("service failed to start", extra={"service": step.name})
                self.stop_all()
                raise
            self._started.append(step)
            event(log, logging.DEBUG, "service started", service=step.name)

    def _launch(self, worker: _Worker) -> None:
        worker.stop_event.clear()
        worker.error = None

        def run() -> None:
            try:
                worker.body(worker.stop_event)
            except BaseException as exc:  # a dead thread must be seen, not vanish
                worker.error = exc
                log.exception("service thread died", extra={"service": worker.name})

        worker.thread = threading.Thread(target=run, name=worker.name, daemon=True)
        worker.thread.start()

    def check(self) -> None:
        """Restart threads that died; raise RestartBudgetExceededError past the budget."""
        with self._lock:
            for step in self._started:
                if not isinstance(step, _Worker) or step.thread is None:
                    continue
                if step.thread.is_alive() or step.stop_event.is_set():
                    continue
                now = self._clock.monotonic()
                step.failures.append(now)
                recent = [t for t in step.failures if now - t <= self._restart_window]
                if len(recent) > self._restart_limit:
                    raise RestartBudgetExceededError(
                        f"service {step.name} died {len(recent)} times in "
                        f"{self._restart_window:.0f} s: {step.error!r}"
                    )
                event(log, logging.WARNING, "restarting service", service=step.name, n=len(recent))
                self._launch(step)

    def stop_all(self) -> None:
        """Stop every started service in reverse order; never raises.

        Neighbouring threads are signalled together and joined against one deadline, so that
        several lanes each finishing an in-flight send do not add up their waits. Those still
        running then are interrupted and given a short grace, again together.
        """
        with self._lock:
            steps = list(reversed(self._started))
            self._started.clear()
        i = 0
        while i < len(steps):
            step = steps[i]
            if isinstance(step, _Service):
                try:
                    step.stop()
                except Exception:
                    log.exception("service failed to stop", extra={"service": step.name})
                i += 1
                continue
            group: list[_Worker] = []
            while i < len(steps) and isinstance(steps[i], _Worker):
                worker = steps[i]
                assert isinstance(worker, _Worker)
                worker.stop_event.set()
                group.append(worker)
                i += 1
            late = self._join(group, self._stop_timeout)
            for worker in late:
                self._interrupt(worker)
            for worker in self._join(late, self._interrupt_grace):
                event(log, logging.ERROR, "service did not stop in time", service=worker.name)

    def _join(self, workers: list[_Worker], timeout: float) -> list[_Worker]:
        """Join ``workers`` against one deadline; those still running."""
        deadline = self._clock.monotonic() + timeout
        for worker in workers:
            if worker.thread is not None:
                worker.thread.join(max(0.0, deadline - self._clock.monotonic()))
        return [w for w in workers if w.thread is not None and w.thread.is_alive()]

    def _interrupt(self, worker: _Worker) -> None:
        if worker.interrupt is None:
            return
        event(log, logging.WARNING, "service interrupted at the stop deadline", service=worker.name)
        try:
            worker.interrupt()
        except Exception:
            log.exception("service failed to interrupt", extra={"service": worker.name})
