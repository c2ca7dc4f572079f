"""The delivery state machine against a model, driven by hypothesis (real SQLite and files)."""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from gateway.clock import FakeClock
from gateway.spool.entries import DeliveryState
from gateway.spool.store import Spool
from tests.spool.objects import stage

DESTS = ("a", "b")


@dataclass
class Delivery:
    object_id: int
    destination: str
    state: DeliveryState
    next_at: float


@dataclass
class Obj:
    size: int
    uid: str
    data: bytes
    deliveries: dict[int, Delivery] = field(default_factory=dict)

    def unsent(self) -> bool:
        return any(d.state != DeliveryState.SENT for d in self.deliveries.values())


class SpoolMachine(RuleBasedStateMachine):
    """Every rule does the same to the spool and the model; invariants compare them."""

    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="spool-sm-"))
        self.clock = FakeClock()
        self.spool = Spool(self.dir, DESTS, 1 << 30, self.clock)
        self.spool.open()
        self.objects: dict[int, Obj] = {}
        self.counter = 0

    def teardown(self) -> None:
        self.spool.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def _deliveries(self) -> dict[int, Delivery]:
        return {k: d for o in self.objects.values() for k, d in o.deliveries.items()}

    def _in(self, state: DeliveryState) -> list[int]:
        return sorted(k for k, d in self._deliveries().items() if d.state == state)

    # -- ingest ------------------------------------------------------------------------------

    @rule(size=st.integers(1, 64), held=st.booleans())
    def enqueue(self, size: int, held: bool) -> None:
        self.counter += 1
        data = self.counter.to_bytes(4, "big") + b"x" * size
        obj = stage(self.spool, data, held_reason="no identity" if held else None)
        result = self.spool.enqueue(obj, "src")
        assert not result.duplicate and result.object_id not in self.objects
        info = self.spool.show(result.object_id)
        assert info is not None
        state = DeliveryState.HELD if held else DeliveryState.PENDING
        self.objects[result.object_id] = Obj(
            len(data),
            obj.sop_instance_uid,
            data,
            {
                d.delivery_id: Delivery(result.object_id, d.destination, state, self.clock.now())
                for d in info.deliveries
            },
        )

    @precondition(lambda self: self.objects)
    @rule(data=st.data())
    def enqueue_again(self, data: st.DataObject) -> None:
        object_id = data.draw(st.sampled_from(sorted(self.objects)))
        known = self.objects[object_id]
        staged = stage(self.spool, known.data, uid=known.uid)
        result = self.spool.enqueue(staged, "src")
        assert result.duplicate and result.object_id == object_id
        assert not staged.path.exists()

    # -- lanes -------------------------------------------------------------------------------

    @rule(dest=st.sampled_from(DESTS))
    def claim(self, dest: str) -> None:
        now = self.clock.now()
        due = [
            (d.next_at, k)
            for k, d in self._deliveries().items()
            if d.destination == dest and d.state == DeliveryState.PENDING and d.next_at <= now
        ]
        entry = self.spool.claim_next(dest)
        if not due:
            assert entry is None
            return
        assert entry is not None and entry.delivery_id == min(due)[1]
        assert entry.path.read_bytes() == self.objects[entry.object_id].data
        self.objects[entry.object_id].deliveries[entry.delivery_id].state = DeliveryState.SENDING

    @precondition(lambda self: self._in(DeliveryState.SENDING))
    @rule(
        data=st.data(),
        outcome=st.sampled_from(["sent", "retry", "failed"]),
        delay=st.floats(0, 100),
    )
    def finish(self, data: st.DataObject, outcome: str, delay: float) -> None:
        delivery_id = data.draw(st.sampled_from(self._in(DeliveryState.SENDING)))
        d = self._deliveries()[delivery_id]
        if outcome == "sent":
            self.spool.mark_sent(delivery_id)
            d.state = DeliveryState.SENT
        elif outcome == "retry":
            self.spool.mark_retry(delivery_id, "timeout", "slow", self.clock.now() + delay)
            d.state, d.next_at = DeliveryState.PENDING, self.clock.now() + delay
        else:
            self.spool.mark_failed(delivery_id, "dimse_failure", "refused", 0xA700)
            d.state = DeliveryState.FAILED

    @rule(seconds=st.floats(0, 200))
    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)

    # -- operator and restarts ---------------------------------------------------------------

    @rule()
    def retry_all_failed(self) -> None:
        failed = self._in(DeliveryState.FAILED)
        assert self.spool.retry() == len(failed)
        for k in failed:
            self._deliveries()[k].state = DeliveryState.PENDING
            self._deliveries()[k].next_at = self.clock.now()

    @precondition(lambda self: self.objects)
    @rule(data=st.data())
    def retry_some(self, data: st.DataObject) -> None:
        ids = data.draw(st.lists(st.sampled_from(sorted(self.objects)), max_size=3))
        changed = [
            d
            for i in set(ids)
            for d in self.objects[i].deliveries.values()
            if d.state in (DeliveryState.FAILED, DeliveryState.PENDING)
        ]
        assert self.spool.retry(ids) == len(changed)
        for d in changed:
            d.state, d.next_at = DeliveryState.PENDING, self.clock.now()

    @rule()
    def release_held(self) -> None:
        held = self._in(DeliveryState.HELD)
        assert self.spool.release(sorted(self.objects)) == len(held)
        for k in held:
            self._deliveries()[k].state = DeliveryState.PENDING
            self._deliveries()[k].next_at = self.clock.now()

    @rule()
    def purge_failed(self) -> None:
        failed = self._in(DeliveryState.FAILED)
        assert self.spool.purge() == len(failed)
        for object_id, obj in list(self.objects.items()):
            obj.deliveries = {
                k: d for k, d in obj.deliveries.items() if d.state != DeliveryState.FAILED
            }
            if not obj.deliveries:
                del self.objects[object_id]

    @rule()
    def restart(self) -> None:
        self.spool.close()
        self.spool.open()
        now = self.clock.now()
        for d in self._deliveries().values():
            if d.state == DeliveryState.SENDING:
                d.state, d.next_at = DeliveryState.PENDING, now
            elif d.state == DeliveryState.PENDING:
                d.next_at = min(d.next_at, now)

    # -- invariants --------------------------------------------------------------------------

    @invariant()
    def deliveries_match_the_model(self) -> None:
        rows = self.spool.list_deliveries(limit=1 << 20)
        assert {r.delivery_id: (r.state, r.next_attempt_at) for r in rows} == {
            k: (d.state, d.next_at) for k, d in self._deliveries().items()
        }

    @invariant()
    def payload_lives_exactly_while_a_destination_lacks_it(self) -> None:
        live = {i for i, o in self.objects.items() if o.unsent()}
        files = list(self.spool.objects_dir.iterdir())
        assert len(files) == len(live)
        for object_id in self.objects:
            info = self.spool.show(object_id)
            assert info is not None
            assert (info.payload is not None) == (object_id in live)
        assert self.spool.used_bytes() == sum(self.objects[i].size for i in live)
        assert list(self.spool.staging_dir.iterdir()) == []


SpoolMachine.TestCase.settings = settings(max_examples=30, stateful_step_count=30, deadline=None)
TestSpoolStateMachine = SpoolMachine.TestCase
