"""DeliveryLane: an unreachable PACS backs off the whole lane; an object's failure, only it."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import pytest

from gateway.clock import FakeClock
from gateway.config import RetrySettings
from gateway.forward.backoff import Backoff
from gateway.forward.lane import STORAGE_WAIT_CAP, DeliveryLane
from gateway.forward.outcome import FailureClass, OutcomeKind, SendOutcome
from gateway.forward.sender import StoreSender
from gateway.spool.entries import SpoolEntry
from gateway.storagefault import StorageFault, StorageNotReadyError
from tests.forward.conftest import make_destination
from tests.forward.fakes import FakeQueue, FakeSender
from tests.forward.objects import entry_for, write_ct
from tests.peers import StoreSCP, free_port

DELIVERED = SendOutcome(OutcomeKind.DELIVERED, "", None, 0)
REFUSED_CONN = SendOutcome(OutcomeKind.RETRY, "connection refused", FailureClass.CONNECTION_REFUSED)
BUSY = SendOutcome(OutcomeKind.RETRY, "processing failure", FailureClass.DIMSE_FAILURE, 0x0110)
FULL = SendOutcome(OutcomeKind.REFUSED, "out of resources", FailureClass.DIMSE_FAILURE, 0xA700)


def _entries(n: int) -> list[SpoolEntry]:
    return [
        SpoolEntry(
            i,
            i,
            "pacs",
            Path(f"/spool/{i}.dcm"),
            "1.2.3",
            f"1.2.3.{i}",
            "1.2.840.10008.1.2.1",
            10,
            0,
        )
        for i in range(1, n + 1)
    ]


def _backoff() -> Backoff:
    settings = RetrySettings(initial_seconds=5.0, max_seconds=600.0, multiplier=2.0, jitter=0.2)
    return Backoff(settings, uniform=lambda: 0.5)  # mid-point: no spread


def _lane(queue: FakeQueue, sender: FakeSender | StoreSender, clock: FakeClock) -> DeliveryLane:
    logger = logging.getLogger("test.lane")
    return DeliveryLane(make_destination(104), queue, sender, _backoff(), clock, logger)


def test_everything_is_delivered_then_the_association_is_closed() -> None:
    clock, stop = FakeClock(), threading.Event()
    queue = FakeQueue(clock, _entries(3), stop)
    sender = FakeSender(clock, lambda e, n: DELIVERED)
    _lane(queue, sender, clock).run(stop)
    assert queue.states() == {1: "sent", 2: "sent", 3: "sent"}
    assert [c[0] for c in sender.calls] == [1, 2, 3]
    assert sender.idle_checks >= 1
    assert sender.closed


def test_unreachable_pacs_backs_off_the_whole_lane() -> None:
    clock, stop = FakeClock(), threading.Event()
    start = clock.now()
    queue = FakeQueue(clock, _entries(3), stop)
    sender = FakeSender(clock, lambda e, n: REFUSED_CONN if n <= 3 else DELIVERED)
    _lane(queue, sender, clock).run(stop)

    times = [t - start for _, t in sender.calls]
    # one attempt per backoff step, not one per queued object: 5, 10, 20 s apart
    assert times[:4] == pytest.approx([0.0, 5.0, 15.0, 35.0], abs=0.02)
    assert times[4:] == pytest.approx([35.0, 35.0], abs=0.02)  # recovered: the rest at once
    assert queue.states() == {1: "sent", 2: "sent", 3: "sent"}
    retries = [r for rec in queue.records.values() for r in rec.retries]
    assert [r[0] for r in retries] == ["connection_refused"] * 3


def test_object_failures_do_not_hold_back_the_others() -> None:
    clock, stop = FakeClock(), threading.Event()
    start = clock.now()
    queue = FakeQueue(clock, _entries(3), stop)
    script = {1: BUSY, 2: FULL}

    def answer(entry: SpoolEntry, n: int) -> SendOutcome:
        return script.get(entry.delivery_id, DELIVERED) if n <= 3 else DELIVERED

    sender = FakeSender(clock, answer)
    _lane(queue, sender, clock).run(stop)
    first_round = sender.calls[:3]
    assert [d for d, _ in first_round] == [1, 2, 3]
    assert all(t == start for _, t in first_round)  # no lane-wide wait
    assert queue.records[1].retries == [
        ("dimse_failure", "processing failure", start + 5.0, 0x0110)
    ]
    assert sender.calls[3][0] == 1
    assert sender.calls[3][1] == pytest.approx(start + 5.0, abs=0.02)
    assert queue.records[2].failure == ("dimse_failure", "out of resources", 0xA700)
    assert queue.states() == {1: "sent", 2: "failed", 3: "sent"}


def test_outage_is_logged_once_and_the_recovery_with_its_length(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="test.lane")
    clock, stop = FakeClock(), threading.Event()
    queue = FakeQueue(clock, _entries(1), stop)
    sender = FakeSender(clock, lambda e, n: REFUSED_CONN if n <= 3 else DELIVERED)
    _lane(queue, sender, clock).run(stop)

    by_level = {
        level: [r for r in caplog.records if r.levelno == level]
        for level in (logging.ERROR, logging.INFO, logging.DEBUG)
    }
    errors = by_level[logging.ERROR]
    assert [r.getMessage() for r in errors] == ["destination_unreachable"]
    assert vars(errors[0])["failure_class"] == "connection_refused"
    assert vars(errors[0])["reason"] == "connection refused"
    repeats = [
        r for r in by_level[logging.DEBUG] if r.getMessage() == "destination_still_unreachable"
    ]
    assert len(repeats) == 2
    recovered = [r for r in by_level[logging.INFO] if r.getMessage() == "destination_recovered"]
    assert len(recovered) == 1
    assert vars(recovered[0])["outage_seconds"] == pytest.approx(35.0, abs=0.1)


class _SleepingQueue(FakeQueue):
    """Waits really sleep, as the spool's do; nothing is ever queued."""

    def wait_for_work(self, destination: str, timeout: float) -> None:
        time.sleep(timeout)


