"""Real kill -9 at random instants: nothing promised is lost, nothing half-done survives open()."""

from __future__ import annotations

import collections
import hashlib
import random
import sqlite3
from pathlib import Path

from gateway.clock import SystemClock
from gateway.spool.store import Spool
from tests.spool.killchild import run_and_kill
from tests.spool.objects import stage

CHILD = Path(__file__).with_name("crash_child.py")
DESTS = ("pacs", "archive")


def _run_and_kill(mode: str, state: Path, seed: int, kill_after: float | None) -> list[str]:
    """Start the child, kill -9 it ``kill_after`` s after it is ready (None: once it says done)."""
    return run_and_kill([str(CHILD), mode, str(state), ",".join(DESTS), str(seed)], kill_after)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _reopen_and_check(state: Path) -> tuple[sqlite3.Connection, Spool, int]:
    """Open with recovery, then check the invariants; returns a reader, the spool, repairs made."""
    spool = Spool(state, DESTS, 1 << 40, SystemClock())
    spool.open()
    rep = spool.last_recovery
    assert rep is not None and rep.payloads_missing == 0
    repairs = rep.staging_removed + rep.orphans_removed + rep.requeued
    db = sqlite3.connect(spool.db_path)
    live = dict(db.execute("SELECT payload, source_sha256 FROM objects WHERE payload IS NOT NULL"))
    on_disk = {p.name for p in spool.objects_dir.iterdir()}
    assert on_disk == set(live), "orphan payloads or rows without payload"
    for name, sha in live.items():  # no torn payload anywhere, reported or not
        assert _sha(spool.objects_dir / name) == sha
    assert list(spool.staging_dir.iterdir()) == []
    assert db.execute("SELECT COUNT(*) FROM deliveries WHERE state = 'sending'").fetchone()[0] == 0
    unsent_without_payload = db.execute(
        """SELECT COUNT(*) FROM deliveries d JOIN objects o ON o.id = d.object_id
           WHERE d.state != 'sent' AND o.payload IS NULL"""
    ).fetchone()[0]
    assert unsent_without_payload == 0
    return db, spool, repairs


def test_enqueue_survives_kill_9_at_any_instant(tmp_path: Path) -> None:
    state = tmp_path / "state"
    rng = random.Random(20240901)
    promised: dict[int, str] = {}
    repairs = 0
    round_no = 0
    # At least 15 kills; more on a slow machine, until the run has proved something (capped).
    while round_no < 15 or ((len(promised) <= 30 or repairs == 0) and round_no < 60):
        lines = _run_and_kill("enqueue", state, round_no, rng.uniform(0.010, 0.200))
        for line in lines:
            id_text, sha, duplicate = line.split()
            if duplicate == "1":
                assert promised[int(id_text)] == sha, "duplicate must name the same object"
            promised[int(id_text)] = sha

        db, spool, fixed = _reopen_and_check(state)
        repairs += fixed
        try:
            for object_id, sha in promised.items():
                info = spool.show(object_id)
                assert info is not None, f"object {object_id} lost after round {round_no}"
                assert info.payload is not None and _sha(info.payload) == sha
                assert info.source_sha256 == sha
                assert {d.destination for d in info.deliveries} == set(DESTS)
        finally:
            db.close()
            spool.close()
        round_no += 1

    assert len(promised) > 30, "the child barely ran; the test proved little"
    assert repairs > 0, "no kill landed mid-enqueue; the test proved little"


def test_delivery_survives_kill_9_and_never_resends_a_confirmed_one(tmp_path: Path) -> None:
    state = tmp_path / "state"
    setup = Spool(state, DESTS, 1 << 40, SystemClock())
    setup.open()
    content: dict[int, str] = {}
    for i in range(80):
        data = random.Random(i).randbytes(2000 + i)
        content[setup.enqueue(stage(setup, data), "src").object_id] = hashlib.sha256(
            data
        ).hexdigest()
    setup.close()

    rng = random.Random(7)
    reported: collections.Counter[str] = collections.Counter()
    sent: set[int] = set()
    failed: set[int] = set()
    rounds = [rng.uniform(0.010, 0.150) for _ in range(8)] + [None]
    for round_no, kill_after in enumerate(rounds):
        for line in _run_and_kill("deliver", state, round_no, kill_after):
            verb, delivery_id = line.split()
            reported[line] += 1
            (sent if verb == "sent" else failed if verb == "failed" else set()).add(
                int(delivery_id)
            )

        db, spool, _ = _reopen_and_check(state)
        try:
            states = dict(db.execute("SELECT id, state FROM deliveries"))
            assert len(states) == 2 * len(content), "a delivery row was lost"
            assert all(states[d] == "sent" for d in sent), "a confirmed send is pending again"
            assert all(states[d] == "failed" for d in failed)
            for object_id, sha in content.items():
                info = spool.show(object_id)
                assert info is not None, f"object {object_id} lost"
                if any(d.state != "sent" for d in info.deliveries):
                    assert info.payload is not None and _sha(info.payload) == sha
                else:
                    assert info.payload is None
        finally:
            db.close()
            spool.close()

    assert all(n == 1 for line, n in reported.items() if line.startswith("sent ")), (
        "a delivery confirmed once was sent again"
    )
    assert set(states.values()) <= {"sent", "failed"}  # the last run went to the end
    assert len(sent) > 0
