"""Rebind and discard of held objects: the queue's state, its files, and real kill -9 crashes.

Run as a script, this file is also the crash child:
    python tests/spool/test_rebind.py STATE_DIR SEED
enqueues held objects and rebinds or discards them in a loop, printing after each call returned:
"held <id> <sha>", "rebound <id> <sha>", "discarded <id>".
"""

from __future__ import annotations

import hashlib
import random
import sqlite3
import sys
import threading
from pathlib import Path

if __name__ == "__main__":  # the crash child runs from the repository root
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import pytest

from gateway.clock import FakeClock, SystemClock
from gateway.convert.coerce import RewriteFacts
from gateway.spool.entries import DeliveryState
from gateway.spool.rebind import DISCARDED, HeldObjects, NotHeldError
from gateway.spool.recovery import NO_DESTINATION
from gateway.spool.store import Spool
from tests.spool.conftest import MakeSpool
from tests.spool.killchild import run_and_kill
from tests.spool.objects import EXPLICIT_LE, SECONDARY_CAPTURE, stage

DESTS = ("pacs", "archive")
NEW_STUDY = "2.25.777"


def _held(spool: Spool, data: bytes = b"old payload") -> int:
    return spool.enqueue(
        stage(spool, data, held_reason="patient identity unknown"), "src"
    ).object_id


def _rewritten(
    spool: Spool, object_id: int, data: bytes = b"new payload"
) -> tuple[Path, RewriteFacts]:
    info = spool.show(object_id)
    assert info is not None
    path = spool.staging_path()
    path.write_bytes(data)
    facts = RewriteFacts(
        sop_class_uid=SECONDARY_CAPTURE,
        sop_instance_uid=info.sop_instance_uid,
        study_instance_uid=NEW_STUDY,
        transfer_syntax_uid=EXPLICIT_LE,
        size=len(data),
    )
    return path, facts


def _states(spool: Spool, object_id: int) -> dict[str, DeliveryState]:
    info = spool.show(object_id)
    assert info is not None
    return {d.destination: d.state for d in info.deliveries}


def test_rebind_points_the_object_at_the_new_payload_and_releases_it(spool: Spool) -> None:
    held = HeldObjects(spool)
    object_id = _held(spool)
    old = spool.show(object_id)
    assert old is not None and old.payload is not None
    path, facts = _rewritten(spool, object_id, b"rebound bytes")

    assert held.rebind(object_id, path, facts, "cli:tester", "worklist item k1") == 2

    info = spool.show(object_id)
    assert info is not None and info.payload is not None
    assert info.payload.read_bytes() == b"rebound bytes"
    assert info.payload.parent == spool.objects_dir
    assert (info.study_instance_uid, info.size, info.held_reason) == (NEW_STUDY, 13, None)
    assert _states(spool, object_id) == {"pacs": "pending", "archive": "pending"}
    assert not old.payload.exists()
    assert not path.exists()
    entry = spool.claim_next("pacs")
    assert entry is not None and entry.path == info.payload
    assert held.list_held() == []


def test_rebind_wakes_the_lanes_of_the_released_deliveries(spool: Spool) -> None:
    object_id = _held(spool)
    assert spool.claim_next("pacs") is None
    woke = threading.Event()

    def lane() -> None:
        spool.wait_for_work("pacs", 30.0)
        woke.set()

    thread = threading.Thread(target=lane)
    thread.start()
    try:
        path, facts = _rewritten(spool, object_id)
        HeldObjects(spool).rebind(object_id, path, facts, "cli:tester", "item")
        assert woke.wait(5.0)
    finally:
        spool.wake_all()
        thread.join(5.0)


