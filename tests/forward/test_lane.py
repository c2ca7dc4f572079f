"""DeliveryLane: an unreachable PACS backs off the whole lane; an object's failure, only it."""

from __future__ import annotations

import itertools
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
BAD = SendOutcome(OutcomeKind.REFUSED, "cannot understand", FailureClass.DIMSE_FAILURE, 0xC000)


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
    script = {1: BUSY, 2: BAD}

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
    assert queue.records[2].failure == ("dimse_failure", "cannot understand", 0xC000)
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


FULL = SendOutcome(
    OutcomeKind.RETRY, "out of resources (0xA700)", FailureClass.OUT_OF_RESOURCES, 0xA700
)
NOTHING_ACCEPTED = SendOutcome(
    OutcomeKind.REFUSED,
    "the PACS accepted none of the 3 proposed presentation contexts (CT Image Storage)",
    FailureClass.NO_PRESENTATION_CONTEXT,
    accepted_sop_classes=frozenset(),
)


def _records(caplog: pytest.LogCaptureFixture, message: str, level: int) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.getMessage() == message and r.levelno == level]


def test_out_of_resources_backs_off_the_lane_and_fails_nothing() -> None:
    # Issue 10 B12: 0xA700 sent a whole backlog to failed in seconds.
    clock, stop = FakeClock(), threading.Event()
    start = clock.now()
    queue = FakeQueue(clock, _entries(20), stop)
    sender = FakeSender(clock, lambda e, n: FULL if n <= 4 else DELIVERED)
    lane = _lane(queue, sender, clock)
    seen: list[str] = []
    queue_wait = queue.wait_for_work

    def watch(destination: str, timeout: float) -> None:
        seen.append(lane.status.condition)
        queue_wait(destination, timeout)

    queue.wait_for_work = watch  # type: ignore[method-assign]
    lane.run(stop)

    times = [t - start for _, t in sender.calls]
    assert times[:5] == pytest.approx([0.0, 5.0, 15.0, 35.0, 75.0], abs=0.02)  # lane backoff
    assert set(queue.states().values()) == {"sent"}
    retried = [r for rec in queue.records.values() for r in rec.retries]
    assert [(r[0], r[3]) for r in retried] == [("out_of_resources", 0xA700)] * 4
    assert "out_of_resources" in seen
    assert lane.status.condition == "ok"


def test_a_pacs_that_accepts_nothing_is_paused_then_resumes_by_itself(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="test.lane")
    clock, stop = FakeClock(), threading.Event()
    queue = FakeQueue(clock, _entries(20), stop)
    fixed_at = clock.now() + 3600.0
    statuses = []

    def answer(entry: SpoolEntry, n: int) -> SendOutcome:
        statuses.append(lane.status)
        return NOTHING_ACCEPTED if clock.now() < fixed_at else DELIVERED

    sender = FakeSender(clock, answer)
    lane = _lane(queue, sender, clock)
    lane.run(stop)

    assert set(queue.states().values()) == {"sent"}  # nothing failed, no operator
    paused = [s for s in statuses if s.condition == "paused"]
    assert paused and "accepted none" in paused[-1].reason
    assert paused[-1].next_attempt_at is not None
    # probes, one object each, at the backoff steps: not one attempt per queued object
    probes = [c for c in sender.calls if c[1] < fixed_at]
    assert 5 <= len(probes) <= 12
    assert len(_records(caplog, "destination_paused", logging.ERROR)) == 1
    recovered = _records(caplog, "destination_recovered", logging.INFO)
    assert len(recovered) == 1 and vars(recovered[0])["condition"] == "paused"
    assert lane.status.condition == "ok"


