"""Takes one settled file from a drop folder through conversion into the queue.

The source file leaves the drop folder only after its object is durably queued, or after it
was durably quarantined with a reason. Anything else (queue full, disk error, the file changed
while it was read) leaves the file where it is, to be tried again.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import stat
from pathlib import Path
from typing import Protocol

from gateway.clock import Clock
from gateway.convert.result import ConversionError, ConvertedObject
from gateway.ingest.identity import identity_from_filename
from gateway.ingest.items import RawItem
from gateway.logsetup import event
from gateway.spool.durable import fsync_dir
from gateway.spool.entries import EnqueueResult


class ConverterLike(Protocol):
    """What intake needs of the converter."""

    def convert(self, item: RawItem, out_path: Path) -> ConvertedObject: ...


class SpoolLike(Protocol):
    """What intake needs of the queue."""

    def has_room(self, incoming_bytes: int) -> bool: ...

    def staging_path(self, suffix: str = ".dcm") -> Path: ...

    def enqueue(self, obj: ConvertedObject, source: str) -> EnqueueResult: ...


class QuarantineLike(Protocol):
    """What intake needs of the quarantine."""

    def put(self, path: Path, source: str, reason: str) -> Path: ...


def _fingerprint(st: os.stat_result) -> tuple[int, int, int]:
    return (st.st_ino, st.st_size, st.st_mtime_ns)


class Intake:
    """The folder watcher's on_ready callback: convert, enqueue, then remove the source."""

    def __init__(
        self,
        *,
        source: str,
        pattern: re.Pattern[str] | None,
        converter: ConverterLike,
        spool: SpoolLike,
        quarantine: QuarantineLike,
        clock: Clock,
        logger: logging.Logger,
    ) -> None:
        self.source = source
        self.pattern = pattern
        self.converter = converter
        self.spool = spool
        self.quarantine = quarantine
        self.clock = clock
        self.log = logger
        self.full = False
        self.counts = {"queued": 0, "duplicate": 0, "quarantined": 0, "deferred": 0}

    def __call__(self, path: Path) -> bool:
        """Handle one ready file; True when it has left the drop folder (queued or quarantined)."""
        try:
            st = path.lstat()
        except FileNotFoundError:
            return True
        if not stat.S_ISREG(st.st_mode):
            return True  # the watcher never hands these on; nothing of ours to do
        if not self._room_for(st.st_size):
            return False
        staged = self.spool.staging_path()
        try:
            return self._convert_and_queue(path, st, staged)
        finally:
            with contextlib.suppress(FileNotFoundError):
                staged.unlink()  # enqueue moved it away on success; else it is a leftover

    def _room_for(self, size: int) -> bool:
        room = self.spool.has_room(size)
        if not room and not self.full:
            event(self.log, logging.ERROR, "queue full: ingest paused", source=self.source)
        elif room and self.full:
            event(self.log, logging.INFO, "queue has room: ingest resumed", source=self.source)
        self.full = not room
        if not room:
            self.counts["deferred"] += 1
        return room

    def _convert_and_queue(self, path: Path, st: os.stat_result, staged: Path) -> bool:
        item = RawItem(
            path=path,
            source=self.source,
            size=st.st_size,
            mtime=st.st_mtime,
            identity=identity_from_filename(self.pattern, path.name),
        )
        try:
            obj = self.converter.convert(item, staged)
        except ConversionError as exc:
            return self._reject(path, exc.reason)
        except (MemoryError, RecursionError) as exc:
            return self._reject(
                path, f"input too large or too deep to convert ({type(exc).__name__})"
            )
        except OSError as exc:
            # Reading the drop folder or writing staging failed: not the file's fault. Keep it.
            event(self.log, logging.ERROR, "cannot convert now", source=self.source, error=str(exc))
            return False
        except Exception as exc:  # a converter bug must not kill the watcher or lose the file
            self.log.exception("converter failed", extra={"source": self.source})
            return self._reject(path, f"internal conversion error ({type(exc).__name__})")

        try:
            if _fingerprint(path.lstat()) != _fingerprint(st):
                event(
                    self.log,
                    logging.WARNING,
                    "file changed while read; retrying",
                    source=self.source,
                )
                return False
        except FileNotFoundError:
            event(self.log, logging.WARNING, "file vanished while read", source=self.source)
            return True

        try:
            result = self.spool.enqueue(obj, self.source)
        except Exception as exc:
            self.log.exception("enqueue failed; file kept", extra={"source": self.source})
            event(self.log, logging.ERROR, "enqueue failed", source=self.source, error=str(exc))
            return False

        self._remove_source(path)
        key = "duplicate" if result.duplicate else "queued"
        self.counts[key] += 1
        event(
            self.log,
            logging.INFO,
            "already queued; source removed" if result.duplicate else "queued",
            source=self.source,
            object_id=result.object_id,
            kind=obj.kind,
            sop_instance_uid=obj.sop_instance_uid,
            held=obj.held_reason or "",
            size=st.st_size,
        )
        return True

    def _reject(self, path: Path, reason: str) -> bool:
        try:
            where = self.quarantine.put(path, self.source, reason)
        except Exception:
            self.log.exception("quarantine failed; file kept", extra={"source": self.source})
            return False
        self.counts["quarantined"] += 1
        event(self.log, logging.WARNING, "quarantined", source=self.source, reason=reason)
        self.log.debug("quarantined as %s", where.name)
        return True

    def _remove_source(self, path: Path) -> None:
        try:
            path.unlink()
            fsync_dir(path.parent)
        except FileNotFoundError:
            pass
        except OSError as exc:
            # Queued but not removed: a re-read is a duplicate, so nothing is sent twice.
            event(
                self.log,
                logging.ERROR,
                "cannot remove source after queueing",
                source=self.source,
                error=str(exc),
            )
