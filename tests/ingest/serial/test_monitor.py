"""The serial monitor: framing events (control bytes, frames, checksums) in a ring, no text."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from gateway.clock import FakeClock
from gateway.ingest.serial.astm_frames import build_frame
from gateway.ingest.serial.monitor import SerialMonitor
from tests.ingest.serial.ptyplay import play_over_ptys
from tests.ingest.serial.test_reader import quick_astm_profile
from tests.peers import require_tool

RECORD = b"P|1||PID-SECRET||Doe^Secret\r"


def kinds(monitor: SerialMonitor) -> list[tuple[str, str]]:
    return [(e.direction, e.kind) for e in monitor.events()]


def test_control_bytes_and_frames_with_number_end_and_checksum() -> None:
    monitor = SerialMonitor(FakeClock())
    monitor.record("in", b"\x05")
    monitor.record("out", b"\x06")
    monitor.record("in", build_frame(1, RECORD, final=False) + build_frame(2, b"L|1\r", True))
    monitor.record("in", b"\x04")
    events = monitor.events()
    assert kinds(monitor) == [
        ("in", "ENQ"),
        ("out", "ACK"),
        ("in", "frame"),
        ("in", "frame"),
        ("in", "EOT"),
    ]
    first, second = events[2], events[3]
    assert (first.frame_number, first.final, first.checksum_ok) == (1, False, True)
    assert first.length == len(RECORD) + 7
    assert (second.frame_number, second.final) == (2, True)
    assert [e.seq for e in events] == [1, 2, 3, 4, 5]


def test_a_frame_split_across_reads_is_one_event() -> None:
    monitor = SerialMonitor(FakeClock())
    frame = build_frame(3, RECORD, final=True)
    for i in range(0, len(frame), 5):
        monitor.record("in", frame[i : i + 5])
    assert kinds(monitor) == [("in", "frame")]
    assert monitor.events()[0].frame_number == 3


def test_bad_checksum_is_reported_as_a_bad_frame() -> None:
    monitor = SerialMonitor(FakeClock())
    frame = bytearray(build_frame(1, RECORD, final=True))
    frame[-4:-2] = b"00" if frame[-4:-2] != b"00" else b"01"
    monitor.record("in", bytes(frame))
    (event,) = monitor.events()
    assert (event.kind, event.problem, event.checksum_ok, event.frame_number) == (
        "bad_frame",
        "bad_checksum",
        False,
        1,
    )


def test_noise_between_frames_is_a_count_and_an_overlong_frame_is_cut() -> None:
    monitor = SerialMonitor(FakeClock())
    monitor.record("in", b"garbage\x05more")
    monitor.record("in", b"\x02" + b"A" * 400)
    events = monitor.events()
    assert [(e.kind, e.length) for e in events] == [
        ("bytes", 7),
        ("ENQ", 1),
        ("bytes", 4),
        ("bad_frame", 248),  # cut one byte past the longest frame E1381 allows
        ("bytes", 153),  # the rest is line noise until the next STX
    ]
    assert events[-2].problem == "overlong"


def test_no_event_holds_any_text_of_the_line() -> None:
    monitor = SerialMonitor(FakeClock())
    monitor.record("in", build_frame(1, RECORD, final=True) + b"Doe^Secret loose text")
    for event in monitor.events():
        for value in dataclasses.asdict(event).values():
            assert not isinstance(value, bytes | bytearray)
            assert "Secret" not in str(value) and "PID" not in str(value)


def test_ring_is_bounded_and_events_after_a_sequence_number() -> None:
    monitor = SerialMonitor(FakeClock(), capacity=10)
    monitor.record("in", b"\x05" * 25)
    events = monitor.events()
    assert len(events) == 10
    assert events[0].seq == 16 and monitor.last_seq == 25
    assert [e.seq for e in monitor.events(after=22)] == [23, 24, 25]
    assert len(monitor.events(limit=3)) == 3


@pytest.mark.peers
def test_reader_shows_the_astm_dialogue_with_the_simulator_over_ptys(tmp_path: Path) -> None:
    require_tool("socat")
    profile = quick_astm_profile()
    played = play_over_ptys(tmp_path, profile, "bad-checksum:1@1")
    report, reader = played.report, played.reader
    assert report.delivered == len(profile.simulator.messages)
    seen = kinds(reader.monitor)
    assert ("in", "ENQ") in seen and ("out", "ACK") in seen and ("in", "EOT") in seen
    assert ("in", "frame") in seen
    bad = [e for e in reader.monitor.events() if e.kind == "bad_frame"]
    assert bad and bad[0].problem == "bad_checksum"
    assert ("out", "NAK") in seen  # the bad frame was refused and sent again
