"""The queue's SQLite index: connection settings, schema migrations and additions.

objects      one row per queued DICOM object; ``payload`` names its file in objects/ while the
             file is live (NULL once every destination has it and the file was removed; the row
             stays for history and to recognise a re-ingested source).
deliveries   one row per object per destination: the lane's work item and its history.
object_sources  (addition 1) one row per distinct arrival of an object: drop folder and
             file name, serial port, or calling AE title and peer address; size, SHA-256, time.
             An object without one (queued before the table existed, or by older firmware after
             a rollback) gets one at the next open with what its objects row knew: the source
             name, the hash, the enqueue time, and for a "dicom:" source the calling AE title;
             channel 'unrecorded' unless it was a C-STORE.

Two kinds of change, so that a rollback never strands the queue (docs/updates.md: files written
by release N stay readable by N-1, whose migrate() refuses any user_version above its own):

* a **migration** (``_MIGRATIONS``) changes what every reader must understand; it raises
  SCHEMA_VERSION (PRAGMA user_version), and older firmware then refuses the queue;
* an **addition** (``_ADDITIONS``) only adds tables, columns with defaults or indexes that older
  firmware never reads; it leaves SCHEMA_VERSION alone and runs at every open, so it must be
  idempotent (IF NOT EXISTS; a backfill of only what is missing). Its foreign keys cascade, so
  older firmware deleting an object deletes its added rows too.

Both lists are append-only: never edit a released step.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

SCHEMA_VERSION = 1

# Each entry takes the schema from version i to i + 1; append, never edit a released step.
_MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE objects (
        id                  INTEGER PRIMARY KEY AUTOINCREMENT,  -- ids never reused
        sop_instance_uid    TEXT NOT NULL,
        sop_class_uid       TEXT NOT NULL,
        transfer_syntax_uid TEXT NOT NULL,
        study_instance_uid  TEXT NOT NULL,
        source_sha256       TEXT NOT NULL,
        source              TEXT NOT NULL,
        kind                TEXT NOT NULL,
        size                INTEGER NOT NULL,
        payload             TEXT,
        held_reason         TEXT,
        enqueued_at         REAL NOT NULL,
        UNIQUE (sop_instance_uid, source_sha256)
    );
    CREATE INDEX objects_live ON objects (payload, size) WHERE payload IS NOT NULL;
    CREATE TABLE deliveries (
        id              INTEGER PRIMARY KEY AUTOINCREMENT,
        object_id       INTEGER NOT NULL REFERENCES objects (id) ON DELETE CASCADE,
        destination     TEXT NOT NULL,
        state           TEXT NOT NULL
                        CHECK (state IN ('held', 'pending', 'sending', 'sent', 'failed')),
        attempts        INTEGER NOT NULL DEFAULT 0,
        next_attempt_at REAL NOT NULL,
        sent_at         REAL,
        failure_class   TEXT,
        last_error      TEXT,
        last_error_at   REAL,
        status          INTEGER,
        UNIQUE (object_id, destination)
    );
    CREATE INDEX deliveries_lane ON deliveries (destination, state, next_attempt_at);
    """,
)

# Additive, idempotent steps run in order at every open (see the module docstring).
_ADDITIONS: tuple[str, ...] = (
    """
    CREATE TABLE IF NOT EXISTS object_sources (
        id                  INTEGER PRIMARY KEY AUTOINCREMENT,
        object_id           INTEGER NOT NULL REFERENCES objects (id) ON DELETE CASCADE,
        channel             TEXT NOT NULL
                            CHECK (channel IN ('file', 'serial', 'dicom', 'unrecorded')),
        source              TEXT NOT NULL,
        sha256              TEXT NOT NULL,
        arrived_at          REAL NOT NULL,
        size                INTEGER,
        file_name           TEXT,
        port                TEXT,
        calling_ae          TEXT,
        peer_address        TEXT,
        identity_note       TEXT,
        hint_patient_id     TEXT,
        hint_accession      TEXT
    );
    CREATE INDEX IF NOT EXISTS object_sources_object ON object_sources (object_id);
    INSERT INTO object_sources (object_id, channel, source, sha256, arrived_at, calling_ae)
        SELECT o.id,
               CASE WHEN substr(o.source, 1, 6) = 'dicom:' THEN 'dicom' ELSE 'unrecorded' END,
               o.source, o.source_sha256, o.enqueued_at,
               CASE WHEN substr(o.source, 1, 6) = 'dicom:' THEN substr(o.source, 7) END
        FROM objects o
        WHERE NOT EXISTS (SELECT 1 FROM object_sources s WHERE s.object_id = o.id)
        ORDER BY o.id;
    """,
)


class SchemaTooNewError(RuntimeError):
    """The queue was written by a newer firmware; refuse to touch it rather than corrupt it."""


def connect(path: Path) -> sqlite3.Connection:
    """Open the index: WAL, synchronous=FULL, foreign keys; transactions are explicit."""
    # isolation_level=None: we issue BEGIN/COMMIT ourselves, so a transaction is exactly what the
    # code says. check_same_thread=False: the Spool serialises access with its own lock.
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=10.0)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA foreign_keys=ON")
    return conn


def migrate(conn: sqlite3.Connection) -> int:
    """Bring the schema up to SCHEMA_VERSION and apply every addition, in one transaction.

    Returns the version found.
    """
    conn.execute("BEGIN IMMEDIATE")
    try:
        found = int(conn.execute("PRAGMA user_version").fetchone()[0])
        if found > SCHEMA_VERSION:
            raise SchemaTooNewError(
                f"queue schema version {found} is newer than this firmware's {SCHEMA_VERSION}"
            )
        for step in range(found, SCHEMA_VERSION):
            for statement in _statements(_MIGRATIONS[step]):
                conn.execute(statement)
        if found != SCHEMA_VERSION:
            conn.execute(f"PRAGMA user_version={SCHEMA_VERSION:d}")
        for addition in _ADDITIONS:
            for statement in _statements(addition):
                conn.execute(statement)
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return found


def _statements(script: str) -> list[str]:
    # executescript() would COMMIT the open transaction first; split instead (no ';' in literals).
    return [s.strip() for s in script.split(";") if s.strip()]
