"""When a dropped file is complete: closed, and unchanged for a settle time.

Pure logic, no I/O: the folder watcher feeds it what stat() and inotify say, with the time
(a monotonic clock reading) passed in, and asks which files are ready.

The rules, per path:

* a file is *ready* when it has been stat'ed at least once, is not empty, has no write
  outstanding, and neither its fingerprint (size, mtime_ns, inode) nor a write or close event
  has changed for ``settle_seconds``;
* a write event (inotify IN_MODIFY) marks the file as being written; only a close-after-write
  event (IN_CLOSE_WRITE) clears the mark. The mark has no timeout: a lost close event keeps the
  file where it is (visible, see :meth:`SettleTracker.stalled`) rather than risking a half file;
* a new inode at the same path (the file was replaced) counts as a change, so the settle time
  starts again; it does not clear a write mark, since the events of the new file may arrive
  before the stat that shows its inode;
* an empty file is most often one that was just created and is about to be written, so it is
  ready only after ``empty_grace_seconds`` (at least the settle time) without any change; then
  it is handed on, and quarantined as empty, rather than left in the folder for ever.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

Fingerprint = tuple[int, int, int]  # (size, mtime_ns, inode)


@dataclass
class _Record:
    fingerprint: Fingerprint | None  # None: known from an event only, not stat'ed yet
    since: float  # last change seen: settle time counts from here
    touched: float  # last observation or event: records untouched by a whole scan are pruned
    writing: bool = False
    not_before: float = float("-inf")  # deferred by the consumer until then
    stall_reported: bool = False


class SettleTracker:
    """Decides which files of one folder are complete; bounded to one record per present file."""

    def __init__(self, settle_seconds: float, empty_grace_seconds: float = 60.0) -> None:
        if settle_seconds < 0:
            raise ValueError("settle_seconds must not be negative")
        self.settle_seconds = settle_seconds
        self.empty_grace_seconds = max(settle_seconds, empty_grace_seconds)
        self._records: dict[Path, _Record] = {}

    def __len__(self) -> int:
        return len(self._records)

    def __contains__(self, path: object) -> bool:
        return path in self._records

    def observe(self, path: Path, size: int, mtime_ns: int, inode: int, now: float) -> bool:
        """Record what a stat() of ``path`` showed; True when that is new or changed."""
        fingerprint = (size, mtime_ns, inode)
        record = self._records.get(path)
        if record is None:
            self._records[path] = _Record(fingerprint, since=now, touched=now)
            return True
        record.touched = max(record.touched, now)
        if record.fingerprint == fingerprint:
            return False
        record.fingerprint = fingerprint
        self._changed(record, now)
        return True

    def note_write(self, path: Path, now: float) -> None:
        """An inotify modify event: the file is being written."""
        record = self._event_record(path, now)
        record.writing = True
        self._changed(record, now)

    def note_closed(self, path: Path, now: float) -> None:
        """An inotify close-after-write event: the writer let go; the settle time starts again."""
        record = self._event_record(path, now)
        record.writing = False
        self._changed(record, now)

    def forget(self, path: Path) -> None:
        """The file was deleted, moved away or handed on."""
        self._records.pop(path, None)

    def clear(self) -> None:
        """Forget every file (the folder itself went away)."""
        self._records.clear()

    def defer(self, path: Path, until: float) -> None:
        """Do not offer ``path`` again before ``until`` (the consumer could not take it now)."""
        record = self._records.get(path)
        if record is not None:
            record.not_before = until

    def prune(self, before: float) -> list[Path]:
        """Forget files neither observed nor noted since ``before`` (start of a complete scan)."""
        gone = [p for p, r in self._records.items() if r.touched < before]
        for path in gone:
            del self._records[path]
        return gone

    def taken(self, path: Path, handed_at: float) -> None:
        """The file offered at ``handed_at`` was taken: forget it, unless it changed since.

        A change since then (an event of a new file under the same name, written while the old
        one was being handled) means the record now describes that new file, so it stays.
        """
        record = self._records.get(path)
        if record is not None and record.since <= handed_at:
            del self._records[path]

    def is_ready(self, path: Path, now: float) -> bool:
        """Whether ``path`` is among :meth:`ready`."""
        record = self._records.get(path)
        return record is not None and self._is_ready(record, now)

    def ready(self, now: float) -> list[Path]:
        """Settled files not open for writing, oldest (by mtime, then path) first."""
        ready = [
            (r.fingerprint[1], str(p), p)
            for p, r in self._records.items()
            if r.fingerprint is not None and self._is_ready(r, now)
        ]
        return [p for _, _, p in sorted(ready)]

    def next_due(self) -> float | None:
        """The earliest time a file not being written could become ready, if any."""
        due = [
            max(r.since + self._settle_for(r), r.not_before)
            for r in self._records.values()
            if not r.writing and r.fingerprint is not None
        ]
        return min(due, default=None)

    def stalled(self, now: float, after: float) -> list[Path]:
        """Files marked as being written but unchanged for ``after`` seconds; each reported once."""
        out = []
        for path, record in self._records.items():
            if record.writing and not record.stall_reported and now - record.since >= after:
                record.stall_reported = True
                out.append(path)
        return out

    def _is_ready(self, record: _Record, now: float) -> bool:
        return (
            record.fingerprint is not None
            and not record.writing
            and now - record.since >= self._settle_for(record)
            and now >= record.not_before
        )

    def _settle_for(self, record: _Record) -> float:
        empty = record.fingerprint is not None and record.fingerprint[0] == 0
        return self.empty_grace_seconds if empty else self.settle_seconds

    def _event_record(self, path: Path, now: float) -> _Record:
        record = self._records.get(path)
        if record is None:
            record = self._records[path] = _Record(None, since=now, touched=now)
        record.touched = max(record.touched, now)
        return record

    @staticmethod
    def _changed(record: _Record, now: float) -> None:
        record.since = max(record.since, now)
        record.stall_reported = False
