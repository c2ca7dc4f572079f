"""WorklistCache: the last successful worklist from the RIS, in SQLite, with an expiry rule.

Expiry (also in docs/worklist.md): an item with a Scheduled Procedure Step Start Date expires
``expire_grace_hours`` after the end of that day in the box's local time zone; an item without
one expires ``expire_grace_hours`` after the refresh that last delivered it. The RIS being
unreachable never removes anything: only a successful refresh replaces the set.

The database is the truth for other processes (the CLI opens the same file while the daemon
runs); in this process the decoded items are also held in memory, reloaded whenever another
connection has committed (``PRAGMA data_version``), so a lookup costs no JSON decoding.
"""

from __future__ import annotations

import datetime
import json
import sqlite3
import threading
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from gateway.clock import Clock
from gateway.sqltxn import transaction
from gateway.worklist.item import CodeItem, WorklistItem

SCHEMA_VERSION = 1
DEFAULT_GRACE_HOURS = 24.0

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS items ("
    " item_key TEXT PRIMARY KEY,"
    " accession_number TEXT NOT NULL,"
    " patient_id TEXT NOT NULL,"
    " expires_at REAL NOT NULL,"
    " item_json TEXT NOT NULL)",
    "CREATE INDEX IF NOT EXISTS items_accession ON items (accession_number)",
    "CREATE INDEX IF NOT EXISTS items_patient ON items (patient_id)",
)


@dataclass(frozen=True)
class CacheSnapshot:
    """Every cached item with its expiry time (expired ones included); same generation, same set."""

    generation: int
    entries: tuple[tuple[float, WorklistItem], ...]


class CacheSchemaTooNewError(RuntimeError):
    """The cache was written by a newer firmware; delete it (the next refresh rebuilds it)."""


def expires_at(item: WorklistItem, seen_at: float, grace_hours: float) -> float:
    """Wall-clock time at which ``item`` stops being offered (see the module docstring)."""
    grace = grace_hours * 3600.0
    day = _parse_da(item.scheduled_start_date)
    if day is None:
        return seen_at + grace
    # Naive datetime -> local time: the RIS schedules in the room's wall-clock day.
    end_of_day = datetime.datetime.combine(day + datetime.timedelta(days=1), datetime.time())
    return end_of_day.timestamp() + grace


def _parse_da(value: str) -> datetime.date | None:
    text = value.strip()
    if len(text) != 8 or not text.isdigit():
        return None
    try:
        return datetime.date(int(text[:4]), int(text[4:6]), int(text[6:]))
    except ValueError:
        return None


def item_to_json(item: WorklistItem) -> str:
    """Serialise an item for the cache table."""
    return json.dumps(asdict(item), sort_keys=True, ensure_ascii=False)


def item_from_json(text: str) -> WorklistItem:
    """Inverse of :func:`item_to_json`."""
    fields = json.loads(text)
    code = fields.get("requested_procedure_code")
    fields["requested_procedure_code"] = None if code is None else CodeItem(**code)
    return WorklistItem(**fields)


