"""The spool on a real, small tmpfs that fills up: delivery goes on, ingest stops in time.

Needs root for the mount (tests/realfs.py: skipped otherwise, failed under REQUIRE_PEERS=1).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.clock import FakeClock
from gateway.spool.entries import DeliveryState
from gateway.spool.store import Spool
from gateway.storagefault import StorageFault, StorageNotReadyError
from tests import realfs
from tests.spool.objects import stage

KIB, MIB = 1024, 1024 * 1024


@pytest.fixture
def state(tmp_path: Path) -> Iterator[Path]:
    with realfs.tmpfs(tmp_path / "state", 4 * MIB) as mounted:
        yield mounted


def open_spool(state: Path, **kwargs: int) -> Spool:
    spool = Spool(state, ["pacs"], 1 << 40, FakeClock(), **kwargs)  # type: ignore[arg-type]
    spool.open()
    return spool


def queue(spool: Spool, n: int, size: int = 64 * KIB) -> list[int]:
    return [spool.enqueue(stage(spool, os.urandom(size)), "test").object_id for _ in range(n)]


def test_delivery_is_recorded_on_a_full_disk_by_giving_back_the_reserve(state: Path) -> None:
    spool = open_spool(state, min_free_bytes=MIB, reserve_bytes=512 * KIB)
    try:
        assert spool.reserve.in_place
        queue(spool, 8)
        realfs.fill(state / "filler")
        assert realfs.free_bytes(state) == 0
        room = spool.room_for(KIB)
        assert not room.ok and room.disk and room.reason.startswith("state disk low")

        sent = 0
        while (entry := spool.claim_next("pacs")) is not None:
            spool.mark_sent(entry.delivery_id)
            assert not entry.path.exists()  # each delivery frees its payload
            sent += 1
        assert sent == 8 and spool.unrecorded_marks == 0
        counts = spool.stats()["pacs"].counts
        assert counts[DeliveryState.SENT] == 8
        assert not spool.reserve.in_place and spool.storage_fault is None
        # 8 x 64 KiB freed, but ingest may not eat the reserve's share back
        assert not spool.room_for(KIB).ok

        (state / "filler").unlink()
        assert spool.room_for(KIB).ok
        assert spool.reserve.in_place  # made again once there was room for it
    finally:
        spool.close()


def test_without_a_reserve_a_claim_on_a_full_disk_raises_not_ready_and_recovers(
    state: Path,
) -> None:
    spool = open_spool(state, min_free_bytes=0, reserve_bytes=0)
    try:
        queue(spool, 2)
        spool.close()  # a fresh WAL, as after a restart: every commit needs new space
        spool.open()
        realfs.fill(state / "filler")
        with pytest.raises(StorageNotReadyError) as caught:
            spool.claim_next("pacs")
        assert caught.value.fault is StorageFault.FULL
        assert spool.storage_fault is not None
        assert "state storage full" in spool.storage_status().problem
        (state / "filler").unlink()
        entry = spool.claim_next("pacs")
        assert entry is not None and spool.storage_fault is None
    finally:
        spool.close()


def test_open_when_ready_on_a_full_disk_starts_and_opens_later(state: Path) -> None:
    first = open_spool(state, reserve_bytes=0)
    queue(first, 1)
    first.close()
    realfs.fill(state / "filler")
    clock = FakeClock()
    spool = Spool(state, ["pacs"], 1 << 40, clock, reserve_bytes=0)
    try:
        spool.open_when_ready()  # does not raise
        # SQLite cannot even make its -shm file: "disk I/O error", as in the issue
        assert spool.storage_fault is not None
        with pytest.raises(StorageNotReadyError):
            spool.claim_next("pacs")
        assert not spool.room_for(0).ok
        (state / "filler").unlink()
        clock.advance(5.0)  # the next try of the deferred open
        entry = spool.claim_next("pacs")
        assert entry is not None
    finally:
        spool.close()
