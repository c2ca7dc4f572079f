"""Recover before serving: bring the index and the payload folder back into agreement.

After a kill or a power cut at any instant, the possible leftovers are: deliveries still marked
'sending'; files in staging/ (converted but never enqueued); payload files with no live row
(renamed into objects/ but the row never committed, or the row released but the file not yet
removed). A live row without its file must not happen (the file is durable before the row
commits); if it does, the deliveries fail loudly with "payload missing" instead of vanishing.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from gateway.logsetup import event
from gateway.spool import durable
from gateway.sqltxn import transaction

PAYLOAD_MISSING = "payload missing"
NO_DESTINATION = "no destination"


@dataclass(frozen=True)
class RecoveryReport:
    """What open() found and repaired."""

    requeued: int  # deliveries found 'sending', back to pending
    staging_removed: int
    orphans_removed: int
    payloads_missing: int
    attached: int  # deliveries created for objects stored while no destination was configured
    pruned: int


def recover(
    conn: sqlite3.Connection,
    *,
    objects_dir: Path,
    staging_dir: Path,
    destinations: Sequence[str],
    now: float,
    retention: float,
    log: logging.Logger,
) -> RecoveryReport:
    """Repair after an unclean stop; run with no other user of the queue, before serving."""
    staging_removed = _empty_folder(staging_dir)
    on_disk = {p.name for p in objects_dir.iterdir() if p.is_file()}
    with transaction(conn):
        requeued = conn.execute(
            "UPDATE deliveries SET state = 'pending', next_attempt_at = ? WHERE state = 'sending'",
            (now,),
        ).rowcount
        # A wall clock that stepped back at boot (no RTC on the Pi) must not strand deliveries
        # whose next attempt was set by the later time; a restart makes everything due now.
        conn.execute(
            "UPDATE deliveries SET next_attempt_at = ?"
            " WHERE state = 'pending' AND next_attempt_at > ?",
            (now, now),
        )
        missing = _fail_missing_payloads(conn, on_disk, now, log)
        attached = _attach_destinations(conn, destinations, now)
        release_finished_payloads(conn)
        pruned = prune(conn, now - retention)
        live_rows = {
            r[0] for r in conn.execute("SELECT payload FROM objects WHERE payload IS NOT NULL")
        }
    orphans = 0
    for entry in objects_dir.iterdir():
        if entry.name in live_rows and entry.is_file():
            continue
        _remove(entry)  # never committed, or released before a crash: nobody will send it
        orphans += 1
    if orphans or staging_removed:
        durable.fsync_dir(objects_dir)
        durable.fsync_dir(staging_dir)
    report = RecoveryReport(requeued, staging_removed, orphans, missing, attached, pruned)
    if requeued or staging_removed or orphans or missing or attached:
        event(
            log,
            logging.WARNING if missing == 0 else logging.ERROR,
            "queue recovered",
            requeued=requeued,
            staging_removed=staging_removed,
            orphans_removed=orphans,
            payloads_missing=missing,
            attached=attached,
            pruned=pruned,
        )
    return report


def release_finished_payloads(conn: sqlite3.Connection) -> list[str]:
    """Drop the payload of objects every destination has (no delivery left unsent); return names.

    Objects with no delivery at all (stored while no destination was configured) keep theirs.
    """
    rows = conn.execute(
        """
        SELECT o.id, o.payload FROM objects o
        WHERE o.payload IS NOT NULL
          AND EXISTS (SELECT 1 FROM deliveries d WHERE d.object_id = o.id)
          AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.object_id = o.id AND d.state != 'sent')
        """
    ).fetchall()
    conn.executemany("UPDATE objects SET payload = NULL WHERE id = ?", [(r[0],) for r in rows])
    return [str(r[1]) for r in rows]


def prune(conn: sqlite3.Connection, cutoff: float) -> int:
    """Forget objects sent everywhere before ``cutoff`` (their payloads are already gone)."""
    return conn.execute(
        """
        DELETE FROM objects WHERE payload IS NULL
          AND EXISTS (SELECT 1 FROM deliveries d WHERE d.object_id = objects.id)
          AND NOT EXISTS (
              SELECT 1 FROM deliveries d
              WHERE d.object_id = objects.id AND (d.state != 'sent' OR d.sent_at >= ?)
          )
        """,
        (cutoff,),
    ).rowcount


def _fail_missing_payloads(
    conn: sqlite3.Connection, on_disk: set[str], now: float, log: logging.Logger
) -> int:
    rows = conn.execute("SELECT id, payload FROM objects WHERE payload IS NOT NULL").fetchall()
    missing = [int(r[0]) for r in rows if r[1] not in on_disk]
    for object_id in missing:
        event(log, logging.ERROR, "payload missing: deliveries failed", object_id=object_id)
        conn.execute(
            """
            UPDATE deliveries SET state = 'failed', failure_class = 'unreadable',
                last_error = ?, last_error_at = ?, status = NULL
            WHERE object_id = ? AND state != 'sent'
            """,
            (PAYLOAD_MISSING, now, object_id),
        )
        conn.execute("UPDATE objects SET payload = NULL WHERE id = ?", (object_id,))
    return len(missing)


def _attach_destinations(conn: sqlite3.Connection, destinations: Sequence[str], now: float) -> int:
    """Objects stored while no destination was configured get the destinations configured now."""
    if not destinations:
        return 0
    waiting = conn.execute(
        """
        SELECT id, held_reason FROM objects o WHERE payload IS NOT NULL
          AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.object_id = o.id)
        """
    ).fetchall()
    for object_id, held_reason in waiting:
        held = held_reason is not None and held_reason != NO_DESTINATION
        conn.executemany(
            "INSERT INTO deliveries (object_id, destination, state, next_attempt_at)"
            " VALUES (?, ?, ?, ?)",
            [(object_id, name, "held" if held else "pending", now) for name in destinations],
        )
        if not held:
            conn.execute("UPDATE objects SET held_reason = NULL WHERE id = ?", (object_id,))
    return len(waiting) * len(destinations)


def _empty_folder(folder: Path) -> int:
    removed = 0
    for entry in folder.iterdir():
        _remove(entry)
        removed += 1
    return removed


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
