"""WorklistCache: replace-the-set, lookups, the expiry rule, persistence and power-loss safety."""

from __future__ import annotations

import dataclasses
import datetime
import multiprocessing
import os
import signal
import sqlite3
import time
from pathlib import Path

import pytest

from gateway.clock import FakeClock
from gateway.worklist.cache import CacheSchemaTooNewError, WorklistCache, expires_at
from tests.worklist.factory import make_item


def local_ts(year: int, month: int, day: int, hour: int = 0) -> float:
    return datetime.datetime(year, month, day, hour).timestamp()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(local_ts(2024, 1, 5, 8))


@pytest.fixture
def cache(tmp_path: Path, clock: FakeClock) -> WorklistCache:
    c = WorklistCache(tmp_path / "worklist.sqlite", clock)
    c.open()
    yield c  # type: ignore[misc]
    c.close()


def test_replace_makes_the_given_items_the_whole_set(cache: WorklistCache, clock: FakeClock):
    first = [make_item(accession_number="A1", step_id="S1"), make_item(accession_number="A2")]
    cache.replace(first, clock.now())
    second = [make_item(accession_number="A3", step_id="S3")]
    cache.replace(second, clock.now())
    assert cache.items() == second
    assert cache.get(first[0].key) is None
    assert cache.fetched_at == clock.now()


def test_lookups_are_exact_and_never_match_on_nothing(cache: WorklistCache, clock: FakeClock):
    a = make_item(accession_number="ACC1", patient_id="P1", step_id="S1")
    b = make_item(accession_number="ACC2", patient_id="P1", step_id="S2")
    c = make_item(accession_number="acc1", patient_id="P2", step_id="S3")
    cache.replace([a, b, c], clock.now())
    assert cache.find(accession_number="ACC1") == [a]
    assert sorted(i.key for i in cache.find(patient_id="P1")) == sorted([a.key, b.key])
    assert cache.find(accession_number="ACC2", patient_id="P1") == [b]
    assert cache.find(accession_number="ACC2", patient_id="P2") == []
    assert cache.find(accession_number="ACC") == []
    assert cache.find() == []
    assert cache.find(accession_number="", patient_id="") == []
    assert cache.get(c.key) == c


def test_items_survive_close_and_reopen_with_unicode_intact(
    tmp_path: Path, cache: WorklistCache, clock: FakeClock
):
    item = make_item(patient_name="Yamada^Tarou=山田^太郎=やまだ^たろう", patient_id="Ü1")
    cache.replace([item], 1234.5)
    cache.close()
    again = WorklistCache(tmp_path / "worklist.sqlite", clock)
    again.open()
    try:
        assert again.items() == [item]
        assert again.fetched_at == 1234.5
        assert again.items()[0].dataset().PatientName == item.patient_name
    finally:
        again.close()


def test_a_dated_item_expires_grace_hours_after_the_end_of_its_day(
    cache: WorklistCache, clock: FakeClock
):
    item = make_item(start_date="20240105")
    cache.replace([item], clock.now())
    end_of_day = local_ts(2024, 1, 6)
    clock.advance(end_of_day + 24 * 3600 - clock.now() - 1)
    assert cache.items() == [item]
    clock.advance(1)
    assert cache.items() == []
    assert cache.get(item.key) is None


def test_an_undated_item_expires_grace_hours_after_the_refresh_that_last_saw_it(
    cache: WorklistCache, clock: FakeClock
):
    item = make_item(start_date="")
    seen = clock.now()
    cache.replace([item], seen)
    clock.advance(23 * 3600)
    cache.replace([item], clock.now())  # seen again: the clock restarts
    clock.advance(23 * 3600)
    assert cache.items() == [item]
    clock.advance(3600)
    assert cache.items() == []


def test_expiry_rule_with_a_malformed_date_falls_back_to_last_seen():
    item = dataclasses.replace(make_item(), scheduled_start_date="2024-01-05")
    assert expires_at(item, 100.0, 1.0) == 100.0 + 3600.0


def test_commits_of_another_connection_are_seen(
    tmp_path: Path, cache: WorklistCache, clock: FakeClock
):
    other = WorklistCache(tmp_path / "worklist.sqlite", clock)
    other.open()
    try:
        item = make_item(accession_number="FROM_OTHER")
        other.replace([item], 42.0)
    finally:
        other.close()
    assert cache.find(accession_number="FROM_OTHER") == [item]
    assert cache.fetched_at == 42.0


def test_a_cache_from_a_newer_firmware_is_refused(tmp_path: Path, clock: FakeClock):
    path = tmp_path / "worklist.sqlite"
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA user_version=99")
    conn.close()
    with pytest.raises(CacheSchemaTooNewError):
        WorklistCache(path, clock).open()


def test_the_database_uses_wal_and_full_sync(cache: WorklistCache):
    conn = sqlite3.connect(cache.path)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        conn.close()


def _replace_forever(path: str) -> None:
    clock = FakeClock()
    c = WorklistCache(Path(path), clock)
    c.open()
    sets = [
        [make_item(accession_number=f"A{i}", step_id=f"S{n}") for i in range(200)] for n in range(2)
    ]
    n = 0
    while True:
        c.replace(sets[n % 2], float(n))
        n += 1


def _has_committed(path: Path) -> bool:
    if not path.exists():
        return False
    try:
        conn = sqlite3.connect(path, timeout=5)
        try:
            return conn.execute("SELECT count(*) FROM meta").fetchone()[0] > 0
        finally:
            conn.close()
    except sqlite3.OperationalError:
        return False


@pytest.mark.parametrize("delay", [0.05, 0.13, 0.31])
def test_a_kill_during_replace_leaves_one_whole_set(tmp_path: Path, delay: float):
    path = tmp_path / "worklist.sqlite"
    ctx = multiprocessing.get_context("spawn")
    child = ctx.Process(target=_replace_forever, args=(str(path),))
    child.start()
    try:
        deadline = time.monotonic() + 30
        while not _has_committed(path) and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(delay)
    finally:
        os.kill(child.pid, signal.SIGKILL)  # type: ignore[arg-type]
        child.join()
    cache = WorklistCache(path, FakeClock(0.0))
    cache.open()
    try:
        steps = {item.scheduled_procedure_step_id for item in cache.items()}
        assert len(cache.items()) == 200
        assert len(steps) == 1
        assert cache.fetched_at is not None
    finally:
        cache.close()