def test_a_class_it_accepted_before_and_now_refuses_pauses_the_destination() -> None:
    clock, stop = FakeClock(), threading.Event()
    queue = FakeQueue(clock, _entries(3), stop)
    refused_ct = SendOutcome(
        OutcomeKind.REFUSED,
        "the PACS accepts CT Image Storage in none of the transfer syntaxes we can send",
        FailureClass.NO_PRESENTATION_CONTEXT,
        accepted_sop_classes=frozenset({"1.2.840.10008.5.1.4.1.1.7"}),
    )
    sender = FakeSender(clock, lambda e, n: DELIVERED if n == 1 or n > 3 else refused_ct)
    lane = _lane(queue, sender, clock)
    lane.run(stop)
    assert queue.states() == {1: "sent", 2: "sent", 3: "sent"}
    assert queue.records[2].retries[0][0] == "no_presentation_context"


def test_a_class_never_accepted_while_the_others_are_fails_only_that_object() -> None:
    clock, stop = FakeClock(), threading.Event()
    entries = _entries(3)
    pdf = "1.2.840.10008.5.1.4.1.1.104.1"
    entries[1] = SpoolEntry(
        2, 2, "pacs", Path("/spool/2.dcm"), pdf, "1.2.3.2", "1.2.840.10008.1.2.1", 10, 0
    )
    queue = FakeQueue(clock, entries, stop)
    refused_pdf = SendOutcome(
        OutcomeKind.REFUSED,
        "the PACS accepts Encapsulated PDF Storage in none of the transfer syntaxes we can send",
        FailureClass.NO_PRESENTATION_CONTEXT,
        accepted_sop_classes=frozenset({"1.2.3"}),
    )
    sender = FakeSender(clock, lambda e, n: refused_pdf if e.sop_class_uid == pdf else DELIVERED)
    lane = _lane(queue, sender, clock)
    lane.run(stop)
    assert queue.states() == {1: "sent", 2: "failed", 3: "sent"}
    assert lane.status.condition == "ok"


