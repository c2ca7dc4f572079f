"""gateway.spool.space: when ingest may add to the queue (pure, no disk)."""

from __future__ import annotations

import pytest

from gateway.spool.space import (
    DEFAULT_MIN_FREE_BYTES,
    MIB,
    DiskSpace,
    StorageStatus,
    decide_room,
    describe,
    low_water_mark,
)
from gateway.storagefault import StorageFault

GIB = 1024 * MIB


def room(
    *,
    incoming: int = MIB,
    used: int = 0,
    max_bytes: int = 100 * GIB,
    free: int = 10 * GIB,
    read_only: bool = False,
    low_water: int = 64 * MIB,
    reserve_missing: int = 0,
    fault: StorageFault | None = None,
) -> tuple[bool, str, bool]:
    answer = decide_room(
        incoming=incoming,
        used=used,
        max_bytes=max_bytes,
        space=DiskSpace(total=32 * GIB, free=free, read_only=read_only),
        low_water=low_water,
        reserve_missing=reserve_missing,
        fault=fault,
    )
    return answer.ok, answer.reason, answer.disk


def test_room_when_all_is_well() -> None:
    assert room() == (True, "", False)


def test_the_queue_limit_is_not_a_disk_problem() -> None:
    ok, reason, disk = room(used=100 * GIB)
    assert not ok and not disk and reason.startswith("queue limit reached")


def test_the_real_free_space_stops_ingest_above_the_queue_limit() -> None:
    # max_queue_bytes far above what is really free (the default case on a shared disk)
    assert room(free=64 * MIB + MIB)[0]
    ok, reason, disk = room(free=64 * MIB + MIB - 1)
    assert not ok and disk
    assert reason == f"state disk low ({64 * MIB + MIB - 1} bytes free, ingest keeps {64 * MIB})"


def test_a_released_reserve_counts_as_used_for_ingest() -> None:
    assert room(free=100 * MIB)[0]
    ok, reason, _ = room(free=100 * MIB, reserve_missing=40 * MIB)
    assert not ok and reason.startswith(f"state disk low ({60 * MIB} bytes free")


@pytest.mark.parametrize("fault", list(StorageFault))
def test_a_storage_fault_refuses_whatever_the_space(fault: StorageFault) -> None:
    assert room(fault=fault) == (False, f"state storage {fault}", True)


def test_a_read_only_mount_refuses() -> None:
    assert room(read_only=True) == (False, "state storage read-only", True)


def test_low_water_mark_default_and_configured() -> None:
    assert low_water_mark(GIB, None) == DEFAULT_MIN_FREE_BYTES  # 5 % is less than 64 MiB
    assert low_water_mark(32 * GIB, None) == int(32 * GIB * 0.05)
    assert low_water_mark(512 * MIB, None) == 64 * MIB
    assert low_water_mark(32 * GIB, 0) == 0
    assert low_water_mark(32 * GIB, 5 * MIB) == 5 * MIB


def _status(**kw: object) -> StorageStatus:
    base: dict[str, object] = {
        "fault": None,
        "problem": "",
        "since": None,
        "ingest": decide_room(
            incoming=0,
            used=0,
            max_bytes=GIB,
            space=DiskSpace(GIB, GIB, False),
            low_water=0,
            reserve_missing=0,
            fault=None,
        ),
        "space": DiskSpace(GIB, GIB, False),
        "low_water": 0,
        "reserve_bytes": MIB,
        "reserve_in_place": True,
        "unrecorded": 0,
    }
    base.update(kw)
    return StorageStatus(**base)  # type: ignore[arg-type]


def test_describe_says_nothing_while_all_is_well_and_why_otherwise() -> None:
    assert describe(_status()) == ""
    low = decide_room(
        incoming=0,
        used=0,
        max_bytes=GIB,
        space=DiskSpace(GIB, 10, False),
        low_water=MIB,
        reserve_missing=MIB,
        fault=None,
    )
    assert describe(_status(ingest=low, reserve_in_place=False)) == (
        f"state disk low (0 bytes free, ingest keeps {MIB}), ingest paused, delivery reserve in use"
    )
    ro = decide_room(
        incoming=0,
        used=0,
        max_bytes=GIB,
        space=DiskSpace(GIB, GIB, True),
        low_water=0,
        reserve_missing=0,
        fault=StorageFault.READ_ONLY,
    )
    line = describe(
        _status(
            fault=StorageFault.READ_ONLY,
            problem="state storage read-only: recording a delivery",
            ingest=ro,
            unrecorded=2,
        )
    )
    assert line == (
        "state storage read-only: recording a delivery, ingest paused,"
        " 2 deliveries not yet recorded"
    )
