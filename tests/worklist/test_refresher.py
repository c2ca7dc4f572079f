"""WorklistRefresher with a fake RIS and the real cache: loop, wake-up, stop, failures."""

from __future__ import annotations

import datetime
import logging
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.clock import FakeClock
from gateway.config import WorklistSection
from gateway.worklist.cache import WorklistCache
from gateway.worklist.client import WorklistUnavailable
from gateway.worklist.item import WorklistItem
from gateway.worklist.refresher import WorklistRefresher
from tests.worklist.factory import make_item

SETTINGS = WorklistSection(ae_title="RIS", host="127.0.0.1", port=104, refresh_seconds=3600)


class FakeRis:
    """Answers fetch_scheduled with whatever the test set; counts calls."""

    def __init__(self) -> None:
        self.answer: list[WorklistItem] | Exception = []
        self.calls = 0
        self.days: list[datetime.date] = []
        self.called = threading.Event()

    def fetch_scheduled(self, today: datetime.date) -> list[WorklistItem]:
        self.calls += 1
        self.days.append(today)
        self.called.set()
        if isinstance(self.answer, Exception):
            raise self.answer
        return list(self.answer)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(datetime.datetime(2024, 1, 5, 8).timestamp())


@pytest.fixture
def cache(tmp_path: Path, clock: FakeClock) -> Iterator[WorklistCache]:
    c = WorklistCache(tmp_path / "worklist.sqlite", clock)
    c.open()
    yield c
    c.close()


def test_refresh_replaces_the_set_and_asks_for_the_local_day(
    cache: WorklistCache, clock: FakeClock
):
    ris = FakeRis()
    ris.answer = [make_item(start_date="20240105")]
    refresher = WorklistRefresher(ris, cache, SETTINGS, clock, logging.getLogger("t"))
    refresher.refresh_now()
    assert cache.items() == ris.answer
    assert ris.days == [datetime.date(2024, 1, 5)]
    assert refresher.last_success == clock.now()
    assert refresher.last_count == 1


@pytest.mark.parametrize(
    "failure", [WorklistUnavailable("RIS down"), RuntimeError("bug"), OSError("disk")]
)
def test_any_failure_keeps_the_cache_and_is_recorded_never_raised(
    cache: WorklistCache, clock: FakeClock, failure: Exception
):
    ris = FakeRis()
    ris.answer = [make_item(start_date="20240105")]
    refresher = WorklistRefresher(ris, cache, SETTINGS, clock, logging.getLogger("t"))
    refresher.refresh_now()
    kept = cache.items()
    ris.answer = failure
    clock.advance(60)
    refresher.refresh_now()
    assert cache.items() == kept
    assert refresher.last_error is not None
    assert refresher.last_success == clock.now() - 60


def test_an_outage_longer_than_the_grace_does_not_expire_todays_items(
    cache: WorklistCache, clock: FakeClock
):
    ris = FakeRis()
    ris.answer = [make_item(start_date="20240105")]
    refresher = WorklistRefresher(ris, cache, SETTINGS, clock, logging.getLogger("t"))
    refresher.refresh_now()
    ris.answer = WorklistUnavailable("RIS down")
    for _ in range(12):  # 12 hours of failed refreshes, still 5 January
        clock.advance(3600)
        refresher.refresh_now()
    assert len(cache.items()) == 1


def test_the_loop_refreshes_at_start_on_wake_and_stops_promptly(
    cache: WorklistCache, clock: FakeClock
):
    ris = FakeRis()
    refresher = WorklistRefresher(ris, cache, SETTINGS, clock, logging.getLogger("t"))
    stop = threading.Event()
    thread = threading.Thread(target=refresher.run, args=(stop,))
    thread.start()
    try:
        assert ris.called.wait(10)
        ris.called.clear()
        refresher.wake()
        assert ris.called.wait(10)
    finally:
        stop.set()
        thread.join(10)
    assert not thread.is_alive()
    assert ris.calls == 2
