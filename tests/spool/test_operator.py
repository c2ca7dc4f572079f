"""Operator actions and views: retry, purge, list, show, stats."""

from __future__ import annotations

from gateway.clock import FakeClock
from gateway.spool.entries import DeliveryState
from gateway.spool.store import Spool
from tests.spool.conftest import MakeSpool
from tests.spool.objects import stage


def _fail(spool: Spool, destination: str, reason: str = "refused") -> int:
    entry = spool.claim_next(destination)
    assert entry is not None
    spool.mark_failed(entry.delivery_id, "dimse_failure", reason, 0xA700)
    return entry.object_id


def test_retry_all_failed_puts_them_back_and_they_are_sent(spool: Spool) -> None:
    ids = [spool.enqueue(stage(spool, bytes([i])), "src").object_id for i in range(3)]
    for _ in ids:
        _fail(spool, "pacs")
    assert spool.claim_next("pacs") is None

    assert spool.retry() == 3

    again = []
    while (entry := spool.claim_next("pacs")) is not None:
        again.append(entry.object_id)
        assert entry.attempts == 1  # history kept
        spool.mark_sent(entry.delivery_id)
    assert again == ids
    assert spool.list_deliveries(DeliveryState.FAILED) == []


def test_retry_by_object_and_destination_touches_only_those(spool: Spool) -> None:
    a = spool.enqueue(stage(spool, b"a"), "src").object_id
    b = spool.enqueue(stage(spool, b"b"), "src").object_id
    _fail(spool, "pacs")
    _fail(spool, "pacs")
    _fail(spool, "archive")

    assert spool.retry([b], destination="pacs") == 1

    entry = spool.claim_next("pacs")
    assert entry is not None and entry.object_id == b
    failed = {(d.object_id, d.destination) for d in spool.list_deliveries(DeliveryState.FAILED)}
    assert failed == {(a, "pacs"), (a, "archive")}


def test_retry_with_ids_makes_waiting_deliveries_due_now(spool: Spool, clock: FakeClock) -> None:
    object_id = spool.enqueue(stage(spool), "src").object_id
    entry = spool.claim_next("pacs")
    assert entry is not None
    spool.mark_retry(entry.delivery_id, "timeout", "slow", clock.now() + 3600)
    assert spool.claim_next("pacs") is None

    assert spool.retry([object_id]) == 2  # the pacs wait, and the archive's pending one

    again = spool.claim_next("pacs")
    assert again is not None and again.object_id == object_id


def test_retry_without_ids_leaves_pending_waits_alone(spool: Spool, clock: FakeClock) -> None:
    spool.enqueue(stage(spool), "src")
    entry = spool.claim_next("pacs")
    assert entry is not None
    spool.mark_retry(entry.delivery_id, "timeout", "slow", clock.now() + 3600)
    assert spool.retry() == 0
    assert spool.claim_next("pacs") is None


def test_purge_removes_failed_deliveries_and_objects_left_with_none(
    make_spool: MakeSpool,
) -> None:
    spool = make_spool(("pacs",))
    bad = spool.enqueue(stage(spool, b"bad"), "src").object_id
    keep = spool.enqueue(stage(spool, b"keep"), "src").object_id
    _fail(spool, "pacs")
    bad_info = spool.show(bad)
    assert bad_info is not None and bad_info.payload is not None

    assert spool.purge() == 1

    assert spool.show(bad) is None
    assert not bad_info.payload.exists()
    assert spool.show(keep) is not None
    assert spool.used_bytes() == 4


def test_purge_never_removes_pending_sending_or_held_by_default(spool: Spool) -> None:
    spool.enqueue(stage(spool, b"p"), "src")
    spool.enqueue(stage(spool, b"h", held_reason="no identity"), "src")
    assert spool.claim_next("pacs") is not None  # one in flight

    assert spool.purge() == 0
    assert len(spool.list_deliveries()) == 4


def test_purge_of_a_failed_delivery_releases_the_payload_when_the_rest_is_sent(
    spool: Spool,
) -> None:
    object_id = spool.enqueue(stage(spool), "src").object_id
    _fail(spool, "pacs")
    archive = spool.claim_next("archive")
    assert archive is not None
    spool.mark_sent(archive.delivery_id)
    info = spool.show(object_id)
    assert info is not None and info.payload is not None and info.payload.exists()

    assert spool.purge([object_id]) == 1

    after = spool.show(object_id)
    assert after is not None and after.payload is None  # kept as history of the sent delivery
    assert not info.payload.exists()
    assert spool.used_bytes() == 0


