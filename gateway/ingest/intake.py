"""Takes one settled file from a drop folder through binding and conversion into the queue.

The source file leaves the drop folder only after its object is durably queued, or after it
was durably quarantined with a reason. Anything else (queue full, disk error, the file changed
while it was read) leaves the file where it is, to be tried again.

A fault of the box's own storage (:mod:`gateway.storagefault`: full, read-only, I/O error),
wherever it is met (the grouping database, staging, the queue, the quarantine), is never the
file's fault: the file stays, it is never quarantined for it, and the pause is logged once
when it starts and once when it ends (:mod:`gateway.ingest.pause`), not at each rescan.

A sidecar (:mod:`gateway.ingest.sidecar`) is read when the file is ready, if it is complete
too (unchanged for ``sidecar_settle_seconds``; while it is not, the file waits). After the
object is queued and the file removed, a valid sidecar is removed as well; a malformed one
(its object is held) goes to quarantine with the reason. When the file is quarantined, its
sidecar follows it there. A sidecar written after its file was taken is left in the folder
(the watcher reports it).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import re
import stat
from pathlib import Path
from typing import Protocol

from gateway.clock import Clock
from gateway.convert.result import ConversionError, ConvertedObject
from gateway.ingest.identity import FilenameIdentity, read_filename_identity
from gateway.ingest.items import RawItem, printable_name
from gateway.ingest.pause import FOLDER_EVENTS, IngestPause
from gateway.ingest.sidecar import Sidecar, read_sidecar, sidecar_candidates
from gateway.logsetup import event
from gateway.spool.durable import fsync_dir
from gateway.spool.entries import EnqueueResult, ObjectSource, SourceChannel
from gateway.spool.space import Room
from gateway.storagefault import StorageNotReadyError, as_not_ready
from gateway.worklist.binding import Binder, Binding, loggable_reason

MAX_WATCHED_SIDECARS = 10_000  # sidecars seen still being written; bounds memory
# How a quarantined sidecar's reason starts (gateway.ingest.requeue puts it back with its file).
SIDECAR_OF_QUARANTINED = "sidecar of quarantined file "
MALFORMED_SIDECAR = "malformed sidecar ("


class ConverterLike(Protocol):
    """What intake needs of the converter."""

    def convert(self, item: RawItem, out_path: Path) -> ConvertedObject: ...


class SpoolLike(Protocol):
    """What intake needs of the queue."""

    def room_for(self, incoming_bytes: int) -> Room: ...

    def report_storage_fault(self, exc: StorageNotReadyError) -> None: ...

    def staging_path(self, suffix: str = ".dcm") -> Path: ...

    def enqueue(
        self, obj: ConvertedObject, source: str, origin: ObjectSource | None = None
    ) -> EnqueueResult: ...


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
        binder: Binder | None = None,
        sidecar_settle_seconds: float = 1.0,
        root: Path | None = None,
    ) -> None:
        """``binder`` None: no worklist (the file name's and sidecar's identity, issue 2 rules).

        ``root`` is the drop folder: a file's name is its path inside it (``day1/a.jpg``);
        None: the file's own name.
        """
        self.source = source
        self.root = root
        self.pattern = pattern
        self.converter = converter
        self.spool = spool
        self.quarantine = quarantine
        self.clock = clock
        self.log = logger
        self.binder = binder if binder is not None else Binder(None, None, require_match=False)
        self.sidecar_settle_seconds = sidecar_settle_seconds
        self.full = False
        self.pause = IngestPause(logger, source, FOLDER_EVENTS)
        self.counts = {"queued": 0, "duplicate": 0, "quarantined": 0, "deferred": 0, "held": 0}
        # sidecar path -> (fingerprint, monotonic time it was first seen with it)
        self._sidecars_seen: dict[Path, tuple[tuple[int, int, int], float]] = {}

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
        sidecars = self._settled_sidecars(path)
        if sidecars is None:
            self.counts["deferred"] += 1
            return False
        staged = self.spool.staging_path()
        try:
            return self._convert_and_queue(path, st, staged, sidecars)
        finally:
            with contextlib.suppress(FileNotFoundError):
                staged.unlink()  # enqueue moved it away on success; else it is a leftover

    def _room_for(self, size: int) -> bool:
        room = self.pause.room(self.spool.room_for(size))
        self.full = not room
        if not room:
            self.counts["deferred"] += 1
        return room

    def _storage_failed(self, exc: StorageNotReadyError) -> bool:
        """The box's storage failed while the file was handled: it stays, to be tried again."""
        self.spool.report_storage_fault(exc)
        self.pause.storage_failed(exc)
        self.counts["deferred"] += 1
        return False

    def _settled_sidecars(self, path: Path) -> dict[Path, os.stat_result] | None:
        """The file's sidecars with their stat; None while one may still be being written."""
        found: dict[Path, os.stat_result] = {}
        waiting = False
        for candidate in sidecar_candidates(path):
            try:
                st = candidate.lstat()
            except FileNotFoundError:
                self._sidecars_seen.pop(candidate, None)
                continue
            if not stat.S_ISREG(st.st_mode):
                continue  # a link or a folder by that name is not a sidecar
            found[candidate] = st
            if not self._sidecar_settled(candidate, st):
                waiting = True
        if waiting:
            event(
                self.log, logging.DEBUG, "sidecar not complete yet; file waits", source=self.source
            )
            return None
        return found

    def _sidecar_settled(self, path: Path, st: os.stat_result) -> bool:
        settle = self.sidecar_settle_seconds
        if st.st_size > 0 and self.clock.now() - st.st_mtime >= settle:
            return True
        # Written just now (or an empty file about to be written): it must stay unchanged for
        # the settle time, measured on our own clock in case the writer's differs.
        now = self.clock.monotonic()
        seen = self._sidecars_seen.get(path)
        fingerprint = _fingerprint(st)
        if seen is None or seen[0] != fingerprint:
            if len(self._sidecars_seen) >= MAX_WATCHED_SIDECARS:
                self._sidecars_seen.clear()
            self._sidecars_seen[path] = (fingerprint, now)
            return settle <= 0 and st.st_size > 0
        return st.st_size > 0 and now - seen[1] >= settle

    def _convert_and_queue(
        self,
        path: Path,
        st: os.stat_result,
        staged: Path,
        sidecars: dict[Path, os.stat_result],
    ) -> bool:
        sidecar: Sidecar | None = None
        if sidecars:
            try:
                sidecar = read_sidecar(sorted(sidecars))
            except OSError as exc:
                event(
                    self.log,
                    logging.ERROR,
                    "cannot read sidecar now",
                    source=self.source,
                    error=str(exc),
                )
                return False
        named = read_filename_identity(self.pattern, path.name)
        binding = _with_name_problems(self.binder.bind(named.identity, sidecar), named)
        item = RawItem(
            path=path,
            source=self.source,
            size=st.st_size,
            mtime=st.st_mtime,
            binding=binding,
            name=self._name_in_folder(path),
        )
        try:
            obj = self.converter.convert(item, staged)
        except StorageNotReadyError as exc:
            return self._storage_failed(exc)
        except ConversionError as exc:
            # A converter that met a storage error reports it as unreadable input: it is not.
            not_ready = as_not_ready(exc, "converting a file")
            if not_ready is not None:
                return self._storage_failed(not_ready)
            return self._reject(path, exc.reason, sidecars)
        except (MemoryError, RecursionError) as exc:
            return self._reject(
                path,
                f"input too large or too deep to convert ({type(exc).__name__})",
                sidecars,
            )
        except OSError as exc:
            # Reading the drop folder or writing staging failed: not the file's fault. Keep it.
            not_ready = as_not_ready(exc, "converting a file")
            if not_ready is not None:
                return self._storage_failed(not_ready)
            event(self.log, logging.ERROR, "cannot convert now", source=self.source, error=str(exc))
            return False
        except Exception as exc:  # a converter bug must not kill the watcher or lose the file
            not_ready = as_not_ready(exc, "converting a file")
            if not_ready is not None:  # a library wrapped the storage's error: still not a bug
                return self._storage_failed(not_ready)
            self.log.exception("converter failed", extra={"source": self.source})
            return self._reject(path, f"internal conversion error ({type(exc).__name__})", sidecars)

        try:
            if _fingerprint(path.lstat()) != _fingerprint(st) or _changed(sidecars):
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

        origin = ObjectSource(
            channel=SourceChannel.FILE,
            source=self.source,
            sha256=obj.source_sha256,
            arrived_at=self.clock.now(),
            size=st.st_size,
            file_name=printable_name(item.file_name),
            identity_note=named.note,
            hint_patient_id=named.hint.patient_id,
            hint_accession_number=named.hint.accession_number,
        )
        try:
            result = self.spool.enqueue(obj, self.source, origin)
        except Exception as exc:
            not_ready = as_not_ready(exc, "queueing a file")
            if not_ready is not None:
                return self._storage_failed(not_ready)
            self.log.exception("enqueue failed; file kept", extra={"source": self.source})
            event(self.log, logging.ERROR, "enqueue failed", source=self.source, error=str(exc))
            return False

        if self._remove_source(path):
            self._settle_sidecars(sidecar, sidecars, obj, result)
        self.pause.taken()
        what = "already queued; source removed" if result.duplicate else "queued"
        record_queued(
            self.counts,
            self.log,
            what,
            obj,
            result,
            item.binding,
            source=self.source,
            size=st.st_size,
        )
        return True

    def _name_in_folder(self, path: Path) -> str:
        """The file's path inside the drop folder (its own name when outside ``root``)."""
        if self.root is not None:
            with contextlib.suppress(ValueError):
                return str(path.relative_to(self.root))
        return path.name

    def _reject(self, path: Path, reason: str, sidecars: dict[Path, os.stat_result]) -> bool:
        try:
            where = self.quarantine.put(path, self.source, reason)
        except Exception as exc:
            not_ready = as_not_ready(exc, "quarantining a file")
            if not_ready is not None:
                return self._storage_failed(not_ready)
            self.log.exception("quarantine failed; file kept", extra={"source": self.source})
            return False
        self.pause.taken()
        self.counts["quarantined"] += 1
        event(self.log, logging.WARNING, "quarantined", source=self.source, reason=reason)
        self.log.debug("quarantined as %s", where.name)
        for sidecar in sidecars:
            self._quarantine_sidecar(sidecar, f"{SIDECAR_OF_QUARANTINED}{where.name}")
        return True

    def _settle_sidecars(
        self,
        sidecar: Sidecar | None,
        sidecars: dict[Path, os.stat_result],
        obj: ConvertedObject,
        result: EnqueueResult,
    ) -> None:
        """After the object is queued and its file removed: a used sidecar goes too."""
        if sidecar is not None and sidecar.problem is not None:
            reason = (
                f"{MALFORMED_SIDECAR}{sidecar.problem}); its file was queued as object"
                f" {result.object_id}, {obj.sop_instance_uid}"
            )
            for path in sidecars:
                self._quarantine_sidecar(path, reason)
            return
        for path in sidecars:
            self._sidecars_seen.pop(path, None)
            self._remove_source(path)

    def _quarantine_sidecar(self, path: Path, reason: str) -> None:
        self._sidecars_seen.pop(path, None)
        try:
            self.quarantine.put(path, self.source, reason)
        except FileNotFoundError:
            pass
        except Exception:
            # It stays in the drop folder, where the watcher reports it as a stray sidecar.
            self.log.exception("cannot quarantine a sidecar", extra={"source": self.source})

    def _remove_source(self, path: Path) -> bool:
        """Remove a queued file (or its sidecar) durably; False when it is still there."""
        try:
            path.unlink()
            fsync_dir(path.parent)
        except FileNotFoundError:
            return True
        except OSError as exc:
            # Queued but not removed: a re-read is a duplicate, so nothing is sent twice.
            event(
                self.log,
                logging.ERROR,
                "cannot remove source after queueing",
                source=self.source,
                error=str(exc),
            )
            return False
        return True


