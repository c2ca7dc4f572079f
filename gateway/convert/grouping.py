"""Which study and series a created object belongs to, remembered across restarts.

Rule for objects not bound to a worklist step: the key is (source, patient ID, accession
number). With an accession number every file of the key is one study. Without one, a file joins
the key's study whose acquisition times lie within ``window_seconds`` of its own, else it starts
a new study. Such a study holds one series.

Objects bound to a worklist step (``order_key``, the item's key) take the step's Study Instance
UID; the key is (source, step), and a file joins the key's series whose acquisition times lie
within the window, else it starts a new series in the same study. Series numbers count the
series of one Study Instance UID in the order they were started.

The database holds a hash of the key, never the patient ID itself.

A fault of the state storage (full, read-only, failing) while opening the database or
committing an assignment raises StorageNotReadyError (gateway.storagefault), never an error
the caller could take for the file's: the file waits, nothing was assigned. A database that
could not be opened at start is opened by the next assign().
"""

from __future__ import annotations

import hashlib
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path

from gateway.convert.uids import UidFactory
from gateway.identity import PatientIdentity
from gateway.sqltxn import transaction
from gateway.storagefault import StorageNotReadyError, storage_errors

_SCHEMA = """
CREATE TABLE IF NOT EXISTS studies (
    id INTEGER PRIMARY KEY,
    key_hash TEXT NOT NULL,
    by_accession INTEGER NOT NULL,
    study_uid TEXT NOT NULL,
    series_uid TEXT NOT NULL,
    started_at REAL NOT NULL,
    first_at REAL NOT NULL,
    last_at REAL NOT NULL,
    instances INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS studies_by_key ON studies (key_hash, last_at);
CREATE INDEX IF NOT EXISTS studies_by_uid ON studies (study_uid);
CREATE TABLE IF NOT EXISTS files (
    source TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    key_hash TEXT NOT NULL,
    study_id INTEGER NOT NULL REFERENCES studies (id),
    instance_number INTEGER NOT NULL,
    PRIMARY KEY (source, sha256, key_hash)
);
"""


@dataclass(frozen=True)
class StudyAssignment:
    """Where one object goes: its study, series and numbers within them."""

    study_instance_uid: str
    series_instance_uid: str
    study_id: str  # (0020,0010), SH: the study's row number
    series_number: int
    instance_number: int
    study_time: float  # epoch seconds of the study's first file


