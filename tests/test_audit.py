"""AuditLog: one JSON line per action, who/when/what, readable after a torn write."""

from __future__ import annotations

import json
import stat
import threading
from pathlib import Path

from gateway.audit import AuditLog
from gateway.clock import FakeClock


def test_append_writes_who_when_what_as_one_json_line(tmp_path: Path) -> None:
    clock = FakeClock(1_700_000_000.5)
    log = AuditLog(tmp_path / "state" / "audit.jsonl", clock)

    record = log.append("cli:alice", "held.discard", "object:7", {"reason": "duplicate"})

    lines = (tmp_path / "state" / "audit.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in lines] == [
        {
            "at": "2023-11-14T22:13:20.500Z",
            "actor": "cli:alice",
            "action": "held.discard",
            "target": "object:7",
            "details": {"reason": "duplicate"},
        }
    ]
    assert record.at == "2023-11-14T22:13:20.500Z"
    mode = stat.S_IMODE((tmp_path / "state" / "audit.jsonl").stat().st_mode)
    assert not mode & stat.S_IROTH  # not world-readable


def test_read_returns_the_last_records_oldest_first(tmp_path: Path) -> None:
    clock = FakeClock()
    log = AuditLog(tmp_path / "audit.jsonl", clock)
    for n in range(5):
        log.append("api:bob", "held.bind_item", f"object:{n}")
        clock.advance(1)
    assert [r.target for r in log.read(3)] == ["object:2", "object:3", "object:4"]
    assert log.read(0) == []
    assert AuditLog(tmp_path / "missing.jsonl", clock).read() == []


def test_a_line_torn_by_a_crash_is_skipped_and_the_next_append_stays_whole(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    log = AuditLog(path, FakeClock())
    log.append("cli:a", "held.discard", "object:1")
    with path.open("ab") as fh:
        fh.write(b'{"at": "2024-01-01T00:00:00.000Z", "actor": "cli:a", "act')  # killed here
    log.append("cli:a", "held.discard", "object:2")
    assert [r.target for r in log.read()] == ["object:1", "object:2"]


def test_concurrent_writers_never_mix_lines(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    # Two instances stand for the daemon and the CLI: separate objects, one file.
    logs = [AuditLog(path, FakeClock()), AuditLog(path, FakeClock())]

    def write(log: AuditLog, who: str) -> None:
        for n in range(100):
            log.append(who, "held.bind_item", f"object:{n}", {"pad": "x" * 500})

    threads = [threading.Thread(target=write, args=(log, f"w{i}")) for i, log in enumerate(logs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    records = logs[0].read(1000)
    assert len(records) == 200
    assert sorted({r.actor for r in records}) == ["w0", "w1"]
