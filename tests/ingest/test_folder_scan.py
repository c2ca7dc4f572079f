"""FolderWatcher.scan_once with a fake clock: which files are handed on, when, and which never."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from gateway.clock import FakeClock
from gateway.ingest.folder import FolderWatcher, is_candidate_name
from tests.ingest.support import Taker, folder_config

LOG = logging.getLogger("test.ingest.scan")


def _watcher(drop: Path, taker: Taker, clock: FakeClock, **overrides: object) -> FolderWatcher:
    return FolderWatcher(folder_config(drop, **overrides), taker, clock, LOG)


@pytest.fixture
def drop(tmp_path: Path) -> Path:
    folder = tmp_path / "drop"
    folder.mkdir()
    return folder


def test_a_file_already_there_is_handed_on_once_it_has_settled(drop: Path) -> None:
    (drop / "a.jpg").write_bytes(b"jpeg")
    taker, clock = Taker(), FakeClock()
    watcher = _watcher(drop, taker, clock)
    watcher.scan_once()
    assert taker.calls == []  # seen for the first time: it might still be growing
    clock.advance(0.9)
    watcher.scan_once()
    assert taker.calls == []
    clock.advance(0.1)
    watcher.scan_once()
    assert taker.taken == {drop / "a.jpg": b"jpeg"}
    assert watcher.last_activity == clock.now()


def test_a_file_that_keeps_growing_waits_for_the_settle_time_after_its_last_change(
    drop: Path,
) -> None:
    taker, clock = Taker(), FakeClock()
    watcher = _watcher(drop, taker, clock)
    path = drop / "a.jpg"
    path.write_bytes(b"1")
    watcher.scan_once()
    for step in range(5):
        clock.advance(0.6)
        with path.open("ab") as handle:
            handle.write(b"more")
        os.utime(path, ns=(step * 10**9, step * 10**9))  # mtime moves like a writer's would
        watcher.scan_once()
        assert taker.calls == []
    clock.advance(1.0)
    watcher.scan_once()
    assert taker.taken == {path: b"1" + b"more" * 5}


def test_a_replaced_file_with_a_new_inode_starts_its_settle_time_again(drop: Path) -> None:
    taker, clock = Taker(), FakeClock()
    watcher = _watcher(drop, taker, clock)
    path = drop / "a.jpg"
    path.write_bytes(b"old!")
    os.utime(path, ns=(10**9, 10**9))
    watcher.scan_once()
    clock.advance(0.8)
    replacement = drop / ".incoming"
    replacement.write_bytes(b"new!")  # same size and mtime, other inode
    os.utime(replacement, ns=(10**9, 10**9))
    replacement.rename(path)
    watcher.scan_once()
    clock.advance(0.5)  # 1.3 s after the first look, 0.5 s after the replacement
    watcher.scan_once()
    assert taker.calls == []
    clock.advance(0.5)
    watcher.scan_once()
    assert taker.taken == {path: b"new!"}


def test_files_in_subfolders_are_found_but_hidden_folders_are_not(drop: Path) -> None:
    (drop / "2025" / "01").mkdir(parents=True)
    (drop / "2025" / "01" / "deep.png").write_bytes(b"png")
    (drop / ".cache").mkdir()
    (drop / ".cache" / "hidden.png").write_bytes(b"png")
    taker, clock = Taker(), FakeClock()
    watcher = _watcher(drop, taker, clock)
    watcher.scan_once()
    clock.advance(1.0)
    watcher.scan_once()
    assert list(taker.taken) == [drop / "2025" / "01" / "deep.png"]
    assert (drop / ".cache" / "hidden.png").exists()


@pytest.mark.parametrize(
    "name",
    [
        ".hidden.jpg",
        ".~lock.report.pdf#",
        "._a.jpg",
        "a.jpg.tmp",
        "A.JPG.TMP",
        "a.temp",
        "a.part",
        "a.partial",
        "a.filepart",
        "a.crdownload",
        "a.download",
        "a.swp",
        "a.jpg~",
        "~$report.pdf",
        "Thumbs.db",
        "desktop.ini",
    ],
)
def test_hidden_and_temporary_names_are_left_alone(drop: Path, name: str) -> None:
    assert not is_candidate_name(name)
    (drop / name).write_bytes(b"data")
    taker, clock = Taker(), FakeClock()
    watcher = _watcher(drop, taker, clock)
    watcher.scan_once()
    clock.advance(5.0)
    watcher.scan_once()
    assert taker.calls == []
    assert (drop / name).read_bytes() == b"data"


@pytest.mark.parametrize("name", ["a.jpg", "IMG 001.JPG", "report.pdf", "x.dcm", "noext", "a~b"])
def test_ordinary_names_are_candidates(name: str) -> None:
    assert is_candidate_name(name)


def test_symlinks_to_files_and_folders_are_never_followed_nor_touched(
    tmp_path: Path, drop: Path
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.jpg").write_bytes(b"secret")
    (drop / "link.jpg").symlink_to(outside / "secret.jpg")
    (drop / "linked-folder").symlink_to(outside, target_is_directory=True)
    (drop / "dangling.jpg").symlink_to(tmp_path / "nothing")
    inside = drop / "real.jpg"
    inside.write_bytes(b"real")
    (drop / "alias.jpg").symlink_to(inside)  # even a link to a file inside the folder
    taker, clock = Taker(), FakeClock()
    watcher = _watcher(drop, taker, clock)
    watcher.scan_once()
    clock.advance(5.0)
    watcher.scan_once()
    assert list(taker.taken) == [inside]
    assert (outside / "secret.jpg").read_bytes() == b"secret"
    assert (drop / "link.jpg").is_symlink()
    assert (drop / "linked-folder").is_symlink()
    assert (drop / "alias.jpg").is_symlink()


def test_fifos_are_skipped_without_being_opened(drop: Path) -> None:
    os.mkfifo(drop / "pipe.jpg")  # opening it would block the watcher
    taker, clock = Taker(), FakeClock()
    watcher = _watcher(drop, taker, clock)
    watcher.scan_once()
    clock.advance(5.0)
    watcher.scan_once()
    assert taker.calls == []
    assert (drop / "pipe.jpg").exists()


def test_an_empty_file_is_handed_on_only_after_the_empty_grace(drop: Path) -> None:
    (drop / "empty.jpg").touch()
    taker, clock = Taker(), FakeClock()
    watcher = _watcher(drop, taker, clock)
    watcher.scan_once()
    clock.advance(59.0)
    watcher.scan_once()
    assert taker.calls == []
    clock.advance(2.0)
    watcher.scan_once()
    assert [p.name for p in taker.calls] == ["empty.jpg"]


def test_a_file_refused_by_on_ready_stays_and_is_retried_at_the_next_poll_tick(
    drop: Path,
) -> None:
    (drop / "a.jpg").write_bytes(b"jpeg")
    taker, clock = Taker(answers=[False]), FakeClock()
    watcher = _watcher(drop, taker, clock, poll_seconds=2.0)
    watcher.scan_once()
    clock.advance(1.0)
    watcher.scan_once()
    assert taker.calls == [drop / "a.jpg"]
    assert (drop / "a.jpg").exists()
    assert watcher.last_activity is None
    for _ in range(3):  # not asked again before the next poll tick
        clock.advance(0.5)
        watcher.scan_once()
    assert len(taker.calls) == 1
    clock.advance(0.5)
    watcher.scan_once()
    assert len(taker.calls) == 2
    assert taker.taken == {drop / "a.jpg": b"jpeg"}


def test_an_exception_from_on_ready_is_logged_with_the_source_and_the_file_kept(
    drop: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (drop / "a.jpg").write_bytes(b"jpeg")
    taker, clock = Taker(answers=[RuntimeError("converter bug")]), FakeClock()
    watcher = _watcher(drop, taker, clock)
    with caplog.at_level(logging.ERROR, logger=LOG.name):
        watcher.scan_once()
        clock.advance(1.0)
        watcher.scan_once()
    assert (drop / "a.jpg").exists()
    [record] = [r for r in caplog.records if r.exc_info]
    assert record.__dict__["source"] == "xray"
    assert "a.jpg" not in record.getMessage()  # names may hold patient data: DEBUG only
    clock.advance(2.0)
    watcher.scan_once()
    assert taker.taken == {drop / "a.jpg": b"jpeg"}


def test_a_file_that_vanishes_before_its_turn_is_not_offered(drop: Path) -> None:
    (drop / "a.jpg").write_bytes(b"jpeg")
    taker, clock = Taker(), FakeClock()
    watcher = _watcher(drop, taker, clock)
    watcher.scan_once()
    (drop / "a.jpg").unlink()
    clock.advance(5.0)
    watcher.scan_once()
    assert taker.calls == []


def test_a_missing_folder_is_reported_once_and_used_when_it_appears(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    drop = tmp_path / "later"
    taker, clock = Taker(), FakeClock()
    watcher = _watcher(drop, taker, clock)
    with caplog.at_level(logging.INFO, logger=LOG.name):
        watcher.scan_once()
        watcher.scan_once()
        assert not drop.exists()  # never created by the watcher
        drop.mkdir()
        (drop / "a.jpg").write_bytes(b"jpeg")
        watcher.scan_once()
        clock.advance(1.0)
        watcher.scan_once()
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert [r.getMessage() for r in errors] == ["drop folder missing; checking every poll tick"]
    assert "drop folder is back" in caplog.messages
    assert taker.taken == {drop / "a.jpg": b"jpeg"}


def test_more_files_than_tracked_at_once_are_all_taken_in_turn(
    drop: Path, caplog: pytest.LogCaptureFixture
) -> None:
    for i in range(5):
        (drop / f"{i}.jpg").write_bytes(b"x")
    taker, clock = Taker(), FakeClock()
    watcher = FolderWatcher(folder_config(drop), taker, clock, LOG, max_tracked=2)
    with caplog.at_level(logging.WARNING, logger=LOG.name):
        for _ in range(8):
            watcher.scan_once()
            clock.advance(1.0)
    assert sorted(p.name for p in taker.taken) == [f"{i}.jpg" for i in range(5)]
    assert any("more files than tracked" in m for m in caplog.messages)


def test_files_are_handed_on_oldest_first(drop: Path) -> None:
    for name, mtime in (("b.jpg", 30), ("a.jpg", 20), ("c.jpg", 10)):
        (drop / name).write_bytes(b"x")
        os.utime(drop / name, ns=(mtime * 10**9, mtime * 10**9))
    taker, clock = Taker(), FakeClock()
    watcher = _watcher(drop, taker, clock)
    watcher.scan_once()
    clock.advance(1.0)
    watcher.scan_once()
    assert [p.name for p in taker.calls] == ["c.jpg", "a.jpg", "b.jpg"]
