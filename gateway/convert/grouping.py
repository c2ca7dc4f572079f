"""Which study and series a created object belongs to, remembered across restarts.

A series holds one modality (PS3.3 C.7.3.1: Modality is a series attribute): each object is
filed under its study and, within the study, under the series of its source and modality. So a
drop folder's images (the configured SC modality, e.g. OT) and its PDFs (DOC) share a study but
not a series, and a serial port's measurement SRs and text SRs (SR) share one series beside its
print PDFs (DOC). Two sources never share a series: one series per modality and source device,
as a PACS user expects.

Rule for objects not bound to a worklist step: the key is (source, patient ID, accession
number). An object held for its patient (``held``: no identity, a conflict, no or an ambiguous
worklist match) or whose identity gives neither a patient ID nor an accession number has no key
it could share with another object: nothing says it is that patient's, and the operator may
bind it to another patient while binding keeps the UIDs, so two patients would share one
study. Its key is (source, the object's own identity), so it gets a study and series of its
own, and a re-ingest of the same file (a resend after a crash) gets the same ones. Once bound,
it keeps them (or takes the step's Study Instance UID).

An object is known by its own identity, ``object_key``: for a file ``file_key()`` of its bytes
(SHA-256) and its path in the folder, what its SOP Instance UID is derived from, so the same
bytes under two names are two instances with two instance numbers, and a copy dropped a week
later is grouped by its own time, not given the first copy's old assignment; for a serial
message its digest. The ``files`` table keeps its columns (the previous firmware opens this
file): its ``sha256`` column holds that key. A row written before holds the bare SHA-256, so a
file assigned before the upgrade and sent again after it is grouped afresh (by its time: the
same study and series within the window, the next instance number); its SOP Instance UID does
not change.

With an accession number every file of the key is one study. Without one, a file joins the
key's study whose acquisition times (of all its series) lie within ``window_seconds`` of its
own, else it starts a new study. Such a study holds one series per modality.

Objects bound to a worklist step (``order_key``, the item's key) take the step's Study Instance
UID (without one, the UID the key's first object got); the key is (source, step), and a file
joins the key's series of its modality whose acquisition times lie within the window, else it
starts a new series in the same study. Series numbers count the series of one Study Instance UID
in the order they were started; the study's ID and time are its first series'.

Each row of ``studies`` is one series. Rows written before the modality was recorded (schema 1)
have none: they keep their study and their files, and a resend of one of their files gets its
old assignment, but no new file joins them (their modality is unknown, and a series must not
get a second one); a new file of such a study opens a new series in the same study.

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
    instances INTEGER NOT NULL,
    modality TEXT  -- the series' Modality (0008,0060); NULL in rows from schema 1
);
CREATE INDEX IF NOT EXISTS studies_by_key ON studies (key_hash, last_at);
CREATE INDEX IF NOT EXISTS studies_by_uid ON studies (study_uid);
CREATE TABLE IF NOT EXISTS files (
    source TEXT NOT NULL,
    sha256 TEXT NOT NULL,  -- the object's key (file_key(), a message digest), named as in v1
    key_hash TEXT NOT NULL,
    study_id INTEGER NOT NULL REFERENCES studies (id),
    instance_number INTEGER NOT NULL,
    PRIMARY KEY (source, sha256, key_hash)
);
"""
SCHEMA_VERSION = 2  # 1: no modality column (one series per study); 2: series per modality


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
                    _migrate(db)
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
        object_key: str,
        *,
        modality: str,
        order_key: str | None = None,
        study_instance_uid: str | None = None,
        held: bool = False,
    ) -> StudyAssignment:
        """The study and series for an object; the same (source, binding, object_key) always
        gets the same one.

        ``modality`` is the object's Modality: only objects of one modality share a series.
        ``order_key`` binds the file to a worklist step (its key); ``study_instance_uid`` is
        then the step's, when the worklist gave one. ``object_key`` is the object's own
        identity (a file's: ``file_key()`` of its SHA-256 and path; a message's digest).
        ``held``: the object waits for an operator to confirm its patient (``Binding.held``).
        """
        if not modality:
            raise ValueError("a series needs a modality")
        bound = order_key is not None
        if order_key is not None:
            key_hash = _key_hash(source, "\x00worklist-step", order_key)
            by_accession = False
        else:
            accession = identity.accession_number or ""
            patient_id = identity.patient_id or ""
            if (patient_id or accession) and not held:
                key_hash = _key_hash(source, patient_id, accession)
            else:
                # No trusted identity: the object shares its study with no other (rule
                # above). The NUL prefix keeps this key apart from any patient ID's.
                key_hash = _key_hash(source, "\x00own-study", object_key)
            by_accession = bool(accession)
            study_instance_uid = None
        with self._lock:
            db = self._require_open()
            with storage_errors("recording a study assignment"), transaction(db):
                return self._assign(
                    db,
                    _Key(key_hash, by_accession, bound, modality),
                    acquired_at,
                    source,
                    object_key,
                    study_instance_uid or None,
                )

    def _assign(
        self,
        db: sqlite3.Connection,
        key: _Key,
        acquired_at: float,
        source: str,
        object_key: str,
        study_uid_given: str | None,
    ) -> StudyAssignment:
        known = db.execute(
            "SELECT study_id, instance_number FROM files"
            " WHERE source = ? AND sha256 = ? AND key_hash = ?",
            (source, object_key, key.key_hash),
        ).fetchone()
        if known is not None:
            return self._assignment(db, int(known[0]), int(known[1]))
        study_uid = study_uid_given or self._find_study(db, key, acquired_at)
        series = None if study_uid is None else self._find_series(db, key, study_uid, acquired_at)
        if series is None:
            study_uid = study_uid or self.uids.derive("study", key.key_hash, object_key)
            series_uid = self.uids.derive("series", key.key_hash, object_key)
            cursor = db.execute(
                "INSERT INTO studies (key_hash, by_accession, study_uid, series_uid,"
                " started_at, first_at, last_at, instances, modality)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, 0, ?)",
                (
                    key.key_hash,
                    int(key.by_accession),
                    study_uid,
                    series_uid,
                    acquired_at,
                    acquired_at,
                    acquired_at,
                    key.modality,
                ),
            )
            series = int(cursor.lastrowid or 0)
        db.execute(
            "UPDATE studies SET instances = instances + 1, first_at = min(first_at, ?),"
            " last_at = max(last_at, ?) WHERE id = ?",
            (acquired_at, acquired_at, series),
        )
        (instance_number,) = db.execute(
            "SELECT instances FROM studies WHERE id = ?", (series,)
        ).fetchone()
        db.execute(
            "INSERT INTO files (source, sha256, key_hash, study_id, instance_number)"
            " VALUES (?, ?, ?, ?, ?)",
            (source, object_key, key.key_hash, series, instance_number),
        )
        return self._assignment(db, series, int(instance_number))

    def _find_study(self, db: sqlite3.Connection, key: _Key, acquired_at: float) -> str | None:
        """The Study Instance UID the key's file joins, or None for a new study."""
        if key.bound or key.by_accession:
            row = db.execute(
                "SELECT study_uid FROM studies WHERE key_hash = ? ORDER BY id LIMIT 1",
                (key.key_hash,),
            ).fetchone()
        else:
            # The window spans all series of the study. Files may arrive out of order (a
            # rescan after a restart), so a file also joins a study whose span it precedes by
            # less than the window.
            row = db.execute(
                "SELECT study_uid FROM studies WHERE key_hash = ? GROUP BY study_uid"
                " HAVING ? BETWEEN min(first_at) - ? AND max(last_at) + ?"
                " ORDER BY max(last_at) DESC, max(id) DESC LIMIT 1",
                (key.key_hash, acquired_at, self.window_seconds, self.window_seconds),
            ).fetchone()
        return None if row is None else str(row[0])

    def _find_series(
        self, db: sqlite3.Connection, key: _Key, study_uid: str, acquired_at: float
    ) -> int | None:
        """The row of the series of the key's modality in the study the file joins, or None."""
        if not key.bound:
            row = db.execute(
                "SELECT id FROM studies WHERE key_hash = ? AND study_uid = ? AND modality = ?"
                " ORDER BY id LIMIT 1",
                (key.key_hash, study_uid, key.modality),
            ).fetchone()
        else:
            # A bound step's sessions are series: a file joins one within the window.
            row = db.execute(
                "SELECT id FROM studies WHERE key_hash = ? AND study_uid = ? AND modality = ?"
                " AND ? BETWEEN first_at - ? AND last_at + ?"
                " ORDER BY last_at DESC, id DESC LIMIT 1",
                (
                    key.key_hash,
                    study_uid,
                    key.modality,
                    acquired_at,
                    self.window_seconds,
                    self.window_seconds,
                ),
            ).fetchone()
        return None if row is None else int(row[0])

    def _assignment(self, db: sqlite3.Connection, series: int, instance: int) -> StudyAssignment:
        study_uid, series_uid = db.execute(
            "SELECT study_uid, series_uid FROM studies WHERE id = ?", (series,)
        ).fetchone()
        # Series are numbered in the order they started; the study's ID and time are those
        # of its first series, so every series of a study says the same.
        (series_number,) = db.execute(
            "SELECT count(*) FROM studies WHERE study_uid = ? AND id <= ?", (study_uid, series)
        ).fetchone()
        first, study_time = db.execute(
            "SELECT id, started_at FROM studies WHERE study_uid = ? ORDER BY id LIMIT 1",
            (study_uid,),
        ).fetchone()
        return StudyAssignment(
            study_instance_uid=str(study_uid),
            series_instance_uid=str(series_uid),
            study_id=str(first),
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


@dataclass(frozen=True)
class _Key:
    """What decides an object's study and series, besides its time."""

    key_hash: str  # hash of (source, patient ID, accession) or (source, worklist step)
    by_accession: bool
    bound: bool  # to a worklist step
    modality: str


def _migrate(db: sqlite3.Connection) -> None:
    """Bring a database of an older schema up to SCHEMA_VERSION (in place, keeping its rows)."""
    columns = {str(row[1]) for row in db.execute("PRAGMA table_info(studies)")}
    if "modality" not in columns:
        # Schema 1 rows keep NULL: their modality is unknown, so no new file joins them.
        db.execute("ALTER TABLE studies ADD COLUMN modality TEXT")
    if int(db.execute("PRAGMA user_version").fetchone()[0]) < SCHEMA_VERSION:
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")


def file_key(sha256: str, file_name: str) -> str:
    """A file's own identity: its bytes (SHA-256) and its path in the source, as the SOP
    Instance UID derivation takes them; surrogate escapes (a name that is not UTF-8) stand for
    the name's bytes, so two such names differ here as on disk."""
    return _key_hash(sha256, "\x00file", file_name)


def _key_hash(source: str, patient_id: str, accession: str) -> str:
    digest = hashlib.sha256()
    for part in (source, patient_id, accession):
        encoded = part.encode("utf-8", "surrogateescape")
        digest.update(len(encoded).to_bytes(8, "big") + encoded)
    return digest.hexdigest()
