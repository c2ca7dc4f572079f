"""Recover before serving: what a crash leaves behind is repaired at open()."""

from __future__ import annotations

import logging
import sqlite3

import pytest

from gateway.clock import FakeClock
from gateway.spool import schema
from gateway.spool.entries import DeliveryState
from gateway.spool.recovery import PAYLOAD_MISSING
from gateway.spool.store import Spool
from tests.spool.conftest import MakeSpool
from tests.spool.objects import stage


def _reopen(spool: Spool, make_spool: MakeSpool, **kwargs: object) -> Spool:
    spool.close()
    return make_spool(spool.destinations, **kwargs)


def test_sending_goes_back_to_pending_and_is_claimed_again(
    make_spool: MakeSpool, clock: FakeClock
) -> None:
    spool = make_spool(("pacs",))
    object_id = spool.enqueue(stage(spool), "src").object_id
    assert spool.claim_next("pacs") is not None  # killed while sending

    spool = _reopen(spool, make_spool)

    assert spool.last_recovery is not None and spool.last_recovery.requeued == 1
    entry = spool.claim_next("pacs")
    assert entry is not None and entry.object_id == object_id and entry.attempts == 1


def test_pending_waits_are_due_after_a_restart(make_spool: MakeSpool, clock: FakeClock) -> None:
    spool = make_spool(("pacs",))
    spool.enqueue(stage(spool), "src")
    entry = spool.claim_next("pacs")
    assert entry is not None
    spool.mark_retry(entry.delivery_id, "timeout", "slow", clock.now() + 86_400)

    spool = _reopen(spool, make_spool)

    assert spool.next_due("pacs") == clock.now()
    assert spool.claim_next("pacs") is not None


def test_staging_leftovers_are_deleted(make_spool: MakeSpool) -> None:
    spool = make_spool()
    leftover = spool.staging_path()
    leftover.write_bytes(b"half converted")
    (spool.staging_dir / "subdir").mkdir()

    spool = _reopen(spool, make_spool)

    assert list(spool.staging_dir.iterdir()) == []
    assert spool.last_recovery is not None and spool.last_recovery.staging_removed == 2


def test_payloads_without_a_row_are_removed_and_live_ones_kept(make_spool: MakeSpool) -> None:
    spool = make_spool()
    object_id = spool.enqueue(stage(spool, b"live"), "src").object_id
    orphan = spool.objects_dir / "0123456789abcdef.dcm"
    orphan.write_bytes(b"renamed, never committed")

    spool = _reopen(spool, make_spool)

    assert not orphan.exists()
    info = spool.show(object_id)
    assert info is not None and info.payload is not None
    assert info.payload.read_bytes() == b"live"
    assert spool.last_recovery is not None and spool.last_recovery.orphans_removed == 1


def test_a_released_payload_that_came_back_is_removed(make_spool: MakeSpool) -> None:
    spool = make_spool(("pacs",))
    object_id = spool.enqueue(stage(spool, b"sent"), "src").object_id
    info = spool.show(object_id)
    assert info is not None and info.payload is not None
    payload = info.payload
    entry = spool.claim_next("pacs")
    assert entry is not None
    spool.mark_sent(entry.delivery_id)
    payload.write_bytes(b"sent")  # the unlink was lost with the power

    spool = _reopen(spool, make_spool)

    assert not payload.exists()


def test_a_row_whose_payload_is_missing_fails_loudly(
    make_spool: MakeSpool, caplog: pytest.LogCaptureFixture
) -> None:
    spool = make_spool(("pacs", "archive"))
    object_id = spool.enqueue(stage(spool), "src").object_id
    entry = spool.claim_next("archive")
    assert entry is not None
    spool.mark_sent(entry.delivery_id)
    info = spool.show(object_id)
    assert info is not None and info.payload is not None
    info.payload.unlink()

    with caplog.at_level(logging.ERROR, logger="gateway.spool"):
        spool = _reopen(spool, make_spool)

    info = spool.show(object_id)
    assert info is not None and info.payload is None
    states = {d.destination: (d.state, d.last_error) for d in info.deliveries}
    assert states == {
        "pacs": (DeliveryState.FAILED, PAYLOAD_MISSING),
        "archive": (DeliveryState.SENT, None),
    }
    assert any(r.getMessage() == "payload missing: deliveries failed" for r in caplog.records)
    assert spool.retry() == 0  # nothing to send it from


def test_objects_sent_everywhere_are_pruned_after_the_retention(
    make_spool: MakeSpool, clock: FakeClock
) -> None:
    spool = make_spool(("pacs",), retention_seconds=100.0)
    old = stage(spool, b"old")
    old_id = spool.enqueue(old, "src").object_id
    failed_id = spool.enqueue(stage(spool, b"failed"), "src").object_id
    entry = spool.claim_next("pacs")
    assert entry is not None
    spool.mark_sent(entry.delivery_id)
    entry = spool.claim_next("pacs")
    assert entry is not None
    spool.mark_failed(entry.delivery_id, "dimse_failure", "refused")
    clock.advance(99)

    spool = _reopen(spool, make_spool, retention_seconds=100.0)
    assert spool.show(old_id) is not None  # within retention: still recognised as duplicate
    clock.advance(2)
    spool = _reopen(spool, make_spool, retention_seconds=100.0)

    assert spool.show(old_id) is None
    assert spool.show(failed_id) is not None  # never pruned while not sent
    assert spool.last_recovery is not None and spool.last_recovery.pruned == 1


def test_prune_runs_while_the_daemon_keeps_going(make_spool: MakeSpool, clock: FakeClock) -> None:
    spool = make_spool(("pacs",), retention_seconds=60.0)
    first = spool.enqueue(stage(spool, b"1"), "src").object_id
    entry = spool.claim_next("pacs")
    assert entry is not None
    spool.mark_sent(entry.delivery_id)
    clock.advance(7200)
    spool.enqueue(stage(spool, b"2"), "src")
    entry = spool.claim_next("pacs")
    assert entry is not None
    spool.mark_sent(entry.delivery_id)  # an hour has passed since the last prune
    assert spool.show(first) is None


def test_a_queue_from_newer_firmware_is_refused(make_spool: MakeSpool) -> None:
    spool = make_spool()
    spool.close()
    with sqlite3.connect(spool.db_path) as conn:
        conn.execute(f"PRAGMA user_version={schema.SCHEMA_VERSION + 1}")
    with pytest.raises(schema.SchemaTooNewError):
        spool.open()


def test_schema_version_is_recorded(make_spool: MakeSpool) -> None:
    spool = make_spool()
    with sqlite3.connect(spool.db_path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == schema.SCHEMA_VERSION
