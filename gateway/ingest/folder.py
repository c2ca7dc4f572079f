"""Watches one drop folder and hands each complete file, once, to a callback.

Which files are taken: regular files in the folder and, recursively, in its subfolders. Never
looked into, read or touched:

* symbolic links, to files or to folders (entries are lstat'ed, links never followed);
* subfolders on another filesystem (mount points), so nothing outside the folder is reached;
* fifos, sockets and device nodes;
* hidden names, files or folders, with a leading '.': dotfiles, ``.~lock.*#`` (LibreOffice),
  rsync's ``.name.XXXXXX``, macOS ``._*`` and ``.DS_Store``, NFS ``.nfs*``;
* temporary names, in any case: ``*.tmp``, ``*.temp``, ``*.part``, ``*.partial``,
  ``*.filepart``, ``*.crdownload``, ``*.download``, ``*.swp``, ``*~``, ``~$*`` (MS Office), and
  the Windows litter ``Thumbs.db``, ``ehthumbs.db``, ``desktop.ini``;
* sidecars, ``*.json`` and ``*.meta`` in any case (see :mod:`gateway.ingest.sidecar`): intake
  reads one with the file it belongs to; on their own they are never taken. One whose file is
  absent and that is older than the stall time is counted at each rescan and reported (a
  WARNING when such strays appear, INFO when none are left); it stays where it is;
* empty files, and files that are not complete yet (see :mod:`gateway.ingest.settle`).

How: one thread per folder. With inotify (through watchdog's InotifyObserver, whose own
threads only record events) new files are picked up promptly and a file written to is held
until its writer closes it. A full rescan runs at start and every ``poll_seconds`` regardless,
since events can be lost (queue overflow). Where inotify cannot be used (``use_inotify = false``,
no inotify, instance or watch limit reached) a WARNING is logged and the rescans do the whole
job: a file is then complete when unchanged for ``settle_seconds``, which cannot tell a writer
that pauses longer than that from one that is done. watchdog skips subfolders it cannot watch
without telling; files in those are also judged by the rescan rule alone.

A folder on a network file system (the device's share mounted by the box, ``cifs``; or any
folder that /proc/self/mountinfo shows on cifs, smb3, nfs...) is watched by polling only:
inotify reports only what this machine writes, never what the device writes on its own disk.
A ``cifs`` folder never starts an observer; any other folder is checked each time the
observer would be (re)started, so a share mounted on it later is noticed too (WARNING).
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat
import threading
from collections.abc import Callable
from pathlib import Path

from watchdog.events import (
    DirCreatedEvent,
    DirDeletedEvent,
    DirMovedEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers.api import BaseObserver

from gateway.clock import Clock
from gateway.config import FolderIngest
from gateway.ingest.remote.cifs import is_network_filesystem, read_filesystem_type
from gateway.ingest.settle import SettleTracker
from gateway.ingest.sidecar import is_sidecar_name, main_file_of
from gateway.logsetup import event

TEMP_SUFFIXES = (
    ".tmp",
    ".temp",
    ".part",
    ".partial",
    ".filepart",
    ".crdownload",
    ".download",
    ".swp",
    "~",
)
TEMP_PREFIXES = (".", "~$")
LITTER = frozenset({"thumbs.db", "ehthumbs.db", "desktop.ini"})
EVENT_TYPES: list[type[FileSystemEvent]] = [
    FileModifiedEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileMovedEvent,
    FileDeletedEvent,
    DirCreatedEvent,
    DirMovedEvent,
    DirDeletedEvent,
]
MIN_WAIT = 0.02  # floor of the thread's wait, so a bug can never turn it into a busy loop
STOP_TIMEOUT = 2.0


def is_candidate_name(name: str) -> bool:
    """False for hidden, temporary, OS-litter and sidecar file names (see the module docstring)."""
    lowered = name.lower()
    return not (
        not name
        or name.startswith(TEMP_PREFIXES)
        or lowered.endswith(TEMP_SUFFIXES)
        or lowered in LITTER
        or is_sidecar_name(name)
    )


def _inotify_observer() -> BaseObserver:
    # Imported here: on a system without inotify the import itself fails, and that is a
    # reason to poll, not to crash.
    from watchdog.observers.inotify import InotifyObserver

    return InotifyObserver()


class _EventSink(FileSystemEventHandler):
    """Passes watchdog's events to the watcher; runs on watchdog's observer thread."""

    def __init__(self, receive: Callable[[FileSystemEvent], None]) -> None:
        super().__init__()
        self._receive = receive

    def dispatch(self, event: FileSystemEvent) -> None:
        self._receive(event)


class FolderWatcher:
    """Hands each complete file of one drop folder to ``on_ready``, on its own thread.

    ``on_ready(path)`` returns True when it took the file (it is gone: queued or quarantined),
    False to keep it for a retry at the next poll tick. An exception from it is logged and the
    file kept in the same way; the watcher carries on. ``max_tracked`` bounds the files it
    keeps state for (more wait their turn); ``observer_factory`` builds the inotify observer
    (a seam for tests).
    """

    def __init__(
        self,
        config: FolderIngest,
        on_ready: Callable[[Path], bool],
        clock: Clock,
        logger: logging.Logger,
        *,
        max_tracked: int = 10_000,
        observer_factory: Callable[[], BaseObserver] = _inotify_observer,
        filesystem_of: Callable[[Path], str | None] = read_filesystem_type,
    ) -> None:
        self.config = config
        self.root = Path(config.path)
        self.source = config.name
        self._on_ready = on_ready
        self._clock = clock
        self._logger = logger
        self._max_tracked = max_tracked  # bounds memory whatever is dropped; the rest waits
        self._observer_factory = observer_factory
        self._filesystem_of = filesystem_of  # a seam for tests: the type of the folder's mount
        self._stall_after = max(300.0, 10 * config.settle_seconds)

        self._lock = threading.Lock()  # guards the tracker, _dirty and _rescan (observer thread)
        self._tracker = SettleTracker(config.settle_seconds, config.empty_grace_seconds)
        self._dirty: set[Path] = set()  # paths events named, to stat at the next tick
        self._rescan = False

        self._tick_lock = threading.Lock()  # one tick at a time (thread or scan_once)
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._observer: BaseObserver | None = None
        self._watched: tuple[int, int] | None = None  # (st_dev, st_ino) the observer follows
        self._refused: tuple[int, int] | None = None  # inotify failed for this folder identity
        self._root_dev: int | None = None
        self._available: bool | None = None
        self._unreadable = 0
        self._at_capacity = False
        self._at_capacity_now = False
        self._stray_sidecars = 0
        self._stray_sidecars_now = 0
        self._last_activity: float | None = None

    # --- lifecycle ------------------------------------------------------------------------------

    @property
    def last_activity(self) -> float | None:
        """When a file was last taken by ``on_ready`` (wall-clock epoch seconds), or None."""
        return self._last_activity

    def start(self) -> None:
        """Start the watch thread; a missing folder is reported and waited for, not created."""
        if self._thread is not None and self._thread.is_alive():
            raise RuntimeError(f"watcher {self.source} already running")
        self._stopping.clear()
        if self.config.polls_only:
            event(
                self._logger,
                logging.INFO,
                "watching by polling only (use_inotify = false)"
                if self.config.cifs is None
                else "watching the device's share by polling only (cifs)",
                source=self.source,
                poll_seconds=self.config.poll_seconds,
            )
        self._thread = threading.Thread(target=self._run, name=f"watch:{self.source}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread and the observer; returns within about two seconds."""
        self._stopping.set()
        self._wake.set()
        thread = self._thread
        if thread is not None:
            thread.join(STOP_TIMEOUT)
            if thread.is_alive():
                event(
                    self._logger,
                    logging.WARNING,
                    "watcher busy with a file; it stops after it",
                    source=self.source,
                )
            else:
                self._thread = None
        self._stop_observer()

    def scan_once(self) -> None:
        """One full rescan, then hand on every ready file; synchronous."""
        self._tick(full=True)

    # --- the thread -----------------------------------------------------------------------------

    def _run(self) -> None:
        next_scan = self._clock.monotonic()
        try:
            while not self._stopping.is_set():
                self._wake.clear()  # before the work: an event during it wakes the next wait
                now = self._clock.monotonic()
                with self._lock:
                    full = now >= next_scan or self._rescan
                    self._rescan = False
                try:
                    if full:
                        next_scan = now + self.config.poll_seconds
                        self._ensure_observer()  # before the scan, so nothing falls between
                    self._tick(full=full)
                    wait = self._wait_time(next_scan)
                except Exception:
                    # A bug or an odd filesystem must not end the watch; try again next tick.
                    self._logger.exception(
                        "folder watch tick failed", extra={"source": self.source}
                    )
                    wait = self.config.poll_seconds
                self._wake.wait(wait)
        finally:
            self._stop_observer()

    def _wait_time(self, next_scan: float) -> float:
        with self._lock:
            due = self._tracker.next_due()
        deadline = next_scan if due is None else min(next_scan, due)
        return max(MIN_WAIT, deadline - self._clock.monotonic())

    def _tick(self, *, full: bool) -> None:
        with self._tick_lock:
            if not self._check_root():
                return
            if full:
                self._scan()
                self._report_stalls()
            self._stat_dirty()
            self._dispatch()

    # --- the folder itself and the inotify observer ---------------------------------------------

    def _check_root(self) -> bool:
        try:
            st = self.root.stat()  # the configured folder may itself be a link: its admin's choice
            present = stat.S_ISDIR(st.st_mode)
        except OSError:
            present = False
        if not present:
            if self._available is not False:
                event(
                    self._logger,
                    logging.ERROR,
                    "drop folder missing; checking every poll tick",
                    source=self.source,
                    path=str(self.root),
                )
            self._available = False
            with self._lock:
                self._tracker.clear()
                self._dirty.clear()
            self._stop_observer()
            return False
        if self._available is False:
            event(self._logger, logging.INFO, "drop folder is back", source=self.source)
        self._available = True
        self._root_dev = st.st_dev
        return True

    def _ensure_observer(self) -> None:
        if self.config.polls_only or self._stopping.is_set():
            return
        try:
            st = self.root.stat()
        except OSError:
            return
        identity = (st.st_dev, st.st_ino)
        observer = self._observer
        if observer is not None and self._watched == identity and observer.is_alive():
            return
        self._stop_observer()  # the folder was replaced, or watchdog stopped on its deletion
        if self._refused == identity:
            return
        fstype = self._filesystem_of(self.root)
        if is_network_filesystem(fstype):
            self._refused = identity
            event(
                self._logger,
                logging.WARNING,
                "drop folder is on a network file system; watching by polling only",
                source=self.source,
                filesystem=fstype,
                poll_seconds=self.config.poll_seconds,
            )
            return
        self._start_observer(identity)

    def _start_observer(self, identity: tuple[int, int]) -> None:
        observer: BaseObserver | None = None
        try:
            observer = self._observer_factory()
            observer.schedule(
                _EventSink(self._on_event),
                str(self.root),
                recursive=True,
                event_filter=EVENT_TYPES,
                follow_symlink=False,
            )
            observer.start()
        except Exception as exc:  # noqa: BLE001 - any failure here means: poll instead
            # (no inotify on this system, instance or watch limit reached, folder unwatchable)
            if observer is not None:
                with contextlib.suppress(Exception):
                    observer.stop()
            self._refused = identity
            event(
                self._logger,
                logging.WARNING,
                "inotify unavailable; watching by polling only",
                source=self.source,
                reason=str(exc),
                poll_seconds=self.config.poll_seconds,
            )
            return
        with self._lock:
            self._observer, self._watched = observer, identity
        self._refused = None
        event(
            self._logger,
            logging.INFO,
            "watching with inotify",
            source=self.source,
            settle_seconds=self.config.settle_seconds,
            poll_seconds=self.config.poll_seconds,
        )

    def _stop_observer(self) -> None:
        with self._lock:
            observer, self._observer, self._watched = self._observer, None, None
        if observer is None:
            return
        try:
            observer.stop()
            if observer.is_alive():
                observer.join(STOP_TIMEOUT / 2)
        except Exception:
            self._logger.exception(
                "stopping the inotify observer failed", extra={"source": self.source}
            )

    def _on_event(self, ev: FileSystemEvent) -> None:
        """Record one watchdog event; on the observer thread, so brief and never raising."""
        try:
            self._record_event(ev)
        except Exception:
            self._logger.exception("cannot record a file event", extra={"source": self.source})

    def _record_event(self, ev: FileSystemEvent) -> None:
        now = self._clock.monotonic()
        if ev.is_directory:
            if ev.event_type in ("created", "moved", "deleted"):
                with self._lock:
                    self._rescan = True
                self._wake.set()
            return
        path = self._candidate(ev.src_path)
        with self._lock:
            if ev.event_type == "modified":
                if path is not None:
                    self._tracker.note_write(path, now)
                return  # nothing to do until it is closed
            if ev.event_type == "closed" and path is not None:
                self._tracker.note_closed(path, now)
                self._dirty.add(path)
            elif ev.event_type == "created" and path is not None:
                self._dirty.add(path)
            elif ev.event_type in ("deleted", "moved") and path is not None:
                self._tracker.forget(path)
                self._dirty.discard(path)
            if ev.event_type == "moved":
                dest = self._candidate(ev.dest_path)
                if dest is not None:
                    self._dirty.add(dest)
        self._wake.set()

    def _candidate(self, raw: bytes | str) -> Path | None:
        if not raw:
            return None
        path = Path(os.fsdecode(raw))
        try:
            parts = path.relative_to(self.root).parts
        except ValueError:
            return None
        if not parts or any(part.startswith(".") for part in parts):
            return None
        return path if is_candidate_name(parts[-1]) else None

    # --- scanning -------------------------------------------------------------------------------

    def _scan(self) -> None:
        started = self._clock.monotonic()
        complete = True
        unreadable = 0
        self._at_capacity_now = False
        self._stray_sidecars_now = 0
        stack = [self.root]
        while stack and not self._stopping.is_set():
            folder = stack.pop()
            try:
                with os.scandir(folder) as entries:
                    for entry in entries:
                        sub = self._visit(entry)
                        if sub is not None:
                            stack.append(sub)
            except FileNotFoundError:
                continue  # removed while we looked: its files are gone too
            except OSError:
                unreadable += 1
                complete = False
        if complete and not self._stopping.is_set():
            with self._lock:
                self._tracker.prune(started)
        self._report_scan(unreadable)

    def _visit(self, entry: os.DirEntry[str]) -> Path | None:
        """Observe a file entry; return a subfolder to descend into."""
        if entry.name.startswith("."):
            return None
        try:
            if entry.is_symlink():
                return None
            if entry.is_dir(follow_symlinks=False):
                st = entry.stat(follow_symlinks=False)
                return Path(entry.path) if st.st_dev == self._root_dev else None
            if not entry.is_file(follow_symlinks=False):
                return None
            if not is_candidate_name(entry.name):
                if is_sidecar_name(entry.name) and not entry.name.startswith(TEMP_PREFIXES):
                    self._check_stray_sidecar(Path(entry.path), entry.stat(follow_symlinks=False))
                return None
            st = entry.stat(follow_symlinks=False)
        except FileNotFoundError:
            return None
        self._observe(Path(entry.path), st)
        return None

    def _check_stray_sidecar(self, path: Path, st: os.stat_result) -> None:
        if self._clock.now() - st.st_mtime < self._stall_after:
            return  # its file may still be on its way
        try:
            main_file_of(path).lstat()
        except FileNotFoundError:
            self._stray_sidecars_now += 1
            self._logger.debug("sidecar without its file: %s", path.name)
        except OSError:
            return

    def _stat_dirty(self) -> None:
        with self._lock:
            paths, self._dirty = self._dirty, set()
        for path in paths:
            try:
                st = path.lstat()
            except FileNotFoundError:
                with self._lock:
                    self._tracker.forget(path)
                continue
            if not stat.S_ISREG(st.st_mode) or st.st_dev != self._root_dev:
                with self._lock:
                    self._tracker.forget(path)
                continue
            self._observe(path, st)

    def _observe(self, path: Path, st: os.stat_result) -> None:
        if not stat.S_ISREG(st.st_mode):
            return
        now = self._clock.monotonic()
        with self._lock:
            if path not in self._tracker and len(self._tracker) >= self._max_tracked:
                self._at_capacity_now = True
                return
            self._tracker.observe(path, st.st_size, st.st_mtime_ns, st.st_ino, now)

    def _report_scan(self, unreadable: int) -> None:
        if unreadable and not self._unreadable:
            event(
                self._logger,
                logging.WARNING,
                "subfolders cannot be read; their files wait",
                source=self.source,
                count=unreadable,
            )
        elif self._unreadable and not unreadable:
            event(self._logger, logging.INFO, "all subfolders readable again", source=self.source)
        self._unreadable = unreadable
        if self._at_capacity_now and not self._at_capacity:
            event(
                self._logger,
                logging.WARNING,
                "more files than tracked at once; taking them in turn",
                source=self.source,
                max_tracked=self._max_tracked,
            )
        elif self._at_capacity and not self._at_capacity_now:
            event(
                self._logger, logging.INFO, "file backlog within limits again", source=self.source
            )
        self._at_capacity = self._at_capacity_now
        if self._stray_sidecars_now and not self._stray_sidecars:
            event(
                self._logger,
                logging.WARNING,
                "sidecar files without their file; left in the folder",
                source=self.source,
                count=self._stray_sidecars_now,
            )
        elif self._stray_sidecars and not self._stray_sidecars_now:
            event(self._logger, logging.INFO, "no stray sidecar files left", source=self.source)
        self._stray_sidecars = self._stray_sidecars_now

    def _report_stalls(self) -> None:
        with self._lock:
            stalled = self._tracker.stalled(self._clock.monotonic(), self._stall_after)
        for path in stalled:
            event(
                self._logger,
                logging.WARNING,
                "file written to but not closed; waiting for its close",
                source=self.source,
                seconds=self._stall_after,
            )
            self._logger.debug("still open for writing: %s", path.name)

    # --- handing on -----------------------------------------------------------------------------

    def _dispatch(self) -> None:
        with self._lock:
            ready = self._tracker.ready(self._clock.monotonic())
        for path in ready:
            if self._stopping.is_set():
                return
            try:
                st = path.lstat()
            except FileNotFoundError:
                with self._lock:
                    self._tracker.forget(path)
                continue
            except OSError:
                self._defer(path)
                continue
            with self._lock:
                if not stat.S_ISREG(st.st_mode):
                    self._tracker.forget(path)
                    continue
                # The last look before handing on: a change since the tracker's stat, or an
                # event that arrived meanwhile, restarts the wait.
                now = self._clock.monotonic()
                changed = self._tracker.observe(path, st.st_size, st.st_mtime_ns, st.st_ino, now)
                if changed or not self._tracker.is_ready(path, now):
                    continue
            self._hand_on(path, st, handed_at=now)

    def _hand_on(self, path: Path, st: os.stat_result, *, handed_at: float) -> None:
        self._logger.debug("ready: %s (%d bytes)", path.name, st.st_size)
        try:
            taken = bool(self._on_ready(path))
        except Exception:
            self._logger.exception(
                "handling a ready file failed; file kept",
                extra={"source": self.source, "size": st.st_size},
            )
            taken = False
        if not taken:
            self._defer(path)
            return
        self._last_activity = self._clock.now()
        with self._lock:
            self._tracker.taken(path, handed_at)

    def _defer(self, path: Path) -> None:
        with self._lock:
            self._tracker.defer(path, self._clock.monotonic() + self.config.poll_seconds)
