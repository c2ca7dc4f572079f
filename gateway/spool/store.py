"""The durable store-and-forward queue: payload files on flash, indexed in SQLite.

Layout under ``state_dir/spool/``: ``staging/`` (the converter writes here), ``objects/`` (one
payload file per queued object, named by a random id, never by a DICOM value) and
``queue.sqlite`` (WAL). Durability order on enqueue: payload fsync'd, renamed into objects/,
objects/ fsync'd, then the row committed with synchronous=FULL; only then may the caller remove
the source. Recovery at open() repairs whatever a kill or a power cut left half done.

One lane per destination: every object gets one delivery row per destination configured when it
is enqueued, and each lane claims only its own, so a down PACS never holds up another one.
A destination added to the config later gets the objects enqueued after it was added (and
objects stored while no destination was configured, at the next open). A destination removed
from the config keeps its deliveries in the index, unclaimed, and they keep their payloads until
the operator purges them (``purge(states=...)``) - unsent data is never dropped silently.

A fault of the state storage (full, read-only, failing: :mod:`gateway.storagefault`) never
stops delivery for good. The lane-side writes (claim, mark sent/retry/failed) that meet a full
disk give back the delivery reserve (:mod:`gateway.spool.reserve`) and are tried once more; a
mark that still cannot be written is kept in memory and written at the next write that works
(if the process ends first, recovery makes the delivery pending again and it is sent once
more, to the same SOP Instance UID). A claim that cannot be written is made in memory when the
queue can still be read (a read-only or failing card usually still reads: the connection was
opened before the fault): the next due pending delivery not already held in memory is returned
and remembered, so the backlog still reaches the PACS from a dying card. Its marks, when written
later, first do what the claim would have done (state 'sending', attempts + the claims made in
memory) in the same transaction. A retry kept in memory is claimed again in memory when due
(also that of a delivery in flight when the fault began); a sent or failed one is not. next_due
skips what memory holds, and a payload sent meanwhile is removed only when its mark is written
(as for any unrecorded mark). If the process ends first, recovery finds the delivery pending
and it is sent once more, to the same SOP Instance UID, which the PACS takes as the same
instance. Memory grows with the deliveries made during the fault (one small record each) and is
given back when the storage takes their marks. When the queue cannot be read either,
StorageNotReadyError is raised: the lane waits and tries again. While a fault is on, ingest is
refused (``room_for``), and every few seconds a probe write tells whether it has cleared. A
queue that cannot be opened for a storage fault (``open_when_ready``) is opened by the first use
after the storage is back; until then every use raises StorageNotReadyError (no claim is made
in memory then: nothing can be read).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import sqlite3
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple, TypeVar

from gateway.clock import Clock
from gateway.convert.result import ConvertedObject
from gateway.logsetup import event
from gateway.spool import durable, recovery, report, schema, space
from gateway.spool.entries import (
    DeliveryInfo,
    DeliveryState,
    DestinationStats,
    EnqueueResult,
    ObjectInfo,
    ObjectSource,
    SourceChannel,
    SpoolEntry,
)
from gateway.spool.reserve import DeliveryReserve
from gateway.spool.space import DiskSpace, Room, StorageStatus
from gateway.spool.wakeup import LaneWakeups
from gateway.sqltxn import transaction
from gateway.storagefault import StorageFault, StorageNotReadyError, classify, storage_errors

NO_DESTINATION = recovery.NO_DESTINATION
DEFAULT_RETENTION = 7 * 24 * 3600.0
_PRUNE_EVERY = 3600.0  # seconds (monotonic) between history prunes while running
_CHUNK = 500  # ids per IN (...) list, below SQLite's bound-parameter limit
_STORAGE_RETRY = 2.0  # seconds (monotonic) between probes of a faulted storage
FULL_CLEAR_MARGIN = 1024 * 1024  # bytes the disk must gain before ingest tries again
RESERVE_FILE = "reserve"
_T = TypeVar("_T")


class SpoolClosedError(RuntimeError):
    """The spool was used before open() or after close(): a lifecycle bug in the caller."""


class Spool:
    """The queue. Thread-safe: one SQLite connection behind a lock, short transactions."""

    def __init__(
        self,
        state_dir: Path,
        destinations: Sequence[str],
        max_bytes: int,
        clock: Clock,
        *,
        retention_seconds: float = DEFAULT_RETENTION,
        logger: logging.Logger | None = None,
        min_free_bytes: int | None = 0,
        reserve_bytes: int = 0,
    ) -> None:
        """``min_free_bytes``: the low-water mark of the state file system for ingest (None: the
        default rule of :func:`gateway.spool.space.low_water_mark`); ``reserve_bytes``: the
        delivery reserve (0: none)."""
        self.root = state_dir / "spool"
        self.staging_dir = self.root / "staging"
        self.objects_dir = self.root / "objects"
        self.db_path = self.root / "queue.sqlite"
        self.destinations = tuple(dict.fromkeys(destinations))
        self.max_bytes = max_bytes
        self.retention_seconds = retention_seconds
        self._clock = clock
        self._log = logger or logging.getLogger("gateway.spool")
        self._lock = threading.RLock()
        self._conn: sqlite3.Connection | None = None
        self._wakeups = LaneWakeups(self.destinations)
        self._last_prune = 0.0
        self.last_recovery: recovery.RecoveryReport | None = None
        self.min_free_bytes = min_free_bytes
        self.reserve = DeliveryReserve(self.root / RESERVE_FILE, reserve_bytes)
        self._fault: StorageNotReadyError | None = None
        self._fault_since = 0.0
        self._next_probe = 0.0
        self._open_deferred = False
        # Marks (sent, retry, failed) a faulted storage could not take, by delivery id.
        self._unrecorded: dict[int, Callable[[sqlite3.Connection], list[str]]] = {}
        # Deliveries claimed in memory (the claim could not be written), by delivery id, until
        # their mark is written; see the module docstring.
        self._in_memory: dict[int, _MemoryClaim] = {}
        self._memory_claims_noted = False
        self._ingest_hold: _IngestHold | None = None
        self._next_hold_probe = 0.0

    # -- lifecycle ---------------------------------------------------------------------------

    def open(self, *, recover: bool = True) -> None:
        """Create or open the queue; with ``recover`` (the daemon), repair it before serving.

        ``recover=False`` is for operator tools that run beside the daemon: no repair, since
        the daemon may be half-way through an enqueue or a send.
        """
        with self._lock:
            if self._conn is not None:
                return
            if not recover:
                self._open(recover=False)
                return
            try:
                self._open(recover=True)
            except (OSError, sqlite3.Error) as exc:
                if classify(exc) is not StorageFault.FULL or not self.reserve.release():
                    raise
                self._log_reserve_released("opening the queue")
                self._open(recover=True)
            self._open_deferred = False
            self._storage_ok()

    def open_when_ready(self) -> None:
        """open() for the daemon: a storage fault does not stop the start.

        The fault is reported (``storage_fault``) and the queue is opened by the first use
        after the storage is back (probed at most every few seconds); until then every use
        raises StorageNotReadyError. Anything else that stops open() is raised.
        """
        with self._lock:
            try:
                with storage_errors("opening the queue"):
                    self.open()
            except StorageNotReadyError as exc:
                self._open_deferred = True
                self._storage_failed(exc)
                self._next_probe = self._clock.monotonic() + _STORAGE_RETRY

    def _open(self, *, recover: bool) -> None:
        with self._lock:
            for folder in (self.root, self.staging_dir, self.objects_dir):
                folder.mkdir(parents=True, exist_ok=True)
            conn = schema.connect(self.db_path)
            try:
                schema.migrate(conn)
                if recover:
                    # The folders and the database file must survive a power cut too.
                    durable.fsync_dir(self.root)
                    durable.fsync_dir(self.root.parent)
                    # An operator's rebind creates files that no row names until it commits.
                    with durable.spool_lock(self.root):
                        self.last_recovery = recovery.recover(
                            conn,
                            objects_dir=self.objects_dir,
                            staging_dir=self.staging_dir,
                            destinations=self.destinations,
                            now=self._clock.now(),
                            retention=self.retention_seconds,
                            log=self._log,
                        )
            except BaseException:
                conn.close()
                raise
            self._conn = conn
            self._last_prune = self._clock.monotonic()
        if recover:
            self._maintain_reserve()

    def close(self) -> None:
        """Close the index (waiting lanes are woken); open() may be called again."""
        with self._lock:
            if self._conn is not None:
                if self._unrecorded:
                    try:
                        self._flush_unrecorded(self._conn)
                    except (OSError, sqlite3.Error) as exc:  # recovery resends them
                        event(
                            self._log,
                            logging.WARNING,
                            "delivery outcomes not recorded at close",
                            deliveries=len(self._unrecorded),
                            error=str(exc),
                        )
                self._unrecorded.clear()
                self._in_memory.clear()
                self._conn.close()
                self._conn = None
            self._open_deferred = False
        self._wakeups.notify_all()

    @contextlib.contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            if self._conn is None and self._open_deferred:
                self._open_if_ready()
            if self._conn is None:
                raise SpoolClosedError("spool is not open")
            yield self._conn

    def _open_if_ready(self) -> None:
        """A deferred open, tried at most every few seconds; raises the fault until it works."""
        fault = self._fault
        if self._clock.monotonic() < self._next_probe and fault is not None:
            # A fresh exception each time: re-raising one instance would grow its traceback.
            raise StorageNotReadyError(fault.fault, fault.what, fault.detail)
        self._next_probe = self._clock.monotonic() + _STORAGE_RETRY
        try:
            with storage_errors("opening the queue"):
                self.open()
        except StorageNotReadyError as exc:
            raise self._storage_failed(exc) from exc.__cause__

    # -- ingest side -------------------------------------------------------------------------

    def staging_path(self, suffix: str = ".dcm") -> Path:
        """A fresh unique path in staging/ (same filesystem as objects/, so enqueue renames)."""
        if "/" in suffix or "\\" in suffix:
            raise ValueError(f"bad suffix {suffix!r}")
        return self.staging_dir / f"{uuid.uuid4().hex}{suffix}"

    def used_bytes(self) -> int:
        """Bytes of payloads still on disk: queued, held or failed, not yet sent everywhere."""
        with self._db() as conn, storage_errors("reading the queue size"):
            return int(
                conn.execute(
                    "SELECT COALESCE(SUM(size), 0) FROM objects WHERE payload IS NOT NULL"
                ).fetchone()[0]
            )

    def has_room(self, incoming_bytes: int) -> bool:
        """Whether ``incoming_bytes`` more may be queued now (ingest pauses when not)."""
        return self.room_for(incoming_bytes).ok

    def room_for(self, incoming_bytes: int) -> Room:
        """May ingest queue ``incoming_bytes`` more now, and if not why (gateway.spool.space).

        Also where a faulted storage is probed and the delivery reserve made again.
        """
        try:
            used = self.used_bytes()
        except StorageNotReadyError as exc:  # the queue waits for the storage; already noted
            return Room(False, str(exc), disk=True)
        with self._lock:
            self._probe_storage()
            disk, fault = self._disk_space()
            self._check_ingest_hold(disk)
            if fault is None:
                self._maintain_reserve(disk)
                fault = None if self._ingest_hold is None else self._ingest_hold.fault
            return space.decide_room(
                incoming=incoming_bytes,
                used=used,
                max_bytes=self.max_bytes,
                space=disk,
                low_water=self.low_water(disk),
                reserve_missing=self.reserve.missing,
                fault=fault,
            )

    def low_water(self, disk: DiskSpace) -> int:
        """Free bytes ingest leaves on the state file system (gateway.spool.space)."""
        return space.low_water_mark(disk.total, self.min_free_bytes)

    def enqueue(
        self, obj: ConvertedObject, source: str, origin: ObjectSource | None = None
    ) -> EnqueueResult:
        """Make the staged object durable and queue one delivery per destination.

        When this returns, the object survives a power cut and the caller may remove the source.
        An object with the same (SOP Instance UID, source hash) already known - whatever its
        state, including sent and still within retention - is a duplicate: the staged file is
        deleted and the existing id returned. With no destination configured the object is
        stored with held_reason "no destination" and gets deliveries at the next open() that
        has destinations.

        ``origin`` is where the object came from (None: only ``source`` is known). It is
        recorded with the object, and with a duplicate too when that one came from elsewhere
        (another file, port or peer), in the same transaction as the rest: a source is never
        removed from a drop folder without the object naming it. ``sources`` of the result
        counts the object's distinct sources, and ``merged`` says this arrival was a new one:
        two arrivals became one object (same instance UID, same bytes), which the caller reports.
        """
        where = origin or ObjectSource(
            SourceChannel.UNRECORDED, source, obj.source_sha256, self._clock.now()
        )
        known = self._known(obj, where)
        if known is not None:
            obj.path.unlink(missing_ok=True)
            return known

        size = obj.path.stat().st_size
        name = f"{uuid.uuid4().hex}.dcm"
        target = self.objects_dir / name
        durable.fsync_file(obj.path)
        obj.path.rename(target)  # never replaces: the name is fresh
        try:
            durable.fsync_dir(self.objects_dir)
            object_id, states = self._insert(obj, source, name, size, where)
        except sqlite3.IntegrityError:
            # Another ingest thread queued the same object between our check and insert.
            target.unlink(missing_ok=True)
            known = self._known(obj, where)
            if known is None:
                raise
            return known
        except BaseException:
            target.unlink(missing_ok=True)  # not committed: the caller keeps the source
            raise
        self._wakeups.notify(d for d, s in states.items() if s == DeliveryState.PENDING)
        self._log.debug("enqueued object %d (%d bytes)", object_id, size)
        return EnqueueResult(object_id, duplicate=False)

    def _known(self, obj: ConvertedObject, origin: ObjectSource) -> EnqueueResult | None:
        """The duplicate result for an object already queued, its new source recorded."""
        with self._db() as conn, transaction(conn):
            object_id = self._find(conn, obj)
            if object_id is None:
                return None
            added = _record_source(conn, object_id, origin)
            count = int(
                conn.execute(
                    "SELECT COUNT(*) FROM object_sources WHERE object_id = ?", (object_id,)
                ).fetchone()[0]
            )
        return EnqueueResult(object_id, duplicate=True, sources=max(1, count), merged=added)

    @staticmethod
    def _find(conn: sqlite3.Connection, obj: ConvertedObject) -> int | None:
        row = conn.execute(
            "SELECT id FROM objects WHERE sop_instance_uid = ? AND source_sha256 = ?",
            (obj.sop_instance_uid, obj.source_sha256),
        ).fetchone()
        return None if row is None else int(row[0])

    def _insert(
        self, obj: ConvertedObject, source: str, name: str, size: int, origin: ObjectSource
    ) -> tuple[int, dict[str, DeliveryState]]:
        now = self._clock.now()
        held_reason = obj.held_reason
        if held_reason is None and not self.destinations:
            held_reason = NO_DESTINATION
        state = DeliveryState.HELD if obj.held_reason else DeliveryState.PENDING
        with self._db() as conn, transaction(conn):
            cur = conn.execute(
                """
                INSERT INTO objects (sop_instance_uid, sop_class_uid, transfer_syntax_uid,
                    study_instance_uid, source_sha256, source, kind, size, payload, held_reason,
                    enqueued_at)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                """,
                (
                    obj.sop_instance_uid,
                    obj.sop_class_uid,
                    obj.transfer_syntax_uid,
                    obj.study_instance_uid,
                    obj.source_sha256,
                    source,
                    obj.kind,
                    size,
                    name,
                    held_reason,
                    now,
                ),
            )
            object_id = int(cur.lastrowid or 0)
            _record_source(conn, object_id, origin)
            conn.executemany(
                "INSERT INTO deliveries (object_id, destination, state, next_attempt_at)"
                " VALUES (?, ?, ?, ?)",
                [(object_id, dest, str(state), now) for dest in self.destinations],
            )
        return object_id, dict.fromkeys(self.destinations, state)

    # -- lane side ---------------------------------------------------------------------------

    def claim_next(self, destination: str) -> SpoolEntry | None:
        """The delivery of ``destination`` that has been due longest, now marked 'sending'.

        Due means 'pending' with next_attempt_at <= now; ties go in queue order. Deliveries
        waiting for a retry or failed for good never hold up the ones behind them. When the
        storage cannot take the claim but the queue can be read, the claim is made in memory
        (module docstring); when it cannot be read either, StorageNotReadyError is raised.
        """
        self._wakeups.looking(destination)
        now = self._clock.now()
        try:
            return self._write(
                "claiming a delivery", lambda conn: self._claim(conn, destination, now)
            )
        except StorageNotReadyError as exc:
            return self._claim_in_memory(destination, now, exc)

    def _claim(self, conn: sqlite3.Connection, destination: str, now: float) -> SpoolEntry | None:
        while True:
            row = self._next_pending(conn, destination, now)
            if row is None:
                return None
            delivery_id, object_id, payload = row.delivery_id, row.object_id, row.payload
            if payload is None:  # broken invariant; fail it loudly rather than loop on it
                event(
                    self._log,
                    logging.ERROR,
                    "payload missing at claim",
                    object_id=object_id,
                    delivery_id=delivery_id,
                )
                self._set_failed(
                    conn,
                    delivery_id,
                    "unreadable",
                    recovery.PAYLOAD_MISSING,
                    None,
                    ("pending",),
                )
                continue
            # Losing this commit to a power cut only loses 'sending' and one attempt count,
            # which recovery resets anyway: spare the flash the sync.
            with transaction(conn, synced=False):
                claimed = conn.execute(
                    "UPDATE deliveries SET state = 'sending', attempts = attempts + 1"
                    " WHERE id = ? AND state = 'pending'",
                    (delivery_id,),
                ).rowcount
            if claimed:  # else an operator tool changed it between our read and write
                return self._entry(row)

    def _next_pending(
        self, conn: sqlite3.Connection, destination: str, now: float, *, sendable: bool = False
    ) -> _Row | None:
        """The row of the destination's pending delivery due longest that memory does not hold
        (``sendable``: with a payload; a missing one is failed once the storage is back)."""
        cursor = conn.execute(
            f"""
            {_ROW_SELECT}
            WHERE d.destination = ? AND d.state = 'pending' AND d.next_attempt_at <= ?
              {"AND o.payload IS NOT NULL" if sendable else ""}
            ORDER BY d.next_attempt_at, d.id LIMIT ?
            """,
            # Memory holds at most len(_in_memory) of these rows: one more is always enough,
            # and the limit lets SQLite keep only the top rows instead of sorting every due one.
            (destination, now, len(self._in_memory) + 1),
        )
        try:
            for row in cursor:  # memory holds only what the current fault delivered
                if row[0] not in self._in_memory:
                    return _Row(*row)
            return None
        finally:
            cursor.close()

    def _entry(self, row: _Row) -> SpoolEntry:
        return SpoolEntry(
            delivery_id=row.delivery_id,
            object_id=row.object_id,
            destination=row.destination,
            path=self.objects_dir / str(row.payload),
            sop_class_uid=row.sop_class_uid,
            sop_instance_uid=row.sop_instance_uid,
            transfer_syntax_uid=row.transfer_syntax_uid,
            size=row.size,
            attempts=row.attempts,
        )

    def _claim_in_memory(
        self, destination: str, now: float, fault: StorageNotReadyError
    ) -> SpoolEntry | None:
        """The claim the storage could not take, made in memory; raises ``fault`` when the
        queue cannot be read either. A retry held in memory competes by its due time."""
        with self._db() as conn:
            try:
                with storage_errors("reading the queue"):
                    row = self._next_pending(conn, destination, now, sendable=True)
            except StorageNotReadyError:
                raise fault from fault.__cause__
            again = min(
                (
                    held
                    for held in self._in_memory.values()
                    if held.entry.destination == destination
                    and held.retry_at is not None
                    and held.retry_at <= now
                ),
                key=lambda held: (held.retry_at, held.entry.delivery_id),
                default=None,
            )
            if again is not None and (row is None or (again.retry_at or 0.0) <= row.due):
                # Its retry mark is superseded by this attempt's outcome.
                self._unrecorded.pop(again.entry.delivery_id, None)
                again.retry_at = None
                again.claims += 1
                attempts = again.entry.attempts + again.claims - 1
                self._note_memory_claims(fault, destination)
                return dataclasses.replace(again.entry, attempts=attempts)
            if row is None:
                return None
            entry = self._entry(row)
            self._in_memory[entry.delivery_id] = _MemoryClaim(entry, claims=1)
            self._note_memory_claims(fault, destination)
            return entry

    def _note_memory_claims(self, fault: StorageNotReadyError, destination: str) -> None:
        """Logged at the first claim in memory of a fault, not at each."""
        if self._memory_claims_noted:
            return
        self._memory_claims_noted = True
        event(
            self._log,
            logging.WARNING,
            "state storage failed: delivering with claims kept in memory",
            fault=str(fault.fault),
            destination=destination,
        )

    def next_due(self, destination: str) -> float | None:
        """The earliest next_attempt_at among the destination's pending deliveries, or None.

        Deliveries held in memory count by their retry kept in memory, if any, not by their
        row (the lane could not claim the row, and would spin on it).
        """
        with self._db() as conn, storage_errors("reading the queue"):
            if not self._in_memory:
                value = conn.execute(
                    "SELECT MIN(next_attempt_at) FROM deliveries"
                    " WHERE destination = ? AND state = 'pending'",
                    (destination,),
                ).fetchone()[0]
                return None if value is None else float(value)
            row = self._next_pending(conn, destination, float("inf"))
        due = [
            held.retry_at
            for held in self._in_memory.values()
            if held.entry.destination == destination and held.retry_at is not None
        ]
        return min([*due, *([] if row is None else [float(row.due)])], default=None)

    def wait_for_work(self, destination: str, timeout: float) -> None:
        """Sleep up to ``timeout`` s; returns early when work is added for ``destination``."""
        self._wakeups.wait(destination, timeout)

    def wake_all(self) -> None:
        """Wake every waiting lane (shutdown)."""
        self._wakeups.notify_all()

    def mark_sent(self, delivery_id: int) -> None:
        """Record a confirmed delivery; the payload goes once every destination has it.

        The payload's removal is not fsync'd: if a power cut brings the file back, recovery
        removes it (its row no longer names it), and one sync per sent object is spared.
        A faulted storage keeps the mark in memory (see the module docstring).
        """
        now = self._clock.now()

        def record(conn: sqlite3.Connection) -> list[str]:
            row = conn.execute(
                "SELECT object_id, state FROM deliveries WHERE id = ?", (delivery_id,)
            ).fetchone()
            if row is None:
                event(
                    self._log,
                    logging.WARNING,
                    "sent delivery no longer queued",
                    delivery_id=delivery_id,
                )
                return []
            object_id, state = row
            if state == DeliveryState.SENT:
                return []
            conn.execute(
                "UPDATE deliveries SET state = 'sent', sent_at = ? WHERE id = ?",
                (now, delivery_id),
            )
            return self._release_if_done(conn, object_id)

        if not self._record_mark(delivery_id, "recording a delivery", record):
            return
        with (
            contextlib.suppress(StorageNotReadyError),
            self._db() as conn,
            storage_errors("pruning the history"),
        ):
            self._maybe_prune(conn)
        self._maintain_reserve()

    def mark_retry(
        self,
        delivery_id: int,
        failure_class: str,
        reason: str,
        next_attempt_at: float,
        status: int | None = None,
    ) -> None:
        """A transient failure: back to pending, due again at ``next_attempt_at``."""
        now = self._clock.now()

        def record(conn: sqlite3.Connection) -> list[str]:
            changed = conn.execute(
                """
                UPDATE deliveries SET state = 'pending', next_attempt_at = ?,
                    failure_class = ?, last_error = ?, last_error_at = ?, status = ?
                WHERE id = ? AND state = 'sending'
                """,
                (next_attempt_at, str(failure_class), reason, now, status, delivery_id),
            ).rowcount
            if not changed:
                event(
                    self._log,
                    logging.WARNING,
                    "retry of a delivery not in flight ignored",
                    delivery_id=delivery_id,
                )
            return []

        self._record_mark(delivery_id, "recording a retry", record, retry_at=next_attempt_at)

    def mark_failed(
        self, delivery_id: int, failure_class: str, reason: str, status: int | None = None
    ) -> None:
        """A permanent refusal: 'failed' with its reason, class and DICOM status; payload kept."""

        def record(conn: sqlite3.Connection) -> list[str]:
            changed = self._set_failed(
                conn, delivery_id, str(failure_class), reason, status, ("sending",)
            )
            if not changed:
                event(
                    self._log,
                    logging.WARNING,
                    "failure of a delivery not in flight ignored",
                    delivery_id=delivery_id,
                )
            return []

        self._record_mark(delivery_id, "recording a failed delivery", record)

    def _set_failed(
        self,
        conn: sqlite3.Connection,
        delivery_id: int,
        failure_class: str,
        reason: str,
        status: int | None,
        from_states: tuple[str, ...],
    ) -> int:
        marks = ", ".join("?" * len(from_states))
        return conn.execute(
            f"""
            UPDATE deliveries SET state = 'failed', failure_class = ?, last_error = ?,
                last_error_at = ?, status = ?
            WHERE id = ? AND state IN ({marks})
            """,  # noqa: S608 - only placeholders are interpolated
            (failure_class, reason, self._clock.now(), status, delivery_id, *from_states),
        ).rowcount

    # -- operator side -----------------------------------------------------------------------

    def stats(self) -> dict[str, DestinationStats]:
        """Per destination: counts per state, oldest pending, bytes pending, last success/error."""
        with self._db() as conn:
            return report.stats(conn, self.destinations)

    def list_deliveries(
        self,
        state: DeliveryState | None = None,
        destination: str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[DeliveryInfo]:
        """Deliveries in queue order, filtered by state and/or destination; ``limit`` from
        ``offset`` (count_deliveries says how many there are in all)."""
        with self._db() as conn:
            return report.list_deliveries(conn, state, destination, limit, offset)

    def count_deliveries(
        self, state: DeliveryState | None = None, destination: str | None = None
    ) -> int:
        """How many deliveries list_deliveries has with these filters, without a limit."""
        with self._db() as conn:
            return report.count_deliveries(conn, state, destination)

    def show(self, object_id: int) -> ObjectInfo | None:
        """One object with all its deliveries (attempts, last error, class, status), or None."""
        with self._db() as conn:
            return report.show(conn, object_id, self.objects_dir)

    def retry(self, object_ids: Sequence[int] | None = None, destination: str | None = None) -> int:
        """Send again now: failed deliveries go back to pending, pending ones wait no longer.

        ``object_ids=None`` retries every failed delivery (of ``destination`` if given); with
        ids, their failed and pending deliveries are made due now. Deliveries whose payload is
        gone cannot be sent and are left failed. Returns how many deliveries changed.
        """
        states = "('failed')" if object_ids is None else "('failed', 'pending')"
        # Deliveries whose payload is gone cannot be sent: they stay failed.
        return self._make_due(
            states,
            object_ids,
            destination,
            "AND (SELECT payload FROM objects o WHERE o.id = deliveries.object_id) IS NOT NULL",
        )

    def release(self, object_ids: Sequence[int], destination: str | None = None) -> int:
        """Held deliveries of these objects become pending (their hold was resolved)."""
        return self._make_due("('held')", object_ids, destination, "")

    def _make_due(
        self,
        states: str,
        object_ids: Sequence[int] | None,
        destination: str | None,
        condition: str,
    ) -> int:
        """Deliveries in ``states`` (a fixed SQL list) become pending and due now; wakes lanes."""
        now = self._clock.now()
        sql = f"""
            UPDATE deliveries SET state = 'pending', next_attempt_at = ?
            WHERE state IN {states} {condition}
        """  # noqa: S608 - fixed fragments only
        touched: set[str] = set()
        count = 0
        with self._db() as conn, transaction(conn):
            for ids in _chunks(object_ids):
                where, args = _filters(ids, destination)
                dests = conn.execute(
                    f"SELECT DISTINCT destination FROM deliveries WHERE state IN {states}{where}",  # noqa: S608
                    args,
                ).fetchall()
                touched.update(d[0] for d in dests)
                count += conn.execute(sql + where, (now, *args)).rowcount
        self._wakeups.notify(touched)
        return count

    def purge(
        self,
        object_ids: Sequence[int] | None = None,
        *,
        states: Sequence[DeliveryState] = (DeliveryState.FAILED,),
    ) -> int:
        """Remove deliveries in ``states`` (of these objects, or all), and what is left unneeded.

        Pending, sending and held deliveries go only when their state is listed explicitly.
        An object left with no delivery is removed with its payload; one whose remaining
        deliveries are all sent loses its payload but keeps its row. Returns deliveries removed.
        """
        wanted = [str(DeliveryState(s)) for s in states]
        if not wanted:
            return 0
        marks = ", ".join("?" * len(wanted))
        released: list[str] = []
        count = 0
        with self._db() as conn, transaction(conn):
            touched: set[int] = set()
            for ids in _chunks(object_ids):
                where, args = _filters(ids, None)
                touched.update(
                    r[0]
                    for r in conn.execute(
                        "SELECT DISTINCT object_id FROM deliveries"  # noqa: S608
                        f" WHERE state IN ({marks}){where}",
                        (*wanted, *args),
                    )
                )
                count += conn.execute(
                    f"DELETE FROM deliveries WHERE state IN ({marks}){where}",  # noqa: S608
                    (*wanted, *args),
                ).rowcount
                if ids is not None and str(DeliveryState.HELD) in wanted:
                    touched.update(ids)  # objects held for want of a destination have none
            for object_id in sorted(touched):
                released += self._release_if_done(conn, object_id)
                row = conn.execute(
                    "SELECT payload FROM objects o WHERE id = ?"
                    " AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.object_id = o.id)",
                    (object_id,),
                ).fetchone()
                if row is not None:
                    conn.execute("DELETE FROM objects WHERE id = ?", (object_id,))
                    if row[0] is not None:
                        released.append(row[0])
        self._unlink_payloads(released)
        return count

    def prune(self) -> int:
        """Forget objects sent everywhere longer ago than the retention; returns how many."""
        with self._db() as conn, transaction(conn):
            return recovery.prune(conn, self._clock.now() - self.retention_seconds)

    # -- helpers -----------------------------------------------------------------------------

    def _release_if_done(self, conn: sqlite3.Connection, object_id: int) -> list[str]:
        row = conn.execute(
            """
            SELECT payload FROM objects o WHERE id = ? AND payload IS NOT NULL
              AND EXISTS (SELECT 1 FROM deliveries d WHERE d.object_id = o.id)
              AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.object_id = o.id
                              AND d.state != 'sent')
            """,
            (object_id,),
        ).fetchone()
        if row is None:
            return []
        conn.execute("UPDATE objects SET payload = NULL WHERE id = ?", (object_id,))
        return [str(row[0])]

    def _unlink_payloads(self, names: Iterable[str]) -> None:
        for name in names:
            try:
                (self.objects_dir / name).unlink(missing_ok=True)
            except OSError as exc:  # recovery removes it at the next open
                event(self._log, logging.WARNING, "cannot remove sent payload", error=str(exc))

    def _maybe_prune(self, conn: sqlite3.Connection) -> None:
        if self._clock.monotonic() - self._last_prune < _PRUNE_EVERY:
            return
        self._last_prune = self._clock.monotonic()
        with transaction(conn):
            recovery.prune(conn, self._clock.now() - self.retention_seconds)

    # -- the state storage -------------------------------------------------------------------

    @property
    def storage_fault(self) -> StorageNotReadyError | None:
        """The storage fault met by the last write of the queue, until one works again."""
        return self._fault

    @property
    def unrecorded_marks(self) -> int:
        """Delivery outcomes waiting in memory for the storage to take them."""
        return len(self._unrecorded)

    def report_storage_fault(self, exc: StorageNotReadyError) -> None:
        """An ingest path met a fault of the state storage: ingest is refused until it clears.

        Read-only or I/O error: until a probe write works, tried at the next room_for (a
        one-off error costs one refusal) and then every few seconds. Full: until the disk has
        gained FULL_CLEAR_MARGIN bytes since (a probe write would pass on the few bytes that
        the failed write could not use, and ingest would fail again at once). Logged by the
        intake that met it, so not here: the queue itself may still work.
        """
        with self._lock:
            disk, _ = self._disk_space()
            self._ingest_hold = _IngestHold(self._as_seen_on_disk(exc), disk.free)
            self._next_hold_probe = self._clock.monotonic()

    def storage_status(self) -> StorageStatus:
        """The state file system as the spool sees it now (status line, panel, metrics)."""
        room = self.room_for(0)
        with self._lock:
            disk, _ = self._disk_space()
            fault = self._fault or (None if self._ingest_hold is None else self._ingest_hold.error)
            return StorageStatus(
                fault=None if fault is None else fault.fault,
                problem="" if fault is None else str(fault),
                since=self._fault_since if fault is not None else None,
                ingest=room,
                space=disk,
                low_water=self.low_water(disk),
                reserve_bytes=self.reserve.size,
                reserve_in_place=self.reserve.in_place,
                unrecorded=len(self._unrecorded),
            )

    def _write(self, what: str, body: Callable[[sqlite3.Connection], _T]) -> _T:
        """A lane-side write; on a full disk the reserve is given back and it is tried again."""
        with self._db() as conn:
            changes_before = conn.total_changes
            try:
                result = self._attempt(what, conn, body)
            except StorageNotReadyError as exc:
                if exc.fault is not StorageFault.FULL or not self._make_room(conn, what):
                    raise self._storage_failed(exc) from exc.__cause__
                try:
                    result = self._attempt(what, conn, body)
                except StorageNotReadyError as again:
                    raise self._storage_failed(again) from again.__cause__
            if not self.reserve.in_place:
                _checkpoint(conn)  # on a full disk the WAL must wrap, not grow (see _make_room)
            if conn.total_changes != changes_before:  # a read alone proves nothing
                self._storage_ok()
            return result

    def _make_room(self, conn: sqlite3.Connection, what: str) -> bool:
        """On a full disk: let the WAL start over and give back the reserve; True if either did.

        A WAL whose frames are all checkpointed is written again from its start, so commits
        need no new space; a checkpoint that must grow the database file needs the reserve.
        """
        wrapped = _checkpoint(conn)
        released = self.reserve.release()
        if released:
            self._log_reserve_released(what)
        return wrapped or released

    def _attempt(
        self, what: str, conn: sqlite3.Connection, body: Callable[[sqlite3.Connection], _T]
    ) -> _T:
        with storage_errors(what):
            self._flush_unrecorded(conn)
            return body(conn)

    def _record_mark(
        self,
        delivery_id: int,
        what: str,
        body: Callable[[sqlite3.Connection], list[str]],
        *,
        retry_at: float | None = None,
    ) -> bool:
        """Write a delivery's outcome (``body``, in a transaction; returns the payloads it
        released), or keep it for later; True when it was written. ``retry_at``: the outcome
        is a retry due then, which a delivery claimed in memory may be claimed again for."""
        record = self._as_claimed(delivery_id, body)
        try:
            released = self._write(what, record)
        except StorageNotReadyError:
            with self._lock:
                self._unrecorded[delivery_id] = record
                self._hold_retry(delivery_id, retry_at)
            return False
        self._unlink_payloads(released)
        return True

    def _hold_retry(self, delivery_id: int, retry_at: float | None) -> None:
        """A mark kept in memory: a retry makes the delivery claimable in memory when due,
        whether it was claimed in memory or (in flight when the fault began) in the queue."""
        held = self._in_memory.get(delivery_id)
        if held is not None:
            held.retry_at = retry_at
            return
        if retry_at is None or self._conn is None:
            return
        try:
            with storage_errors("reading the queue"):
                row = self._conn.execute(
                    f"{_ROW_SELECT} WHERE d.id = ? AND o.payload IS NOT NULL",
                    (delivery_id,),
                ).fetchone()
        except StorageNotReadyError:
            return  # kept for the storage's return only, as before claims in memory
        if row is not None:
            # The queue has counted its attempt already ('sending'): no claim in memory yet.
            entry = self._entry(_Row(*row))
            self._in_memory[delivery_id] = _MemoryClaim(entry, claims=0, retry_at=retry_at)

    def _as_claimed(
        self, delivery_id: int, body: Callable[[sqlite3.Connection], list[str]]
    ) -> Callable[[sqlite3.Connection], list[str]]:
        """``body`` in one transaction, after the claims made in memory for the delivery (if
        any, when it runs): the marks that require 'sending' then find it."""

        def record(conn: sqlite3.Connection) -> list[str]:
            held = self._in_memory.get(delivery_id)
            with transaction(conn):
                if held is not None:  # 'sending' already when claimed before the fault
                    conn.execute(
                        "UPDATE deliveries SET state = 'sending', attempts = attempts + ?"
                        " WHERE id = ? AND state IN ('pending', 'sending')",
                        (held.claims, delivery_id),
                    )
                released = body(conn)
            self._in_memory.pop(delivery_id, None)
            return released

        return record

    def _flush_unrecorded(self, conn: sqlite3.Connection) -> None:
        """Write the outcomes kept in memory, oldest first; raises at the first that fails."""
        while self._unrecorded:
            delivery_id, record = next(iter(self._unrecorded.items()))
            released = record(conn)
            del self._unrecorded[delivery_id]
            self._unlink_payloads(released)

    def _disk_space(self) -> tuple[DiskSpace, StorageFault | None]:
        """statvfs of the state file system, and the fault to report (ours or statvfs's)."""
        fault = None if self._fault is None else self._fault.fault
        try:
            disk = space.probe(self.root if self.root.exists() else self.root.parent)
        except OSError as exc:
            return DiskSpace(0, 0, read_only=False), classify(exc) or StorageFault.IO_ERROR
        return disk, fault

    def _probe_storage(self) -> None:
        """While a fault is on, every few seconds: does a small synced write work again?"""
        if self._fault is None or self._conn is None:
            return
        now = self._clock.monotonic()
        if now < self._next_probe:
            return
        self._next_probe = now + _STORAGE_RETRY
        try:
            disk = space.probe(self.root)
            if disk.read_only:
                return
            if self._fault.fault is StorageFault.FULL and (
                disk.free < self.low_water(disk) + self.reserve.missing
            ):
                return  # the lane's writes (which may use the reserve) tell sooner
            if not _probe_write(self.root):
                return
            self._flush_unrecorded(self._conn)
        except (OSError, sqlite3.Error):
            return
        self._storage_ok()

    def _check_ingest_hold(self, disk: DiskSpace) -> None:
        """Clear the hold an ingest fault put on ingest, by the rules of report_storage_fault."""
        hold = self._ingest_hold
        if hold is None:
            return
        if hold.fault is StorageFault.FULL:
            if disk.free >= hold.free_at + FULL_CLEAR_MARGIN:
                self._ingest_hold = None
            return
        now = self._clock.monotonic()
        if now < self._next_hold_probe:
            return
        self._next_hold_probe = now + _STORAGE_RETRY
        if not disk.read_only and _probe_write(self.root):
            self._ingest_hold = None

    def _storage_failed(self, exc: StorageNotReadyError) -> StorageNotReadyError:
        """Note a fault (and return it as noted); logged when it starts or changes kind, not at
        each attempt."""
        exc = self._as_seen_on_disk(exc)
        with self._lock:
            if self._fault is None or self._fault.fault is not exc.fault:
                event(
                    self._log,
                    logging.ERROR,
                    "state storage failed",
                    fault=str(exc.fault),
                    operation=exc.what,
                    error=exc.detail,
                )
                if self._fault is None:
                    self._fault_since = self._clock.now()
            self._fault = exc
        return exc

    def _as_seen_on_disk(self, exc: StorageNotReadyError) -> StorageNotReadyError:
        """SQLite says "unable to open database file" (I/O error) on a read-only mount: the
        mount says what it is."""
        if exc.fault is StorageFault.READ_ONLY:
            return exc
        disk, _ = self._disk_space()
        if not disk.read_only:
            return exc
        return StorageNotReadyError(StorageFault.READ_ONLY, exc.what, exc.detail)

    def _storage_ok(self) -> None:
        with self._lock:
            if self._fault is None:
                return
            event(
                self._log,
                logging.INFO,
                "state storage recovered",
                fault=str(self._fault.fault),
                outage_seconds=round(self._clock.now() - self._fault_since, 1),
            )
            self._fault = None
            self._memory_claims_noted = False

    def _log_reserve_released(self, what: str) -> None:
        event(
            self._log,
            logging.WARNING,
            "state disk full: delivery reserve released",
            operation=what,
            reserve_bytes=self.reserve.size,
        )

    def _maintain_reserve(self, disk: DiskSpace | None = None) -> None:
        """Make the reserve again once the disk has room for it above the low-water mark."""
        with self._lock:
            if self._fault is not None or self.reserve.in_place:
                return
            try:
                disk = disk or space.probe(self.root)
                if disk.read_only or disk.free - self.reserve.size < self.low_water(disk):
                    return
                self.reserve.make()
            except OSError as exc:
                self._log.debug("delivery reserve not made: %s", exc)
                return
            event(self._log, logging.INFO, "delivery reserve in place", bytes=self.reserve.size)


class _Row(NamedTuple):
    """A pending delivery as the claim reads it."""

    delivery_id: int
    object_id: int
    attempts: int
    payload: str | None
    sop_class_uid: str
    sop_instance_uid: str
    transfer_syntax_uid: str
    size: int
    due: float
    destination: str


_ROW_SELECT = """
    SELECT d.id, d.object_id, d.attempts, o.payload, o.sop_class_uid, o.sop_instance_uid,
           o.transfer_syntax_uid, o.size, d.next_attempt_at, d.destination
    FROM deliveries d JOIN objects o ON o.id = d.object_id
"""


@dataclass
class _MemoryClaim:
    """A delivery claimed in memory while the storage could not take the claim."""

    entry: SpoolEntry  # as first claimed (attempts: as the row said then)
    claims: int  # claims made in memory, not yet written
    retry_at: float | None = None  # due again (a retry kept in memory); None: in flight or done


@dataclass(frozen=True)
class _IngestHold:
    """A storage fault an ingest path met, and the free space when it did."""

    error: StorageNotReadyError
    free_at: int

    @property
    def fault(self) -> StorageFault:
        return self.error.fault


def _probe_write(folder: Path) -> bool:
    """Whether a small synced write (and its removal) works in ``folder`` now."""
    probe = folder / ".storage-probe"
    try:
        durable.write_bytes_durably(probe, b"\0" * 4096)
        probe.unlink()
    except OSError:
        return False
    return True


def _checkpoint(conn: sqlite3.Connection) -> bool:
    """Copy the WAL into the database, so that the next commit writes the WAL from its start
    (SQLite restarts a fully checkpointed WAL when no reader uses it); True when every frame
    was copied. PASSIVE: it never waits for readers. Never raises: on a full disk it may fail
    (the database file must grow), harmlessly."""
    try:
        busy, frames, copied = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
    except sqlite3.Error:
        return False
    return bool(busy == 0 and frames == copied)


_SOURCE_KEY = (
    "channel",
    "source",
    "sha256",
    "file_name",
    "port",
    "calling_ae",
    "peer_address",
)


def _record_source(conn: sqlite3.Connection, object_id: int, origin: ObjectSource) -> bool:
    """Add ``origin`` to the object's sources unless that very source is there; True if added.

    The same source is the same channel, source name, file name, port, calling AE, peer and
    bytes: a file re-read after a crash, or a resend, is not another source.
    """
    key = (
        str(origin.channel),
        origin.source,
        origin.sha256,
        origin.file_name,
        origin.port,
        origin.calling_ae,
        origin.peer_address,
    )
    match = " AND ".join(f"{column} IS ?" for column in _SOURCE_KEY)
    seen = conn.execute(
        f"SELECT 1 FROM object_sources WHERE object_id = ? AND {match}",  # noqa: S608 - fixed
        (object_id, *key),
    ).fetchone()
    if seen is not None:
        return False
    conn.execute(
        """
        INSERT INTO object_sources (object_id, channel, source, sha256, file_name, port,
            calling_ae, peer_address, arrived_at, size, identity_note, hint_patient_id,
            hint_accession)
        VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
        """,
        (
            object_id,
            *key,
            origin.arrived_at,
            origin.size,
            origin.identity_note,
            origin.hint_patient_id,
            origin.hint_accession_number,
        ),
    )
    return True


def _chunks(ids: Sequence[int] | None) -> Iterator[list[int] | None]:
    if ids is None:
        yield None
        return
    unique = sorted(set(ids))
    for start in range(0, len(unique), _CHUNK):
        yield unique[start : start + _CHUNK]


def _filters(ids: list[int] | None, destination: str | None) -> tuple[str, list[object]]:
    where = ""
    args: list[object] = []
    if ids is not None:
        where += f" AND object_id IN ({', '.join('?' * len(ids))})"
        args += ids
    if destination is not None:
        where += " AND destination = ?"
        args.append(destination)
    return where, args