def _with_name_problems(binding: Binding, named: FilenameIdentity) -> Binding:
    """A held binding's reason, with what was wrong in the file name's identity, if anything.

    The broken identity stays unusable (wrong patient is worse than held); the operator is
    told why it was refused instead of only that there is none.
    """
    if binding.held_reason is None or named.note is None:
        return binding
    return dataclasses.replace(binding, held_reason=f"{binding.held_reason}: {named.note}")


def _changed(sidecars: dict[Path, os.stat_result]) -> bool:
    """True when a sidecar changed (or went) since it was read."""
    for path, st in sidecars.items():
        try:
            if _fingerprint(path.lstat()) != _fingerprint(st):
                return True
        except FileNotFoundError:
            return True
    return False


def record_queued(
    counts: dict[str, int],
    log: logging.Logger,
    what: str,
    obj: ConvertedObject,
    result: EnqueueResult,
    binding: Binding,
    **fields: object,
) -> None:
    """Count an object the spool took (queued, duplicate, held) and log it with its binding."""
    counts["duplicate" if result.duplicate else "queued"] += 1
    if obj.held_reason is not None and not result.duplicate:
        counts["held"] += 1
    report_merged(log, result, **fields)
    event(
        log,
        logging.INFO,
        what,
        **fields,
        object_id=result.object_id,
        kind=obj.kind,
        sop_instance_uid=obj.sop_instance_uid,
        held=loggable_reason(obj.held_reason),  # the summary: the queue's reason may name IDs
        bound_to=binding.item.key if binding.item is not None else "",
        binding=binding.source,
    )


def report_merged(log: logging.Logger, result: EnqueueResult, **fields: object) -> None:
    """Warn when an arrival from another source became an object already queued.

    Same SOP Instance UID, same bytes, from another file, port or peer: one object, as the
    standard wants, but never a silent one; the spool has recorded the new source beside it.
    """
    if result.merged:
        event(
            log,
            logging.WARNING,
            "same object from another source; both sources recorded",
            **fields,
            object_id=result.object_id,
            sources=result.sources,
        )
