"""SettleTracker: when a file counts as complete, with explicit times and no sleeping."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.ingest.settle import SettleTracker

A = Path("/drop/a.jpg")
B = Path("/drop/b.jpg")


def test_a_file_is_ready_only_after_it_was_unchanged_for_the_settle_time() -> None:
    tracker = SettleTracker(2.0)
    tracker.observe(A, 100, 5, 1, now=10.0)
    assert tracker.ready(11.9) == []
    tracker.observe(A, 100, 5, 1, now=11.9)  # same fingerprint: the wait is not restarted
    assert tracker.ready(12.0) == [A]


def test_a_growing_file_restarts_the_wait_at_each_change() -> None:
    tracker = SettleTracker(2.0)
    tracker.observe(A, 100, 5, 1, now=10.0)
    assert tracker.observe(A, 200, 6, 1, now=11.5) is True
    assert tracker.ready(12.0) == []
    assert tracker.ready(13.5) == [A]


def test_a_replaced_file_with_a_new_inode_restarts_the_wait_even_with_equal_size_and_mtime() -> (
    None
):
    tracker = SettleTracker(2.0)
    tracker.observe(A, 100, 5, 1, now=10.0)
    assert tracker.observe(A, 100, 5, 2, now=11.9) is True
    assert tracker.ready(12.5) == []
    assert tracker.ready(13.9) == [A]


def test_a_file_written_to_is_held_until_closed_however_long_the_pause() -> None:
    tracker = SettleTracker(1.0)
    tracker.observe(A, 100, 5, 1, now=10.0)
    tracker.note_write(A, now=10.5)
    assert tracker.ready(1000.0) == []  # open for writing, unchanged for a long time: still held
    tracker.note_closed(A, now=1000.0)
    assert tracker.ready(1000.5) == []  # the settle time counts from the close
    assert tracker.ready(1001.0) == [A]


def test_a_stat_does_not_clear_a_write_mark() -> None:
    tracker = SettleTracker(1.0)
    tracker.note_write(A, now=10.0)
    tracker.observe(A, 100, 5, 7, now=10.1)  # first stat of a file known from its events
    tracker.observe(A, 100, 5, 8, now=20.0)  # even a new inode: its events may come first
    assert tracker.ready(50.0) == []
    tracker.note_closed(A, now=50.0)
    assert tracker.ready(51.0) == [A]


def test_a_file_known_only_from_events_is_never_ready_before_a_stat() -> None:
    tracker = SettleTracker(0.0)
    tracker.note_write(A, now=1.0)
    tracker.note_closed(A, now=2.0)
    assert tracker.ready(100.0) == []
    assert tracker.next_due() is None
    tracker.observe(A, 3, 4, 5, now=100.0)
    assert tracker.ready(100.0) == [A]


def test_an_empty_file_is_ready_only_after_the_empty_grace() -> None:
    tracker = SettleTracker(1.0, empty_grace_seconds=30.0)
    tracker.observe(A, 0, 5, 1, now=0.0)
    assert tracker.ready(29.0) == []
    assert tracker.next_due() == 30.0
    assert tracker.ready(30.0) == [A]


def test_an_empty_file_that_grows_settles_normally() -> None:
    tracker = SettleTracker(1.0, empty_grace_seconds=30.0)
    tracker.observe(A, 0, 5, 1, now=0.0)
    tracker.observe(A, 10, 6, 1, now=2.0)
    assert tracker.ready(3.0) == [A]


def test_ready_files_come_oldest_first_by_mtime() -> None:
    tracker = SettleTracker(1.0)
    tracker.observe(A, 1, 2_000, 1, now=0.0)
    tracker.observe(B, 1, 1_000, 2, now=0.0)
    assert tracker.ready(5.0) == [B, A]


def test_deferred_file_is_offered_again_only_after_the_deferral() -> None:
    tracker = SettleTracker(1.0)
    tracker.observe(A, 1, 2, 3, now=0.0)
    assert tracker.ready(1.0) == [A]
    tracker.defer(A, until=3.0)
    assert tracker.ready(2.9) == []
    assert tracker.next_due() == 3.0
    assert tracker.ready(3.0) == [A]


def test_next_due_names_the_earliest_settle_and_ignores_files_being_written() -> None:
    tracker = SettleTracker(2.0)
    tracker.observe(A, 1, 2, 3, now=10.0)
    tracker.observe(B, 1, 2, 4, now=5.0)
    tracker.note_write(B, now=6.0)
    assert tracker.next_due() == 12.0


def test_forget_and_prune_keep_one_record_per_present_file_only() -> None:
    tracker = SettleTracker(1.0)
    for i in range(5):
        tracker.observe(Path(f"/drop/{i}"), 1, 1, i, now=1.0)
    tracker.forget(Path("/drop/0"))
    assert len(tracker) == 4
    # A scan starting at 2.0 saw files 1 and 2; an event during it named file 9.
    tracker.observe(Path("/drop/1"), 1, 1, 1, now=2.1)
    tracker.observe(Path("/drop/2"), 1, 1, 2, now=2.2)
    tracker.note_write(Path("/drop/9"), now=2.3)
    gone = tracker.prune(before=2.0)
    assert sorted(gone) == [Path("/drop/3"), Path("/drop/4")]
    assert len(tracker) == 3
    assert Path("/drop/9") in tracker  # written during the scan: its write mark must survive


def test_taken_forgets_the_file_unless_a_new_one_began_under_its_name_meanwhile() -> None:
    tracker = SettleTracker(1.0)
    tracker.observe(A, 1, 2, 3, now=0.0)
    tracker.observe(B, 1, 2, 4, now=0.0)
    tracker.taken(A, handed_at=5.0)
    assert A not in tracker
    tracker.note_write(B, now=5.5)  # the device writes a new B while the old one was handled
    tracker.taken(B, handed_at=5.0)
    assert B in tracker
    assert tracker.ready(100.0) == []


def test_a_long_open_write_is_reported_once_as_stalled() -> None:
    tracker = SettleTracker(1.0)
    tracker.observe(A, 1, 2, 3, now=0.0)
    tracker.note_write(A, now=0.0)
    assert tracker.stalled(now=299.0, after=300.0) == []
    assert tracker.stalled(now=300.0, after=300.0) == [A]
    assert tracker.stalled(now=900.0, after=300.0) == []
    tracker.note_write(A, now=901.0)  # it moves again; a new stall is reported anew
    assert tracker.stalled(now=1201.0, after=300.0) == [A]


def test_zero_settle_time_still_needs_the_file_closed() -> None:
    tracker = SettleTracker(0.0)
    tracker.observe(A, 1, 2, 3, now=0.0)
    tracker.note_write(A, now=0.0)
    assert tracker.ready(0.0) == []
    tracker.note_closed(A, now=1.0)
    assert tracker.is_ready(A, 1.0)


def test_a_negative_settle_time_is_refused() -> None:
    with pytest.raises(ValueError, match="negative"):
        SettleTracker(-1.0)
