"""The spool on a real, small tmpfs that fills up: delivery goes on, ingest stops in time.

Needs root for the mount (tests/realfs.py: skipped otherwise, failed under REQUIRE_PEERS=1).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.clock import FakeClock
from gateway.spool.entries import DeliveryState, SpoolEntry
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


def test_without_a_reserve_claims_on_a_full_disk_are_made_in_memory_and_recorded_later(
    state: Path,
) -> None:
    clock = FakeClock()
    spool = Spool(state, ["pacs"], 1 << 40, clock, min_free_bytes=0, reserve_bytes=0)
    spool.open()
    try:
        in_flight_id, *ids = queue(spool, 5)
        in_flight = spool.claim_next("pacs")  # in flight when the disk fills
        assert in_flight is not None and in_flight.object_id == in_flight_id
        spool.close()  # a fresh WAL, as after a restart: every commit needs new space
        spool.open(recover=False)  # recovery would make the one in flight pending again
        realfs.fill(state / "filler")
        sent, also_sent, refused, retried = claim_all(spool, ids)
        assert spool.storage_fault is not None and spool.storage_fault.fault is StorageFault.FULL
        assert "state storage full" in spool.storage_status().problem
        spool.mark_sent(sent.delivery_id)
        spool.mark_sent(also_sent.delivery_id)
        spool.mark_failed(refused.delivery_id, "rejected", "refused by the PACS", 0xC000)
        spool.mark_retry(retried.delivery_id, "unreachable", "PACS down", clock.now() + 60)
        spool.mark_retry(in_flight.delivery_id, "unreachable", "PACS down", clock.now() + 1)
        assert spool.claim_next("pacs") is None  # neither retry is due yet
        clock.advance(1.0)
        again = spool.claim_next("pacs")  # the one in flight, claimed again in memory
        assert again is not None and again.delivery_id == in_flight.delivery_id
        spool.mark_sent(again.delivery_id)
        assert spool.unrecorded_marks == 5
        assert sent.path.exists() and also_sent.path.exists()  # the disk refused the removal
        assert again.path.exists()

        (state / "filler").unlink()
        clock.advance(5.0)  # the next probe of the faulted storage writes the marks
        assert spool.room_for(0).ok
        assert spool.storage_fault is None and spool.unrecorded_marks == 0
        assert not sent.path.exists() and not also_sent.path.exists()
        assert not again.path.exists()
        every = [in_flight_id, *ids]
        shown = [spool.show(i) for i in every]
        by_object = {d.object_id: d for info in shown if info for d in info.deliveries}
        assert [by_object[i].state for i in every] == [
            DeliveryState.SENT,
            DeliveryState.SENT,
            DeliveryState.SENT,
            DeliveryState.FAILED,
            DeliveryState.PENDING,
        ]
        assert all(by_object[i].attempts == 1 for i in ids)  # the claims made in memory
        assert by_object[in_flight_id].attempts == 2  # one claim in the queue, one in memory
        assert by_object[ids[2]].status == 0xC000
        assert spool.next_due("pacs") == clock.now() + 54
    finally:
        spool.close()


def claim_all(spool: Spool, ids: list[int]) -> list[SpoolEntry]:
    """Claim every queued delivery of pacs (in memory, the storage refusing the claims)."""
    entries = [spool.claim_next("pacs") for _ in ids]
    assert [e.object_id if e else None for e in entries] == ids  # queue order, each once
    assert spool.claim_next("pacs") is None  # none claimed twice
    assert spool.next_due("pacs") is None  # else the lane would spin on rows it cannot claim
    return [e for e in entries if e is not None]


def test_an_ext4_error_mid_run_still_delivers_the_backlog_from_memory(tmp_path: Path) -> None:
    clock = FakeClock()
    with realfs.ext4(tmp_path / "state", 16 * MIB) as state:
        spool = Spool(state, ["pacs"], 1 << 40, clock, min_free_bytes=MIB, reserve_bytes=MIB)
        spool.open()
        try:
            in_flight_id, *ids = queue(spool, 4)
            in_flight = spool.claim_next("pacs")  # claimed in the queue before the fault
            assert in_flight is not None and in_flight.object_id == in_flight_id
            realfs.trigger_error(state)  # the kernel remounts it read-only (errors=remount-ro)
            sent, refused, retried = claim_all(spool, ids)
            assert spool.storage_fault is not None
            spool.mark_sent(sent.delivery_id)
            spool.mark_failed(refused.delivery_id, "rejected", "refused by the PACS", 0xC000)
            spool.mark_retry(retried.delivery_id, "unreachable", "PACS down", clock.now() + 30)
            spool.mark_retry(in_flight.delivery_id, "unreachable", "PACS down", clock.now() + 20)
            assert spool.unrecorded_marks == 4 and sent.path.exists()
            assert spool.next_due("pacs") == clock.now() + 20  # the retries kept in memory
            assert spool.claim_next("pacs") is None
            clock.advance(30.0)
            # Retries are tried again during the fault, the one due first first.
            first, second = spool.claim_next("pacs"), spool.claim_next("pacs")
            assert first is not None and first.delivery_id == in_flight.delivery_id
            assert first.attempts == in_flight.attempts + 1
            assert second is not None and second.delivery_id == retried.delivery_id
            assert second.attempts == retried.attempts + 1
            assert spool.claim_next("pacs") is None and spool.next_due("pacs") is None
            spool.mark_sent(first.delivery_id)
            spool.mark_sent(second.delivery_id)
            assert spool.unrecorded_marks == 4 and spool.storage_fault is not None
            counts = spool.stats()["pacs"].counts  # the disk still reads as before the fault
            assert counts[DeliveryState.PENDING] == 3 and counts[DeliveryState.SENDING] == 1
        finally:
            spool.close()  # the marks are lost with the card: recovery sends them once more


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