def test_a_long_outage_is_reminded_at_info_at_a_bounded_rate(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Issue 10 B14: after the first failure, only DEBUG lines for hours.
    caplog.set_level(logging.INFO, logger="test.lane")
    clock, stop = FakeClock(), threading.Event()
    start = clock.now()
    hours = 6
    queue = FakeQueue(clock, _entries(1), stop)
    up_at = start + hours * 3600.0
    sender = FakeSender(clock, lambda e, n: REFUSED_CONN if clock.now() < up_at else DELIVERED)
    _lane(queue, sender, clock).run(stop)

    reminders = _records(caplog, "destination_still_unreachable", logging.INFO)
    into = [vars(r)["outage_seconds"] for r in reminders]  # fake seconds into the outage
    assert len(reminders) >= hours  # the operator hears about it every hour at least...
    assert len(reminders) <= hours * 4 + 4  # ...and at most about four times an hour
    summary = vars(reminders[-1])["summary"]
    assert summary.startswith("pacs: still unreachable, ") and " attempts, next in " in summary
    assert "connection refused" in summary
    attempts = [vars(r)["attempts"] for r in reminders]
    assert attempts == sorted(attempts) and len(set(attempts)) == len(attempts)
    assert into[0] >= 60
    late = [b - a for a, b in itertools.pairwise(into) if a >= 1800]
    assert late and min(late) >= 900  # every 15 min at most once the outage is old
    assert len(_records(caplog, "destination_unreachable", logging.ERROR)) == 1
    assert len(_records(caplog, "destination_recovered", logging.INFO)) == 1


class _BlockingSender(FakeSender):
    """Its send blocks until interrupted, then reports the association aborted."""

    def __init__(self, clock: FakeClock) -> None:
        super().__init__(clock, lambda e, n: DELIVERED)
        self.sending = threading.Event()
        self._aborted = threading.Event()

    def send(self, entry: SpoolEntry) -> SendOutcome:
        self.calls.append((entry.delivery_id, self.clock.now()))
        self.sending.set()
        self._aborted.wait(10)
        return SendOutcome(OutcomeKind.RETRY, "aborted", FailureClass.ASSOCIATION_ABORTED)

    def interrupt(self) -> None:
        super().interrupt()
        self._aborted.set()


def test_an_interrupted_send_goes_back_to_pending_without_an_outage(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="test.lane")
    clock, stop = FakeClock(), threading.Event()
    queue = FakeQueue(clock, _entries(1))
    sender = _BlockingSender(clock)
    lane = _lane(queue, sender, clock)
    thread = threading.Thread(target=lane.run, args=(stop,))
    thread.start()
    assert sender.sending.wait(5)
    stop.set()
    lane.interrupt()
    thread.join(5)
    assert not thread.is_alive() and sender.interrupted and sender.closed
    record = queue.records[1]
    assert record.state == "pending" and record.due == pytest.approx(clock.now(), abs=1.0)
    assert not _records(caplog, "destination_unreachable", logging.ERROR)
    assert _records(caplog, "delivery_interrupted", logging.INFO)
    assert lane.status.condition == "ok"


def test_an_object_that_keeps_failing_is_reminded_at_info_at_a_bounded_rate(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Issue 10 B14, for one object's own retries (0x0110 for hours while the PACS answers).
    caplog.set_level(logging.INFO, logger="test.lane")
    clock, stop = FakeClock(), threading.Event()
    hours = 6
    busy_until = clock.now() + hours * 3600.0
    queue = FakeQueue(clock, _entries(1), stop)
    sender = FakeSender(clock, lambda e, n: BUSY if clock.now() < busy_until else DELIVERED)
    _lane(queue, sender, clock).run(stop)

    assert len(_records(caplog, "delivery_deferred", logging.WARNING)) == 1  # the first
    reminders = _records(caplog, "delivery_deferred", logging.INFO)
    assert hours <= len(reminders) <= hours * 4 + 4
    attempts = [vars(r)["attempts"] for r in reminders]
    assert attempts == sorted(attempts) and attempts[0] > 1
    assert queue.states() == {1: "sent"}


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


AE_REJECTED = SendOutcome(
    OutcomeKind.RETRY,
    "PACS rejected our AE title: calling AE title not recognised — ask the PACS administrator "
    "to add AE title EDGE_GW at 10.1.2.3",
    FailureClass.ASSOCIATION_REJECTED_PERMANENT,
)


def test_a_pacs_that_rejects_our_ae_title_waits_at_the_ceiling_and_loses_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Issue 11 item 15: retried on the short backoff for ever, shown only as "unreachable".
    caplog.set_level(logging.DEBUG, logger="test.lane")
    clock, stop = FakeClock(), threading.Event()
    start = clock.now()
    queue = FakeQueue(clock, _entries(5), stop)
    fixed_at = start + 3000.0
    statuses = []

    def answer(entry: SpoolEntry, n: int) -> SendOutcome:
        statuses.append(lane.status)
        return AE_REJECTED if clock.now() < fixed_at else DELIVERED

    sender = FakeSender(clock, answer)
    lane = _lane(queue, sender, clock)
    lane.run(stop)

    times = [t - start for _, t in sender.calls if t < fixed_at]
    # Not 5, 10, 20 s apart: a person must act, so every wait is the ceiling (600 s).
    assert times == pytest.approx([0.0, 600.0, 1200.0, 1800.0, 2400.0], abs=0.05)
    assert set(queue.states().values()) == {"sent"}  # nothing failed meanwhile
    rejected = [s for s in statuses if s.condition == "rejected"]
    assert rejected and rejected[-1].reason == AE_REJECTED.reason
    assert len(_records(caplog, "destination_rejected", logging.ERROR)) == 1
    # Each repeat comes 10 min after the last: past the reminder's gap, so each is at INFO.
    assert len(_records(caplog, "destination_still_rejected", logging.INFO)) == 4
    recovered = _records(caplog, "destination_recovered", logging.INFO)
    assert len(recovered) == 1 and vars(recovered[0])["condition"] == "rejected"
    assert lane.status.condition == "ok"
