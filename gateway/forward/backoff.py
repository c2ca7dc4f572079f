"""Exponential backoff with jitter between delivery attempts: pure, random source injected."""

from __future__ import annotations

import random
from collections.abc import Callable

from gateway.config import RetrySettings


class Backoff:
    """Wait before the next attempt: ``initial × multiplier^(n-1)``, capped, spread by jitter.

    ``uniform`` returns a float in [0, 1); tests pass a fixed one.
    """

    def __init__(
        self, settings: RetrySettings, uniform: Callable[[], float] = random.random
    ) -> None:
        self._settings = settings
        self._uniform = uniform

    def delay(self, failures: int) -> float:
        """Seconds to wait after the ``failures``-th consecutive failure (1 for the first)."""
        s = self._settings
        steps = max(failures, 1) - 1
        try:
            base = s.initial_seconds * s.multiplier**steps
        except OverflowError:
            base = s.max_seconds
        return self._spread(min(base, s.max_seconds))

    def ceiling(self) -> float:
        """Seconds to wait when retrying sooner cannot help (a permanent rejection): the cap."""
        return self._spread(self._settings.max_seconds)

    def _spread(self, base: float) -> float:
        s = self._settings
        # Spread evenly over ±jitter so that many objects (or gateways) do not retry in step.
        spread = base * s.jitter * (2.0 * self._uniform() - 1.0)
        return min(max(base + spread, 0.0), s.max_seconds)
