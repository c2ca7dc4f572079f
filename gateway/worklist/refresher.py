"""WorklistRefresher: keeps the cache in step with the RIS; a thread body the supervisor owns.

A refresh that fails (RIS down, refused, timed out, failure status, undecodable response)
leaves the cache exactly as it was and records ``last_error``; a successful one replaces the
whole set in one transaction. Logged once per transition: the first failure at ERROR, repeats
at DEBUG, the recovery at INFO with how long the outage lasted.
"""

from __future__ import annotations

import datetime
import logging
import threading
import time
from typing import Protocol

from gateway.clock import Clock
from gateway.config import WorklistSection
from gateway.logsetup import event
from gateway.worklist.client import WorklistUnavailable
from gateway.worklist.item import WorklistItem

_STOP_POLL_SECONDS = 0.2


class ScheduledSource(Protocol):
    """What the refresher needs of a WorklistClient."""

    def fetch_scheduled(self, today: datetime.date) -> list[WorklistItem]: ...


class CacheSink(Protocol):
    """What the refresher needs of a WorklistCache."""

    def replace(self, items: list[WorklistItem], fetched_at: float) -> None: ...


class WorklistRefresher:
    """Refreshes every ``refresh_seconds`` and whenever :meth:`refresh_now` is called."""

    def __init__(
        self,
        client: ScheduledSource,
        cache: CacheSink,
        settings: WorklistSection,
        clock: Clock,
        logger: logging.Logger,
    ) -> None:
        self._client = client
        self._cache = cache
        self._settings = settings
        self._clock = clock
        self._log = logger
        self._wake = threading.Event()
        self._lock = threading.Lock()  # one refresh at a time (loop and on-demand callers)
        self.last_error: str | None = None
        self.last_success: float | None = None
        self.last_count: int | None = None
        self._failing_since: float | None = None

    def run(self, stop: threading.Event) -> None:
        """Refresh now, then every ``refresh_seconds`` or when woken, until ``stop`` is set."""
        while not stop.is_set():
            self._refresh()
            due = time.monotonic() + self._settings.refresh_seconds
            # Short slices: the supervisor signals only ``stop``, which must be seen promptly.
            while not stop.is_set() and not self._wake.is_set():
                left = due - time.monotonic()
                if left <= 0:
                    break
                self._wake.wait(min(left, _STOP_POLL_SECONDS))
            self._wake.clear()

    def wake(self) -> None:
        """Ask the running loop for a refresh soon, without waiting for it."""
        self._wake.set()

    def refresh_now(self) -> None:
        """Refresh in the calling thread; never raises (the outcome is in last_error)."""
        self._refresh()

    def _refresh(self) -> bool:
        with self._lock:
            started = self._clock.now()
            today = datetime.datetime.fromtimestamp(started).date()
            try:
                items = self._client.fetch_scheduled(today)
                self._cache.replace(items, started)
            except WorklistUnavailable as exc:
                self._failed(exc.reason)
                return False
            except Exception as exc:  # noqa: BLE001 - a thread body must survive; reason kept
                self._failed(f"{type(exc).__name__}: {exc}")
                return False
            self._succeeded(len(items), started)
            return True

    def _failed(self, reason: str) -> None:
        first = self.last_error is None
        self.last_error = reason
        if first:
            self._failing_since = self._clock.now()
            event(self._log, logging.ERROR, "worklist refresh failed; cache kept", reason=reason)
        else:
            event(self._log, logging.DEBUG, "worklist refresh still failing", reason=reason)

    def _succeeded(self, count: int, fetched_at: float) -> None:
        if self.last_error is not None:
            since = self._failing_since if self._failing_since is not None else fetched_at
            event(
                self._log,
                logging.INFO,
                "worklist refresh recovered",
                items=count,
                outage_seconds=round(self._clock.now() - since, 1),
            )
        elif self.last_success is None:
            event(self._log, logging.INFO, "worklist fetched", items=count)
        else:
            event(self._log, logging.DEBUG, "worklist refreshed", items=count)
        self.last_error = None
        self._failing_since = None
        self.last_success = fetched_at
        self.last_count = count