class WorklistCache:
    """Thread-safe SQLite cache of worklist items (WAL, synchronous=FULL)."""

    def __init__(self, path: Path, clock: Clock, grace_hours: float = DEFAULT_GRACE_HOURS) -> None:
        self._path = path
        self._clock = clock
        self._grace_hours = grace_hours
        self._lock = threading.RLock()
        self._conn: sqlite3.Connection | None = None
        self._data_version = -1
        self._loaded: tuple[tuple[float, WorklistItem], ...] = ()
        self._generation = 0
        self._by_key: dict[str, tuple[float, WorklistItem]] = {}
        self._fetched_at: float | None = None

    @property
    def path(self) -> Path:
        """The database file."""
        return self._path

    def open(self) -> None:
        """Create or migrate the database; idempotent."""
        with self._lock:
            if self._conn is not None:
                return
            self._path.parent.mkdir(parents=True, exist_ok=True)
            # isolation_level=None: transactions are explicit (gateway.sqltxn).
            conn = sqlite3.connect(
                self._path, isolation_level=None, check_same_thread=False, timeout=10.0
            )
            try:
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=FULL")
                self._migrate(conn)
            except BaseException:
                conn.close()
                raise
            self._conn = conn
            self._data_version = -1
            self._reload_if_changed()

    @staticmethod
    def _migrate(conn: sqlite3.Connection) -> None:
        conn.execute("BEGIN IMMEDIATE")
        try:
            found = int(conn.execute("PRAGMA user_version").fetchone()[0])
            if found > SCHEMA_VERSION:
                raise CacheSchemaTooNewError(
                    f"worklist cache schema {found} is newer than this firmware's {SCHEMA_VERSION}"
                )
            if found < SCHEMA_VERSION:
                for statement in _SCHEMA:
                    conn.execute(statement)
                conn.execute(f"PRAGMA user_version={SCHEMA_VERSION:d}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def close(self) -> None:
        """Close the database; idempotent."""
        with self._lock:
            conn, self._conn = self._conn, None
            if conn is not None:
                conn.close()

    def _require(self) -> sqlite3.Connection:
        if self._conn is None:
            raise RuntimeError("worklist cache is not open")
        return self._conn

    def replace(self, items: Sequence[WorklistItem], fetched_at: float) -> None:
        """Make ``items`` the whole cached worklist, in one transaction."""
        rows = [
            (
                item.key,
                item.accession_number,
                item.patient_id,
                expires_at(item, fetched_at, self._grace_hours),
                item_to_json(item),
            )
            for item in items
        ]
        with self._lock, transaction(self._require()) as conn:
            conn.execute("DELETE FROM items")
            # A repeated key (the RIS sent the same step twice) keeps the last copy.
            conn.executemany("INSERT OR REPLACE INTO items VALUES (?, ?, ?, ?, ?)", rows)
            conn.execute(
                "INSERT OR REPLACE INTO meta VALUES ('fetched_at', ?)", (repr(fetched_at),)
            )
        with self._lock:
            # Our own commit does not move data_version: install the new set directly.
            by_key = {row[0]: (row[3], item) for row, item in zip(rows, items, strict=True)}
            self._install(list(by_key.values()), fetched_at)

    def items(self) -> list[WorklistItem]:
        """Every item not expired now, in scheduled date/time order."""
        now = self._clock.now()
        with self._lock:
            self._reload_if_changed()
            return [item for expiry, item in self._loaded if expiry > now]

    def get(self, key: str) -> WorklistItem | None:
        """The item with this key, unless it is unknown or expired."""
        now = self._clock.now()
        with self._lock:
            self._reload_if_changed()
            found = self._by_key.get(key)
        if found is None or found[0] <= now:
            return None
        return found[1]

    def find(
        self, *, accession_number: str | None = None, patient_id: str | None = None
    ) -> list[WorklistItem]:
        """Items whose given fields are exactly equal; empty or absent criteria are ignored.

        With no criterion at all nothing matches: a lookup never matches on nothing.
        """
        if not accession_number and not patient_id:
            return []
        return [
            item
            for item in self.items()
            if (not accession_number or item.accession_number == accession_number)
            and (not patient_id or item.patient_id == patient_id)
        ]

    def snapshot(self) -> CacheSnapshot:
        """The whole set with expiry times, for callers that keep derived data per generation."""
        with self._lock:
            self._reload_if_changed()
            return CacheSnapshot(self._generation, self._loaded)

    @property
    def fetched_at(self) -> float | None:
        """Wall-clock time of the last successful refresh (None: never)."""
        with self._lock:
            self._reload_if_changed()
            return self._fetched_at

    def _reload_if_changed(self) -> None:
        conn = self._require()
        version = int(conn.execute("PRAGMA data_version").fetchone()[0])
        if version == self._data_version:
            return
        # data_version moves only for other connections' commits (e.g. a second process).
        rows = conn.execute("SELECT expires_at, item_json FROM items").fetchall()
        loaded = [(float(expiry), item_from_json(text)) for expiry, text in rows]
        meta = conn.execute("SELECT value FROM meta WHERE name = 'fetched_at'").fetchone()
        self._install(loaded, None if meta is None else float(meta[0]))
        self._data_version = version

    def _install(self, loaded: list[tuple[float, WorklistItem]], fetched_at: float | None) -> None:
        loaded.sort(key=lambda row: (row[1].scheduled_start_date, row[1].scheduled_start_time))
        self._loaded = tuple(loaded)
        self._generation += 1
        self._by_key = {item.key: (expiry, item) for expiry, item in loaded}
        self._fetched_at = fetched_at
