"""Lanes: claim, sent, retry, failed; one lane per destination; nothing blocks what follows."""

from __future__ import annotations

import threading
import time

from gateway.clock import FakeClock
from gateway.forward.outcome import FailureClass
from gateway.spool.entries import DeliveryState
from gateway.spool.store import Spool
from tests.spool.conftest import MakeSpool
from tests.spool.objects import stage


def _states(spool: Spool, object_id: int) -> dict[str, DeliveryState]:
    info = spool.show(object_id)
    assert info is not None
    return {d.destination: d.state for d in info.deliveries}


def test_claim_marks_sending_and_counts_the_attempt(spool: Spool) -> None:
    obj = stage(spool, b"abc")
    object_id = spool.enqueue(obj, "src").object_id

    entry = spool.claim_next("pacs")

    assert entry is not None
    assert entry.object_id == object_id and entry.destination == "pacs"
    assert entry.attempts == 0 and entry.size == 3
    assert entry.path.read_bytes() == b"abc"
    assert (entry.sop_instance_uid, entry.sop_class_uid) == (
        obj.sop_instance_uid,
        obj.sop_class_uid,
    )
    assert entry.transfer_syntax_uid == obj.transfer_syntax_uid
    assert _states(spool, object_id) == {
        "pacs": DeliveryState.SENDING,
        "archive": DeliveryState.PENDING,
    }
    assert spool.claim_next("pacs") is None  # the only one is in flight


def test_claims_come_in_queue_order(spool: Spool) -> None:
    ids = [spool.enqueue(stage(spool, bytes([i])), "src").object_id for i in range(5)]
    claimed = []
    while (entry := spool.claim_next("pacs")) is not None:
        claimed.append(entry.object_id)
        spool.mark_sent(entry.delivery_id)
    assert claimed == ids


def test_sent_is_never_claimed_again_and_payload_goes_only_when_every_destination_has_it(
    spool: Spool,
) -> None:
    object_id = spool.enqueue(stage(spool, b"both"), "src").object_id
    info = spool.show(object_id)
    assert info is not None and info.payload is not None
    payload = info.payload

    pacs = spool.claim_next("pacs")
    assert pacs is not None
    spool.mark_sent(pacs.delivery_id)
    assert payload.exists()  # the archive has not got it yet
    assert spool.claim_next("pacs") is None

    archive = spool.claim_next("archive")
    assert archive is not None
    spool.mark_sent(archive.delivery_id)

    assert not payload.exists()
    info = spool.show(object_id)
    assert info is not None and info.payload is None  # the row stays for history and dedupe
    assert _states(spool, object_id) == {"pacs": DeliveryState.SENT, "archive": DeliveryState.SENT}
    assert spool.claim_next("pacs") is None and spool.claim_next("archive") is None


def test_mark_sent_twice_is_harmless(spool: Spool) -> None:
    spool.enqueue(stage(spool), "src")
    entry = spool.claim_next("pacs")
    assert entry is not None
    spool.mark_sent(entry.delivery_id)
    spool.mark_sent(entry.delivery_id)
    assert spool.stats()["pacs"].counts[DeliveryState.SENT] == 1


def test_retry_waits_until_next_attempt_at(spool: Spool, clock: FakeClock) -> None:
    object_id = spool.enqueue(stage(spool), "src").object_id
    entry = spool.claim_next("pacs")
    assert entry is not None

    spool.mark_retry(
        entry.delivery_id, FailureClass.CONNECTION_REFUSED, "connection refused", clock.now() + 30
    )

    assert spool.claim_next("pacs") is None
    assert spool.next_due("pacs") == clock.now() + 30
    clock.advance(29.9)
    assert spool.claim_next("pacs") is None
    clock.advance(0.1)
    again = spool.claim_next("pacs")
    assert again is not None and again.object_id == object_id and again.attempts == 1
    info = spool.show(object_id)
    assert info is not None
    pacs = next(d for d in info.deliveries if d.destination == "pacs")
    assert pacs.last_error == "connection refused" and pacs.failure_class == "connection_refused"
    assert pacs.attempts == 2


def test_one_object_waiting_for_retry_does_not_block_the_ones_behind_it(
    spool: Spool, clock: FakeClock
) -> None:
    first = spool.enqueue(stage(spool, b"1"), "src").object_id
    second = spool.enqueue(stage(spool, b"2"), "src").object_id
    entry = spool.claim_next("pacs")
    assert entry is not None and entry.object_id == first
    spool.mark_retry(entry.delivery_id, FailureClass.TIMEOUT, "timeout", clock.now() + 60)

    behind = spool.claim_next("pacs")
    assert behind is not None and behind.object_id == second


def test_refused_object_fails_with_reason_class_and_status_and_does_not_block(
    spool: Spool,
) -> None:
    refused = spool.enqueue(stage(spool, b"bad"), "src").object_id
    good = spool.enqueue(stage(spool, b"good"), "src").object_id
    entry = spool.claim_next("pacs")
    assert entry is not None and entry.object_id == refused

    spool.mark_failed(entry.delivery_id, FailureClass.DIMSE_FAILURE, "Cannot understand", 0xC000)

    nxt = spool.claim_next("pacs")
    assert nxt is not None and nxt.object_id == good
    failed = spool.list_deliveries(DeliveryState.FAILED)
    assert [(f.object_id, f.destination) for f in failed] == [(refused, "pacs")]
    assert failed[0].last_error == "Cannot understand"
    assert failed[0].failure_class == "dimse_failure" and failed[0].status == 0xC000
    # failed for one destination: the payload stays, the other lane still sends it
    archive = spool.claim_next("archive")
    assert archive is not None and archive.object_id == refused and archive.path.exists()


