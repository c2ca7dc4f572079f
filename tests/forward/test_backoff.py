"""Exponential backoff with jitter, capped."""

from __future__ import annotations

from gateway.config import RetrySettings
from gateway.forward.backoff import Backoff


def _settings(**kw: float) -> RetrySettings:
    fields = {"initial_seconds": 5.0, "max_seconds": 600.0, "multiplier": 2.0, "jitter": 0.2}
    fields.update(kw)
    return RetrySettings.model_validate(fields)


def test_without_jitter_the_wait_doubles_until_the_cap() -> None:
    backoff = Backoff(_settings(jitter=0.0))
    assert [backoff.delay(n) for n in range(1, 9)] == [5, 10, 20, 40, 80, 160, 320, 600]


def test_jitter_spreads_the_wait_symmetrically() -> None:
    low = Backoff(_settings(), uniform=lambda: 0.0)
    mid = Backoff(_settings(), uniform=lambda: 0.5)
    high = Backoff(_settings(), uniform=lambda: 0.999999)
    assert low.delay(2) == 8.0
    assert mid.delay(2) == 10.0
    assert 11.99 < high.delay(2) <= 12.0


def test_jitter_never_exceeds_the_maximum() -> None:
    backoff = Backoff(_settings(), uniform=lambda: 0.999999)
    assert backoff.delay(20) == 600.0


def test_a_huge_failure_count_does_not_overflow() -> None:
    backoff = Backoff(_settings(multiplier=10.0, jitter=0.0))
    assert backoff.delay(100_000) == 600.0


def test_zero_failures_count_as_the_first() -> None:
    backoff = Backoff(_settings(jitter=0.0))
    assert backoff.delay(0) == backoff.delay(1) == 5.0