def test_only_held_objects_can_be_rebound_and_nothing_changes_otherwise(spool: Spool) -> None:
    held = HeldObjects(spool)
    pending = spool.enqueue(stage(spool, b"ready"), "src").object_id
    before = spool.show(pending)
    path, facts = _rewritten(spool, pending)
    with pytest.raises(NotHeldError, match="not held"):
        held.rebind(pending, path, facts, "cli:tester", "item")
    assert spool.show(pending) == before
    assert not path.exists()  # consumed either way
    assert sorted(p.name for p in spool.objects_dir.iterdir()) == [before.payload.name]  # type: ignore[union-attr]
    with pytest.raises(NotHeldError, match="not in the queue"):
        held.get(999)


def test_a_changed_sop_instance_uid_is_refused(spool: Spool) -> None:
    object_id = _held(spool)
    path, facts = _rewritten(spool, object_id)
    wrong = RewriteFacts(
        facts.sop_class_uid, "2.25.1", facts.study_instance_uid, facts.transfer_syntax_uid, 3
    )
    with pytest.raises(ValueError, match="SOP Instance UID"):
        HeldObjects(spool).rebind(object_id, path, wrong, "cli:tester", "item")
    assert _states(spool, object_id) == {"pacs": "held", "archive": "held"}
    assert len(list(spool.objects_dir.iterdir())) == 1


def test_objects_waiting_for_a_destination_are_not_listed_as_held(make_spool: MakeSpool) -> None:
    spool = make_spool(())
    spool.enqueue(stage(spool, b"no dest"), "src")
    identity_held = _held(spool)
    held = HeldObjects(spool)
    assert [i.object_id for i in held.list_held()] == [identity_held]


def test_a_held_object_without_destinations_rebinds_to_wait_for_one(
    make_spool: MakeSpool, clock: FakeClock
) -> None:
    spool = make_spool(())
    object_id = _held(spool)
    path, facts = _rewritten(spool, object_id)
    assert HeldObjects(spool).rebind(object_id, path, facts, "cli:tester", "item") == 0
    info = spool.show(object_id)
    assert info is not None and info.held_reason == NO_DESTINATION
    spool.close()
    reopened = make_spool(("pacs",))
    assert _states(reopened, object_id) == {"pacs": "pending"}


def test_discard_keeps_the_file_aside_and_no_retry_can_send_it(spool: Spool) -> None:
    held = HeldObjects(spool)
    object_id = _held(spool, b"wrong patient")
    payload = spool.show(object_id).payload  # type: ignore[union-attr]

    kept = held.discard(object_id, "  scanned the wrong patient  ", "cli:tester")

    assert kept == spool.root / "discarded" / f"{object_id}.dcm"
    assert kept.read_bytes() == b"wrong patient"
    assert payload is not None and not payload.exists()
    info = spool.show(object_id)
    assert info is not None and info.payload is None
    assert info.held_reason == "discarded: scanned the wrong patient"
    for delivery in info.deliveries:
        assert delivery.state == DeliveryState.FAILED
        assert delivery.failure_class == DISCARDED
        assert delivery.last_error == "discarded: scanned the wrong patient"
    assert spool.retry() == 0
    assert spool.retry([object_id]) == 0
    assert spool.claim_next("pacs") is None
    with pytest.raises(NotHeldError, match="no longer held"):
        held.discard(object_id, "again", "cli:tester")
    assert spool.purge([object_id]) == 2
    assert spool.show(object_id) is None
    assert kept.exists()  # only an engineer removes it


@pytest.mark.parametrize("reason", ["", "   ", "line\nbreak", "x" * 201])
def test_discard_needs_a_plain_reason(spool: Spool, reason: str) -> None:
    object_id = _held(spool)
    with pytest.raises(ValueError, match="reason"):
        HeldObjects(spool).discard(object_id, reason, "cli:tester")
    assert _states(spool, object_id) == {"pacs": "held", "archive": "held"}


def test_a_discard_cut_short_before_its_commit_leaves_the_object_held(spool: Spool) -> None:
    # The kept copy exists (linked first), the commit never happened: still held, and a second
    # discard replaces the leftover copy.
    held = HeldObjects(spool)
    object_id = _held(spool, b"payload")
    held.discarded_dir.mkdir(parents=True)
    (held.discarded_dir / f"{object_id}.dcm").write_bytes(b"leftover")
    assert [i.object_id for i in held.list_held()] == [object_id]
    kept = held.discard(object_id, "duplicate", "cli:tester")
    assert kept.read_bytes() == b"payload"


