"""FolderWatcher on its own thread, with real files, real inotify and short real waits."""

from __future__ import annotations

import errno
import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from watchdog.observers.api import BaseObserver

from gateway.clock import SystemClock
from gateway.ingest.folder import FolderWatcher
from tests.harness import wait_until
from tests.ingest.support import Taker, folder_config

LOG = logging.getLogger("test.ingest.watch")


def _inotify_works() -> bool:
    try:
        from watchdog.observers.inotify import InotifyObserver

        observer = InotifyObserver()
    except Exception:
        return False
    observer.stop()
    return True


needs_inotify = pytest.mark.skipif(not _inotify_works(), reason="no inotify on this system")


@pytest.fixture
def drop(tmp_path: Path) -> Path:
    folder = tmp_path / "drop"
    folder.mkdir()
    return folder


@pytest.fixture
def watchers() -> Iterator[list[FolderWatcher]]:
    """Watchers a test starts; all stopped when it ends, whatever happened."""
    started: list[FolderWatcher] = []
    yield started
    for watcher in started:
        watcher.stop()


def _start(watchers: list[FolderWatcher], watcher: FolderWatcher) -> FolderWatcher:
    watchers.append(watcher)
    watcher.start()
    return watcher


class SlowWriter(threading.Thread):
    """Writes a file in chunks, holding it open, pausing between chunks; records when it closed."""

    def __init__(self, path: Path, chunks: int, pause: float) -> None:
        super().__init__(daemon=True)
        self.path, self.chunks, self.pause = path, chunks, pause
        self.content = b"".join(bytes([i]) * 1000 for i in range(chunks))
        self.closed_at: float | None = None

    def run(self) -> None:
        with self.path.open("wb") as handle:
            for i in range(self.chunks):
                handle.write(bytes([i]) * 1000)
                handle.flush()
                if i < self.chunks - 1:
                    time.sleep(self.pause)
        self.closed_at = time.monotonic()


def _logged(caplog: pytest.LogCaptureFixture, message: str) -> bool:
    return any(r.getMessage() == message for r in caplog.records)


@needs_inotify
def test_with_inotify_a_file_held_open_through_long_pauses_waits_for_its_close(
    drop: Path, watchers: list[FolderWatcher], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=LOG.name)
    taker = Taker()
    config = folder_config(drop, settle_seconds=0.2, poll_seconds=0.1, use_inotify=True)
    _start(watchers, FolderWatcher(config, taker, SystemClock(), LOG))
    assert wait_until(lambda: _logged(caplog, "watching with inotify"), 5.0)

    writer = SlowWriter(drop / "slow.jpg", chunks=3, pause=0.6)  # pauses 3x the settle time
    writer.start()
    writer.join(5.0)
    assert writer.closed_at is not None
    assert taker.calls == []  # never offered while open, though unchanged longer than settle
    assert wait_until(lambda: bool(taker.taken), 3.0)
    assert taker.taken == {drop / "slow.jpg": writer.content}


def test_by_polling_a_file_still_changing_waits_until_closed_and_settled(
    drop: Path, watchers: list[FolderWatcher]
) -> None:
    taker = Taker()
    config = folder_config(drop, settle_seconds=0.5, poll_seconds=0.1, use_inotify=False)
    _start(watchers, FolderWatcher(config, taker, SystemClock(), LOG))

    writer = SlowWriter(drop / "slow.jpg", chunks=6, pause=0.15)  # pauses shorter than settle
    writer.start()
    writer.join(5.0)
    assert writer.closed_at is not None
    assert taker.calls == []
    assert wait_until(lambda: bool(taker.taken), 3.0)
    assert taker.taken == {drop / "slow.jpg": writer.content}