def test_stop_is_prompt_and_closes_the_association() -> None:
    clock = FakeClock()
    sender = FakeSender(clock, lambda e, n: DELIVERED)
    lane = _lane(_SleepingQueue(clock, []), sender, clock)
    stop = threading.Event()
    thread = threading.Thread(target=lane.run, args=(stop,))
    thread.start()
    time.sleep(0.2)
    stopped_at = time.monotonic()
    stop.set()
    thread.join(timeout=3)
    assert not thread.is_alive()
    assert time.monotonic() - stopped_at < 2.5  # one 0.5 s wait at most, with room for load
    assert sender.closed


@pytest.mark.peers
def test_pacs_down_then_up_delivers_everything_with_a_real_peer(
    tmp_path: Path, storescp_factory: type[StoreSCP]
) -> None:
    port = free_port()
    clock, stop = FakeClock(), threading.Event()
    entries = [entry_for(write_ct(tmp_path / f"ct{i}.dcm"), delivery_id=i) for i in range(1, 4)]
    peer = storescp_factory(tmp_path / "pacs", port=port)

    def start_pacs_after_the_first_failure() -> None:
        if peer.proc is None and any(r.retries for r in queue.records.values()):
            peer.start()

    queue = FakeQueue(clock, entries, stop, on_wait=start_pacs_after_the_first_failure)
    sender = StoreSender(make_destination(port), "EDGE_GW", None, clock)
    _lane(queue, sender, clock).run(stop)

    assert queue.states() == {1: "sent", 2: "sent", 3: "sent"}
    first = next(iter(r.retries for r in queue.records.values() if r.retries))
    assert first[0][0] == "connection_refused"
    assert len(peer.received()) == 3


def test_a_sender_crash_defers_only_that_object() -> None:
    clock, stop = FakeClock(), threading.Event()
    queue = FakeQueue(clock, _entries(2), stop)

    def answer(entry: SpoolEntry, n: int) -> SendOutcome:
        if n == 1:
            raise KeyError("a bug")
        return DELIVERED

    _lane(queue, FakeSender(clock, answer), clock).run(stop)
    assert queue.states() == {1: "sent", 2: "sent"}
    assert queue.records[1].retries[0][0] == "internal"


class StorageFailingQueue(FakeQueue):
    """Claims fail with a storage fault for the first ``failures`` attempts."""

    def __init__(self, *args: object, failures: int, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.failures = failures
        self.claims = 0

    def claim_next(self, destination: str) -> SpoolEntry | None:
        self.claims += 1
        if self.claims <= self.failures:
            raise StorageNotReadyError(StorageFault.FULL, "claiming a delivery", "disk full")
        return super().claim_next(destination)


def test_a_storage_fault_never_ends_the_lane_and_is_logged_once_each_way(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock, stop = FakeClock(), threading.Event()
    queue = StorageFailingQueue(clock, _entries(2), stop, failures=6)
    sender = FakeSender(clock, lambda e, n: DELIVERED)
    lane = _lane(queue, sender, clock)
    seen: list[object] = []
    queue._on_wait = lambda: seen.append(lane.storage_fault)
    with caplog.at_level(logging.DEBUG, "test.lane"):
        lane.run(stop)  # returns: it never raised
    assert queue.states() == {1: "sent", 2: "sent"}
    assert StorageFault.FULL in seen and lane.storage_fault is None
    messages = {"paused": "delivery paused: state storage failed"}
    messages["resumed"] = "delivery resumed: state storage recovered"
    paused = [r for r in caplog.records if r.getMessage() == messages["paused"]]
    resumed = [r for r in caplog.records if r.getMessage() == messages["resumed"]]
    assert len(paused) == 1 and paused[0].levelno == logging.ERROR
    assert len(resumed) == 1 and resumed[0].levelno == logging.INFO
    # waits grow with the backoff but never beyond the cap: it resumes soon after the fault
    assert max(queue.waits) <= STORAGE_WAIT_CAP
