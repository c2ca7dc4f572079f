"""The queue's SQLite index: connection settings and schema migrations.

objects      one row per queued DICOM object; ``payload`` names its file in objects/ while the
             file is live (NULL once every destination has it and the file was removed; the row
             stays for history and to recognise a re-ingested source).
deliveries   one row per object per destination: the lane's work item and its history.
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
    """Bring the schema up to SCHEMA_VERSION in one transaction; returns the version found."""
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
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return found


def _statements(script: str) -> list[str]:
    # executescript() would COMMIT the open transaction first; split instead (no ';' in literals).
    return [s.strip() for s in script.split(";") if s.strip()]