@needs_inotify
def test_files_present_at_start_and_dropped_later_are_both_taken(
    drop: Path, watchers: list[FolderWatcher]
) -> None:
    (drop / "before.jpg").write_bytes(b"before")
    taker = Taker()
    config = folder_config(drop, settle_seconds=0.2, poll_seconds=5.0, use_inotify=True)
    watcher = _start(watchers, FolderWatcher(config, taker, SystemClock(), LOG))
    assert wait_until(lambda: drop / "before.jpg" in taker.taken, 3.0)
    (drop / "after.jpg").write_bytes(b"after")  # picked up by its events, long before a rescan
    assert wait_until(lambda: drop / "after.jpg" in taker.taken, 3.0)
    assert taker.taken == {drop / "before.jpg": b"before", drop / "after.jpg": b"after"}
    assert watcher.last_activity is not None


def test_an_exception_from_on_ready_does_not_stop_the_watcher(
    drop: Path, watchers: list[FolderWatcher], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger=LOG.name)
    (drop / "a.jpg").write_bytes(b"a")
    taker = Taker(answers=[ValueError("bad"), False])
    config = folder_config(drop, settle_seconds=0.1, poll_seconds=0.2)
    watcher = _start(watchers, FolderWatcher(config, taker, SystemClock(), LOG))
    assert wait_until(lambda: bool(taker.taken), 5.0)
    assert len(taker.calls) == 3  # raised, refused, taken: each a poll tick apart
    assert any(r.exc_info and r.__dict__.get("source") == "xray" for r in caplog.records)
    (drop / "b.jpg").write_bytes(b"b")
    assert wait_until(lambda: drop / "b.jpg" in taker.taken, 3.0)
    assert watcher.last_activity is not None


@needs_inotify
def test_stop_is_prompt_and_leaves_no_thread_behind(
    drop: Path, watchers: list[FolderWatcher]
) -> None:
    before = set(threading.enumerate())
    config = folder_config(drop, settle_seconds=30.0, poll_seconds=60.0, use_inotify=True)
    watcher = _start(watchers, FolderWatcher(config, Taker(), SystemClock(), LOG))
    (drop / "a.jpg").write_bytes(b"a")
    time.sleep(0.2)  # let it get into its long wait
    began = time.monotonic()
    watcher.stop()
    assert time.monotonic() - began < 1.0
    assert wait_until(lambda: set(threading.enumerate()) <= before, 2.0)


def test_when_inotify_is_refused_it_falls_back_to_polling_and_says_so(
    drop: Path, watchers: list[FolderWatcher], caplog: pytest.LogCaptureFixture
) -> None:
    def watch_limit() -> BaseObserver:
        raise OSError(errno.ENOSPC, "inotify watch limit reached")

    caplog.set_level(logging.INFO, logger=LOG.name)
    taker = Taker()
    config = folder_config(drop, settle_seconds=0.1, poll_seconds=0.1, use_inotify=True)
    _start(watchers, FolderWatcher(config, taker, SystemClock(), LOG, observer_factory=watch_limit))
    (drop / "a.jpg").write_bytes(b"a")
    assert wait_until(lambda: bool(taker.taken), 3.0)
    [warning] = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert warning.getMessage() == "inotify unavailable; watching by polling only"
    assert "watch limit" in warning.__dict__["reason"]


@needs_inotify
def test_a_folder_missing_at_start_is_waited_for_and_then_watched(
    tmp_path: Path, watchers: list[FolderWatcher], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=LOG.name)
    drop = tmp_path / "not-yet"
    taker = Taker()
    config = folder_config(drop, settle_seconds=0.1, poll_seconds=0.1, use_inotify=True)
    _start(watchers, FolderWatcher(config, taker, SystemClock(), LOG))
    assert wait_until(lambda: _logged(caplog, "drop folder missing; checking every poll tick"), 3)
    assert not drop.exists()
    drop.mkdir()
    (drop / "a.jpg").write_bytes(b"a")
    assert wait_until(lambda: bool(taker.taken), 3.0)
    assert _logged(caplog, "watching with inotify")
