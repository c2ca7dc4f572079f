"""Wake-ups for idle lanes: new work for a destination ends its wait at once."""

from __future__ import annotations

import threading
from collections.abc import Iterable


class LaneWakeups:
    """One flag per destination, raised when work is added and cleared when the lane looks.

    The lane clears its flag *before* it queries for work (``looking``) and waits only while the
    flag is down, so work added between its query and its wait is never slept through.
    """

    def __init__(self, destinations: Iterable[str] = ()) -> None:
        self._cond = threading.Condition()
        self._known: set[str] = set(destinations)
        self._raised: set[str] = set()

    def looking(self, destination: str) -> None:
        """The lane is about to query for work: anything added from now on raises the flag."""
        with self._cond:
            self._known.add(destination)
            self._raised.discard(destination)

    def notify(self, destinations: Iterable[str]) -> None:
        """Work was added for these destinations."""
        with self._cond:
            names = set(destinations)
            self._known |= names
            self._raised |= names
            if names:
                self._cond.notify_all()

    def notify_all(self) -> None:
        """Raise every destination's flag (shutdown: every waiting lane returns)."""
        with self._cond:
            self._raised |= self._known
            self._cond.notify_all()

    def wait(self, destination: str, timeout: float) -> None:
        """Sleep up to ``timeout`` seconds unless this destination's flag is or goes up."""
        with self._cond:
            self._known.add(destination)
            if timeout > 0:
                self._cond.wait_for(lambda: destination in self._raised, timeout)
            self._raised.discard(destination)
