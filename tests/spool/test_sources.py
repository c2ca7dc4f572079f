"""Every object records where it came from; an object from two sources names both (issue 10 A2)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from gateway.clock import FakeClock
from gateway.spool import schema
from gateway.spool.entries import ObjectSource, SourceChannel
from gateway.spool.store import Spool
from tests.spool.conftest import MakeSpool
from tests.spool.objects import new_uid, stage


def file_source(name: str, sha256: str, at: float = 1000.0) -> ObjectSource:
    return ObjectSource(SourceChannel.FILE, "export", sha256, at, size=12, file_name=name)


def test_an_object_records_its_file_with_size_hash_time_and_identity_note(spool: Spool) -> None:
    obj = stage(spool)
    origin = ObjectSource(
        SourceChannel.FILE,
        "export",
        obj.source_sha256,
        1234.5,
        size=12,
        file_name="day1/P501_a.bmp",
        identity_note="patient name from file name is 70 characters, DICOM allows 64",
        hint_patient_id="P501",
    )
    info = spool.show(spool.enqueue(obj, "export", origin).object_id)
    assert info is not None and info.sources == (origin,)
    assert origin.label == "export: day1/P501_a.bmp"


def test_the_same_object_from_another_file_is_one_object_naming_both_files(spool: Spool) -> None:
    first = stage(spool, b"same bytes")
    a = spool.enqueue(first, "export", file_source("a.dcm", first.source_sha256))
    again = stage(spool, b"same bytes", uid=first.sop_instance_uid)
    b = spool.enqueue(again, "export", file_source("b.dcm", again.source_sha256, 2000.0))
    assert (b.object_id, b.duplicate, b.merged, b.sources) == (a.object_id, True, True, 2)
    info = spool.show(a.object_id)
    assert info is not None
    assert [s.file_name for s in info.sources] == ["a.dcm", "b.dcm"]
    assert [s.arrived_at for s in info.sources] == [1000.0, 2000.0]


def test_the_same_file_read_again_after_a_crash_is_not_another_source(spool: Spool) -> None:
    first = stage(spool, b"once")
    a = spool.enqueue(first, "export", file_source("a.dcm", first.source_sha256))
    again = stage(spool, b"once", uid=first.sop_instance_uid)
    b = spool.enqueue(again, "export", file_source("a.dcm", again.source_sha256, 5000.0))
    assert (b.object_id, b.duplicate, b.merged, b.sources) == (a.object_id, True, False, 1)
    info = spool.show(a.object_id)
    assert info is not None and len(info.sources) == 1


def test_without_an_origin_the_source_name_is_recorded(spool: Spool, clock: FakeClock) -> None:
    info = spool.show(spool.enqueue(stage(spool), "export").object_id)
    assert info is not None
    [source] = info.sources
    assert (source.channel, source.source, source.arrived_at) == (
        SourceChannel.UNRECORDED,
        "export",
        clock.now(),
    )


def _queue_as_older_firmware_left_it(root: Path) -> None:
    """A queue with only schema step 1 and two objects, one dropped, one received by C-STORE."""
    root.mkdir(parents=True)
    conn = schema.connect(root / "queue.sqlite")
    for statement in schema._statements(schema._MIGRATIONS[0]):
        conn.execute(statement)
    conn.execute("PRAGMA user_version=1")
    for uid, source, sha in (
        (new_uid(), "export", "a" * 64),
        (new_uid(), "dicom:CT_ROOM1", "b" * 64),
    ):
        _insert_object_row(conn, uid, source, sha)
    conn.close()


def _insert_object_row(conn: sqlite3.Connection, uid: str, source: str, sha: str) -> None:
    # What firmware without object_sources writes on enqueue: the objects row, nothing else.
    conn.execute(
        "INSERT INTO objects (sop_instance_uid, sop_class_uid, transfer_syntax_uid,"
        " study_instance_uid, source_sha256, source, kind, size, payload, held_reason,"
        " enqueued_at) VALUES (?, '1.2', '1.2.840.10008.1.2.1', '2.25.1', ?, ?, 'png', 10,"
        " NULL, NULL, 777.0)",
        (uid, sha, source),
    )


def test_objects_queued_before_sources_were_recorded_get_what_can_be_known(
    tmp_path: Path, make_spool: MakeSpool
) -> None:
    _queue_as_older_firmware_left_it(tmp_path / "state" / "spool")
    spool = make_spool(("pacs",))
    old_file, old_store = (spool.show(i) for i in (1, 2))
    assert old_file is not None and old_store is not None
    assert old_file.sources == (ObjectSource(SourceChannel.UNRECORDED, "export", "a" * 64, 777.0),)
    assert old_store.sources == (
        ObjectSource(SourceChannel.DICOM, "dicom:CT_ROOM1", "b" * 64, 777.0, calling_ae="CT_ROOM1"),
    )
    assert old_file.sources[0].label == "export (details not recorded)"


def test_recording_sources_leaves_the_queue_readable_by_the_firmware_before(
    tmp_path: Path, make_spool: MakeSpool
) -> None:
    # docs/updates.md: a rollback never strands the queue. The firmware before refuses any
    # user_version above 1, so sources are an addition, not a new schema version; and what it
    # queues after a rollback gets its source row at the next open of this firmware.
    _queue_as_older_firmware_left_it(tmp_path / "state" / "spool")
    spool = make_spool(("pacs",))
    spool.close()
    with sqlite3.connect(spool.db_path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 1 == schema.SCHEMA_VERSION
        _insert_object_row(conn, new_uid(), "export", "c" * 64)  # queued after a rollback
    spool.open()
    again = spool.show(3)
    assert again is not None
    assert again.sources == (ObjectSource(SourceChannel.UNRECORDED, "export", "c" * 64, 777.0),)
    first = spool.show(1)
    assert first is not None and len(first.sources) == 1  # the backfill never repeats


def test_a_pruned_object_takes_its_sources_along(spool: Spool, clock: FakeClock) -> None:
    obj = stage(spool)
    object_id = spool.enqueue(obj, "export", file_source("a.png", obj.source_sha256)).object_id
    for destination in ("pacs", "archive"):
        entry = spool.claim_next(destination)
        assert entry is not None
        spool.mark_sent(entry.delivery_id)
    clock.advance(spool.retention_seconds + 1)
    assert spool.prune() == 1
    with sqlite3.connect(spool.db_path) as conn:
        left = conn.execute(
            "SELECT COUNT(*) FROM object_sources WHERE object_id = ?", (object_id,)
        ).fetchone()
    assert left == (0,)