def test_a_down_destination_never_holds_up_another(spool: Spool, clock: FakeClock) -> None:
    ids = [spool.enqueue(stage(spool, bytes([i])), "src").object_id for i in range(4)]
    for _ in ids:  # the PACS refuses connections every time
        entry = spool.claim_next("pacs")
        assert entry is not None
        spool.mark_retry(entry.delivery_id, "connection_refused", "down", clock.now() + 3600)

    sent = []
    while (entry := spool.claim_next("archive")) is not None:
        spool.mark_sent(entry.delivery_id)
        sent.append(entry.object_id)

    assert sent == ids
    stats = spool.stats()
    assert stats["archive"].counts[DeliveryState.SENT] == 4
    assert stats["pacs"].counts[DeliveryState.PENDING] == 4
    assert stats["pacs"].last_error == "down" and stats["pacs"].last_success_at is None


def test_marks_on_a_delivery_not_in_flight_are_ignored(spool: Spool, clock: FakeClock) -> None:
    spool.enqueue(stage(spool), "src")
    entry = spool.claim_next("pacs")
    assert entry is not None
    spool.mark_failed(entry.delivery_id, "dimse_failure", "refused", 0xA900)

    spool.mark_retry(entry.delivery_id, "timeout", "late", clock.now())
    spool.mark_failed(entry.delivery_id, "timeout", "late")

    [row] = spool.list_deliveries(destination="pacs")
    assert row.state == DeliveryState.FAILED and row.last_error == "refused"


def test_next_due_is_none_without_pending_work(spool: Spool, clock: FakeClock) -> None:
    assert spool.next_due("pacs") is None
    spool.enqueue(stage(spool), "src")
    assert spool.next_due("pacs") == clock.now()


def test_wait_for_work_returns_early_when_an_object_is_enqueued(spool: Spool) -> None:
    assert spool.claim_next("pacs") is None
    woke = threading.Event()

    def lane() -> None:
        spool.wait_for_work("pacs", 30.0)
        woke.set()

    thread = threading.Thread(target=lane)
    thread.start()
    try:
        time.sleep(0.05)
        assert not woke.is_set()
        spool.enqueue(stage(spool), "src")
        assert woke.wait(5.0)
    finally:
        spool.wake_all()
        thread.join(5.0)


def test_work_added_between_an_empty_claim_and_the_wait_is_not_slept_through(
    spool: Spool,
) -> None:
    assert spool.claim_next("pacs") is None
    spool.enqueue(stage(spool), "src")
    started = time.monotonic()
    spool.wait_for_work("pacs", 30.0)
    assert time.monotonic() - started < 1.0


def test_wait_for_work_times_out_without_work_and_wake_all_ends_it(spool: Spool) -> None:
    started = time.monotonic()
    spool.wait_for_work("pacs", 0.05)
    assert 0.04 <= time.monotonic() - started < 2.0

    done = threading.Event()

    def lane() -> None:
        spool.wait_for_work("archive", 30.0)
        done.set()

    thread = threading.Thread(target=lane)
    thread.start()
    time.sleep(0.05)
    spool.wake_all()
    assert done.wait(5.0)
    thread.join(5.0)


def test_enqueue_wakes_only_destinations_with_pending_work(make_spool: MakeSpool) -> None:
    spool = make_spool(("pacs",))
    assert spool.claim_next("pacs") is None
    spool.enqueue(stage(spool, held_reason="no identity"), "src")
    started = time.monotonic()
    spool.wait_for_work("pacs", 0.1)
    assert time.monotonic() - started >= 0.09


def test_concurrent_lanes_and_ingest_deliver_everything_exactly_once(
    make_spool: MakeSpool,
) -> None:
    spool = make_spool(("a", "b", "c"))
    total = 60
    sent: dict[str, list[int]] = {"a": [], "b": [], "c": []}
    stop = threading.Event()

    def lane(dest: str) -> None:
        while not stop.is_set():
            entry = spool.claim_next(dest)
            if entry is None:
                spool.wait_for_work(dest, 0.05)
                continue
            sent[dest].append(entry.object_id)
            spool.mark_sent(entry.delivery_id)

    threads = [threading.Thread(target=lane, args=(d,)) for d in sent]
    for t in threads:
        t.start()
    try:
        ids = [
            spool.enqueue(stage(spool, i.to_bytes(2, "big")), "src").object_id for i in range(total)
        ]
        deadline = time.monotonic() + 20
        while any(len(v) < total for v in sent.values()) and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        stop.set()
        spool.wake_all()
        for t in threads:
            t.join(5.0)

    assert all(v == ids for v in sent.values())
    assert list(spool.objects_dir.iterdir()) == []
    assert spool.used_bytes() == 0