class StudyGrouper:
    """Assigns files to studies by the rule above; thread-safe, persisted in its own SQLite file."""

    def __init__(self, db_path: Path, window_seconds: float, uids: UidFactory) -> None:
        if window_seconds <= 0:
            raise ValueError("window_seconds must be positive")
        self.db_path = db_path
        self.window_seconds = window_seconds
        self.uids = uids
        self._lock = threading.RLock()  # open() runs inside assign() after a deferred start
        self._db: sqlite3.Connection | None = None
        self._deferred = False  # open failed for a storage fault: assign() opens it

    def open(self) -> None:
        """Open (creating if needed) the database; raises StorageNotReadyError on a fault."""
        with self._lock:
            if self._db is not None:
                return
            with storage_errors("opening the grouping database"):
                db = sqlite3.connect(self.db_path, isolation_level=None, check_same_thread=False)
                try:
                    db.execute("PRAGMA journal_mode=WAL")
                    # FULL: an assignment that was handed out must survive a power cut.
                    db.execute("PRAGMA synchronous=FULL")
                    db.executescript(_SCHEMA)
                except BaseException:
                    db.close()
                    raise
            self._db = db
            self._deferred = False

    def open_when_ready(self) -> None:
        """open() for the daemon's start: a storage fault leaves it to the next assign()."""
        with self._lock:
            try:
                self.open()
            except StorageNotReadyError:
                self._deferred = True

    def close(self) -> None:
        """Close the database; open() may be called again."""
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    def assign(
        self,
        source: str,
        identity: PatientIdentity,
        acquired_at: float,
        source_sha256: str,
        *,
        order_key: str | None = None,
        study_instance_uid: str | None = None,
    ) -> StudyAssignment:
        """The study for a file; the same (source, binding, sha256) always gets the same one.

        ``order_key`` binds the file to a worklist step (its key); ``study_instance_uid`` is
        then the step's, when the worklist gave one.
        """
        if order_key is not None:
            key_hash = _key_hash(source, "\x00worklist-step", order_key)
            by_accession = False
        else:
            accession = identity.accession_number or ""
            key_hash = _key_hash(source, identity.patient_id or "", accession)
            by_accession = bool(accession)
            study_instance_uid = None
        with self._lock:
            db = self._require_open()
            with storage_errors("recording a study assignment"), transaction(db):
                return self._assign(
                    db,
                    key_hash,
                    by_accession,
                    acquired_at,
                    source,
                    source_sha256,
                    study_instance_uid or None,
                )

    def _assign(
        self,
        db: sqlite3.Connection,
        key_hash: str,
        by_accession: bool,
        acquired_at: float,
        source: str,
        sha256: str,
        study_uid_given: str | None,
    ) -> StudyAssignment:
        known = db.execute(
            "SELECT study_id, instance_number FROM files"
            " WHERE source = ? AND sha256 = ? AND key_hash = ?",
            (source, sha256, key_hash),
        ).fetchone()
        if known is not None:
            return self._assignment(db, int(known[0]), int(known[1]))
        study = self._find_study(db, key_hash, by_accession, acquired_at)
        if study is None:
            study_uid = study_uid_given or self.uids.derive("study", key_hash, sha256)
            series_uid = self.uids.derive("series", key_hash, sha256)
            cursor = db.execute(
                "INSERT INTO studies (key_hash, by_accession, study_uid, series_uid,"
                " started_at, first_at, last_at, instances) VALUES (?, ?, ?, ?, ?, ?, ?, 0)",
                (
                    key_hash,
                    int(by_accession),
                    study_uid,
                    series_uid,
                    acquired_at,
                    acquired_at,
                    acquired_at,
                ),
            )
            study = int(cursor.lastrowid or 0)
        db.execute(
            "UPDATE studies SET instances = instances + 1, first_at = min(first_at, ?),"
            " last_at = max(last_at, ?) WHERE id = ?",
            (acquired_at, acquired_at, study),
        )
        (instance_number,) = db.execute(
            "SELECT instances FROM studies WHERE id = ?", (study,)
        ).fetchone()
        db.execute(
            "INSERT INTO files (source, sha256, key_hash, study_id, instance_number)"
            " VALUES (?, ?, ?, ?, ?)",
            (source, sha256, key_hash, study, instance_number),
        )
        return self._assignment(db, study, int(instance_number))

    def _find_study(
        self, db: sqlite3.Connection, key_hash: str, by_accession: bool, acquired_at: float
    ) -> int | None:
        if by_accession:
            row = db.execute(
                "SELECT id FROM studies WHERE key_hash = ? ORDER BY id LIMIT 1", (key_hash,)
            ).fetchone()
        else:
            # Files may arrive out of order (a rescan after a restart), so a file also joins a
            # study whose span it precedes by less than the window.
            row = db.execute(
                "SELECT id FROM studies WHERE key_hash = ?"
                " AND ? BETWEEN first_at - ? AND last_at + ?"
                " ORDER BY last_at DESC, id DESC LIMIT 1",
                (key_hash, acquired_at, self.window_seconds, self.window_seconds),
            ).fetchone()
        return None if row is None else int(row[0])

    def _assignment(self, db: sqlite3.Connection, study: int, instance: int) -> StudyAssignment:
        study_uid, series_uid = db.execute(
            "SELECT study_uid, series_uid FROM studies WHERE id = ?", (study,)
        ).fetchone()
        # Several series share a study only when bound to one worklist step; the study's
        # date is its first series' and each series is numbered in the order it started.
        series_number, study_time = db.execute(
            "SELECT count(*), min(started_at) FROM studies WHERE study_uid = ? AND id <= ?",
            (study_uid, study),
        ).fetchone()
        return StudyAssignment(
            study_instance_uid=str(study_uid),
            series_instance_uid=str(series_uid),
            study_id=str(study),
            series_number=int(series_number),
            instance_number=instance,
            study_time=float(study_time),
        )

    def _require_open(self) -> sqlite3.Connection:
        if self._db is None and self._deferred:
            self.open()
        if self._db is None:
            raise RuntimeError("StudyGrouper used before open()")
        return self._db


def _key_hash(source: str, patient_id: str, accession: str) -> str:
    digest = hashlib.sha256()
    for part in (source, patient_id, accession):
        encoded = part.encode("utf-8")
        digest.update(len(encoded).to_bytes(8, "big") + encoded)
    return digest.hexdigest()