# -- kill -9 -------------------------------------------------------------------------------------


def _child(state: Path, seed: int) -> None:
    spool = Spool(state, DESTS, 1 << 40, SystemClock())
    spool.open()
    held = HeldObjects(spool)
    rng = random.Random(seed)
    print("ready", flush=True)
    waiting: list[int] = []
    while True:
        if not waiting or rng.random() < 0.4:
            data = rng.randbytes(rng.randint(1, 40_000))
            object_id = _held(spool, data)
            waiting.append(object_id)
            print(f"held {object_id} {hashlib.sha256(data).hexdigest()}", flush=True)
            continue
        object_id = waiting.pop(rng.randrange(len(waiting)))
        if rng.random() < 0.2:
            held.discard(object_id, "crash test", "child")
            print(f"discarded {object_id}", flush=True)
            continue
        data = rng.randbytes(rng.randint(1, 40_000))
        path, facts = _rewritten(spool, object_id, data)
        held.rebind(object_id, path, facts, "child", "crash test")
        print(f"rebound {object_id} {hashlib.sha256(data).hexdigest()}", flush=True)


def _run_and_kill(state: Path, seed: int, kill_after: float) -> list[str]:
    return run_and_kill([__file__, str(state), str(seed)], kill_after)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.slow
def test_kill_9_during_rebind_and_discard_leaves_old_held_or_new_pending(tmp_path: Path) -> None:
    state = tmp_path / "state"
    promised_held: dict[int, str] = {}
    promised_new: dict[int, str] = {}
    promised_discarded: set[int] = set()
    rng = random.Random(5)
    for round_no in range(10):
        for line in _run_and_kill(state, round_no, rng.uniform(0.05, 0.6)):
            kind, object_id, *rest = line.split()
            if kind == "held":
                promised_held[int(object_id)] = rest[0]
            elif kind == "rebound":
                promised_new[int(object_id)] = rest[0]
            else:
                promised_discarded.add(int(object_id))

        spool = Spool(state, DESTS, 1 << 40, SystemClock())
        spool.open()
        try:
            rep = spool.last_recovery
            assert rep is not None and rep.payloads_missing == 0
            db = sqlite3.connect(spool.db_path)
            rows = db.execute("SELECT id, payload, held_reason FROM objects").fetchall()
            db.close()
            on_disk = {p.name for p in spool.objects_dir.iterdir()}
            assert on_disk == {r[1] for r in rows if r[1] is not None}  # no orphan, none missing
            assert set(promised_held) <= {r[0] for r in rows}
            for object_id, payload, held_reason in rows:
                states = set(_states(spool, object_id).values())
                path = spool.objects_dir / payload if payload else None
                if object_id in promised_new:
                    assert states == {"pending"} and path is not None
                    assert _sha(path) == promised_new[object_id]
                elif object_id in promised_discarded:
                    assert states == {"failed"} and path is None
                    assert held_reason.startswith("discarded: ")
                elif states == {"held"}:  # the old held object, untouched
                    assert path is not None
                    assert _sha(path) == promised_held.get(object_id, _sha(path))
                elif states == {"pending"}:  # rebound, killed before it could say so
                    assert path is not None and held_reason is None
                    assert _sha(path) != promised_held[object_id]
                else:  # discarded, killed before it could say so
                    assert states == {"failed"} and path is None
                kept = spool.root / "discarded" / f"{object_id}.dcm"
                if states == {"failed"}:
                    assert _sha(kept) == promised_held[object_id]
        finally:
            spool.close()
    assert promised_new and promised_discarded  # the crashes did cut through the work


if __name__ == "__main__":
    _child(Path(sys.argv[1]), int(sys.argv[2]))
