"""Enqueue: durable before it returns, duplicates recognised, room accounted."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from gateway.clock import FakeClock
from gateway.spool import durable
from gateway.spool.entries import DeliveryState
from gateway.spool.store import NO_DESTINATION, Spool, SpoolClosedError
from tests.spool.conftest import MakeSpool
from tests.spool.objects import stage


def test_enqueue_moves_the_staged_file_into_objects_and_queues_one_delivery_per_destination(
    spool: Spool, clock: FakeClock
) -> None:
    obj = stage(spool, b"pixels")
    result = spool.enqueue(obj, "modality")

    assert not result.duplicate
    assert not obj.path.exists()
    info = spool.show(result.object_id)
    assert info is not None
    assert info.payload is not None and info.payload.parent == spool.objects_dir
    assert info.payload.read_bytes() == b"pixels"
    assert info.sop_instance_uid == obj.sop_instance_uid
    assert info.source == "modality" and info.size == len(b"pixels")
    assert sorted((d.destination, d.state) for d in info.deliveries) == [
        ("archive", DeliveryState.PENDING),
        ("pacs", DeliveryState.PENDING),
    ]
    assert all(d.next_attempt_at == clock.now() for d in info.deliveries)


def test_payload_name_never_comes_from_a_dicom_value(spool: Spool) -> None:
    obj = stage(spool, uid="1.2.3.4")
    info = spool.show(spool.enqueue(obj, "src").object_id)
    assert info is not None and info.payload is not None
    assert "1.2.3.4" not in info.payload.name


def test_durability_order_is_file_sync_rename_directory_sync_then_commit(
    spool: Spool, monkeypatch: pytest.MonkeyPatch
) -> None:
    obj = stage(spool, b"order")
    steps: list[str] = []
    real_file, real_dir = durable.fsync_file, durable.fsync_dir

    def rows_committed() -> int:
        with sqlite3.connect(spool.db_path) as other:  # a second reader sees only commits
            return int(other.execute("SELECT COUNT(*) FROM objects").fetchone()[0])

    def fsync_file(path: Path) -> None:
        steps.append(f"fsync file in {path.parent.name}, rows={rows_committed()}")
        real_file(path)

    def fsync_dir(path: Path) -> None:
        placed = len(list(spool.objects_dir.iterdir()))
        steps.append(f"fsync {path.name} with {placed} payload, rows={rows_committed()}")
        real_dir(path)

    monkeypatch.setattr(durable, "fsync_file", fsync_file)
    monkeypatch.setattr(durable, "fsync_dir", fsync_dir)
    spool.enqueue(obj, "src")

    assert steps == [
        "fsync file in staging, rows=0",
        "fsync objects with 1 payload, rows=0",
    ]
    assert rows_committed() == 1


def test_synchronous_full_and_wal_are_in_force(spool: Spool) -> None:
    with sqlite3.connect(spool.db_path) as other:
        assert other.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn = spool._conn
    assert conn is not None
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    assert conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    spool.enqueue(stage(spool), "src")
    assert spool.claim_next("pacs") is not None  # commits without a sync, then restores FULL
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2


def test_duplicate_enqueue_returns_the_existing_id_and_deletes_the_staged_file(
    spool: Spool,
) -> None:
    first = stage(spool, b"same")
    original = spool.enqueue(first, "src")
    again = stage(spool, b"same", uid=first.sop_instance_uid)

    result = spool.enqueue(again, "src")

    assert result.duplicate and result.object_id == original.object_id
    assert not again.path.exists()
    assert len(list(spool.objects_dir.iterdir())) == 1
    assert len(spool.list_deliveries()) == 2


def test_duplicate_is_recognised_after_it_was_sent_everywhere(spool: Spool) -> None:
    first = stage(spool, b"sent")
    original = spool.enqueue(first, "src")
    for dest in ("pacs", "archive"):
        entry = spool.claim_next(dest)
        assert entry is not None
        spool.mark_sent(entry.delivery_id)

    result = spool.enqueue(stage(spool, b"sent", uid=first.sop_instance_uid), "src")

    assert result.duplicate and result.object_id == original.object_id
    assert spool.claim_next("pacs") is None


def test_same_uid_with_different_source_is_a_new_object(spool: Spool) -> None:
    first = stage(spool, b"one")
    a = spool.enqueue(first, "src")
    b = spool.enqueue(stage(spool, b"two", uid=first.sop_instance_uid), "src")
    assert not b.duplicate and b.object_id != a.object_id


def test_held_object_gets_held_deliveries_that_are_not_claimed_until_released(
    spool: Spool,
) -> None:
    result = spool.enqueue(stage(spool, held_reason="no patient identity"), "src")
    info = spool.show(result.object_id)
    assert info is not None and info.held_reason == "no patient identity"
    assert {d.state for d in info.deliveries} == {DeliveryState.HELD}
    assert spool.claim_next("pacs") is None

    assert spool.release([result.object_id]) == 2

    entry = spool.claim_next("pacs")
    assert entry is not None and entry.object_id == result.object_id


def test_with_no_destination_the_object_is_kept_held_and_served_once_one_is_configured(
    make_spool: MakeSpool,
) -> None:
    alone = make_spool(())
    result = alone.enqueue(stage(alone, b"kept"), "src")
    info = alone.show(result.object_id)
    assert info is not None
    assert info.held_reason == NO_DESTINATION and info.deliveries == ()
    assert info.payload is not None and info.payload.exists()
    assert alone.used_bytes() == 4
    alone.close()

    served = make_spool(("pacs",))
    entry = served.claim_next("pacs")
    assert entry is not None and entry.object_id == result.object_id
    assert entry.path.read_bytes() == b"kept"
    info = served.show(result.object_id)
    assert info is not None and info.held_reason is None


def test_used_bytes_and_has_room_count_queued_payloads_only(make_spool: MakeSpool) -> None:
    spool = make_spool(("pacs",), max_bytes=100)
    assert spool.used_bytes() == 0 and spool.has_room(100) and not spool.has_room(101)

    spool.enqueue(stage(spool, b"x" * 60), "src")
    assert spool.used_bytes() == 60
    assert spool.has_room(40) and not spool.has_room(41)

    entry = spool.claim_next("pacs")
    assert entry is not None
    spool.mark_sent(entry.delivery_id)
    assert spool.used_bytes() == 0 and spool.has_room(100)


def test_failed_payloads_still_count_against_the_limit(make_spool: MakeSpool) -> None:
    spool = make_spool(("pacs",), max_bytes=100)
    spool.enqueue(stage(spool, b"x" * 80), "src")
    entry = spool.claim_next("pacs")
    assert entry is not None
    spool.mark_failed(entry.delivery_id, "dimse_failure", "refused", 0xA700)
    assert spool.used_bytes() == 80 and not spool.has_room(21)


def test_staging_paths_are_unique_and_in_staging(spool: Spool) -> None:
    paths = {spool.staging_path() for _ in range(100)}
    assert len(paths) == 100
    assert all(p.parent == spool.staging_dir and p.suffix == ".dcm" for p in paths)
    assert spool.staging_path(".tmp").suffix == ".tmp"
    with pytest.raises(ValueError, match="suffix"):
        spool.staging_path("/../x")


def test_a_failed_commit_leaves_no_payload_and_keeps_the_caller_in_charge(
    spool: Spool, monkeypatch: pytest.MonkeyPatch
) -> None:
    obj = stage(spool, b"boom")

    def broken(*_: object) -> None:
        raise OSError("disk error")

    monkeypatch.setattr(spool, "_insert", broken)
    with pytest.raises(OSError, match="disk error"):
        spool.enqueue(obj, "src")
    assert list(spool.objects_dir.iterdir()) == []
    assert spool.used_bytes() == 0


def test_using_a_closed_spool_is_an_error(tmp_path: Path, clock: FakeClock) -> None:
    spool = Spool(tmp_path, ["pacs"], 1000, clock)
    with pytest.raises(SpoolClosedError):
        spool.used_bytes()
    spool.open()
    spool.close()
    with pytest.raises(SpoolClosedError):
        spool.claim_next("pacs")