def test_purge_with_explicit_states_removes_a_removed_destinations_backlog(
    make_spool: MakeSpool,
) -> None:
    old = make_spool(("gone", "pacs"))
    object_id = old.enqueue(stage(old), "src").object_id
    entry = old.claim_next("pacs")
    assert entry is not None
    old.mark_sent(entry.delivery_id)
    old.close()

    spool = make_spool(("pacs",))
    stats = spool.stats()
    assert not stats["gone"].configured and stats["gone"].counts[DeliveryState.PENDING] == 1
    assert spool.used_bytes() > 0  # never dropped silently

    assert spool.purge([object_id], states=(DeliveryState.PENDING,)) == 1
    assert spool.used_bytes() == 0
    assert "gone" not in spool.stats()


def test_purge_of_an_object_held_for_want_of_a_destination(make_spool: MakeSpool) -> None:
    spool = make_spool(())
    object_id = spool.enqueue(stage(spool), "src").object_id
    assert spool.purge([object_id]) == 0 and spool.show(object_id) is not None
    spool.purge([object_id], states=(DeliveryState.HELD,))
    assert spool.show(object_id) is None
    assert list(spool.objects_dir.iterdir()) == []


def test_list_filters_by_state_and_destination_and_limits(spool: Spool) -> None:
    for i in range(3):
        spool.enqueue(stage(spool, bytes([i])), "src")
    _fail(spool, "archive", "no such SOP class")

    assert len(spool.list_deliveries()) == 6
    assert len(spool.list_deliveries(limit=4)) == 4
    assert len(spool.list_deliveries(destination="pacs")) == 3
    [failed] = spool.list_deliveries(DeliveryState.FAILED, "archive")
    assert failed.last_error == "no such SOP class" and failed.attempts == 1
    assert failed.size == 1 and failed.source == "src"
    assert spool.list_deliveries(DeliveryState.FAILED, "pacs") == []


def test_show_unknown_object_is_none(spool: Spool) -> None:
    assert spool.show(12345) is None


def test_stats_per_destination(spool: Spool, clock: FakeClock) -> None:
    t0 = clock.now()
    spool.enqueue(stage(spool, b"12345"), "src")
    clock.advance(10)
    spool.enqueue(stage(spool, b"123"), "src")
    spool.enqueue(stage(spool, b"1", held_reason="no identity"), "src")
    clock.advance(5)
    entry = spool.claim_next("pacs")
    assert entry is not None
    spool.mark_sent(entry.delivery_id)
    clock.advance(5)
    _fail(spool, "archive", "refused")

    stats = spool.stats()

    pacs = stats["pacs"]
    assert pacs.configured
    assert pacs.counts[DeliveryState.SENT] == 1 and pacs.counts[DeliveryState.PENDING] == 1
    assert pacs.counts[DeliveryState.HELD] == 1 and pacs.counts[DeliveryState.FAILED] == 0
    assert pacs.oldest_pending_at == t0 + 10
    assert pacs.bytes_pending == 3 + 1
    assert pacs.last_success_at == t0 + 15 and pacs.last_error is None
    archive = stats["archive"]
    assert archive.counts[DeliveryState.FAILED] == 1 and archive.counts[DeliveryState.PENDING] == 1
    assert archive.oldest_pending_at == t0 + 10
    assert archive.last_error == "refused" and archive.last_error_at == t0 + 20
    assert archive.last_success_at is None


def test_operator_view_opened_without_recovery_sees_the_daemons_queue(
    make_spool: MakeSpool,
) -> None:
    daemon = make_spool(("pacs",))
    daemon.enqueue(stage(daemon), "src")
    staged_now = daemon.staging_path()
    staged_now.write_bytes(b"being converted")
    in_flight = daemon.claim_next("pacs")
    assert in_flight is not None

    cli = make_spool(("pacs",), recover=False)

    [row] = cli.list_deliveries()
    assert row.state == DeliveryState.SENDING  # not reset under the running daemon
    assert staged_now.exists()
    daemon.mark_sent(in_flight.delivery_id)
    assert cli.stats()["pacs"].counts[DeliveryState.SENT] == 1
