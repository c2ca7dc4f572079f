"""The panel's own SQLite file, ``<state_dir>/web/panel.sqlite``: users, sessions, setup token.

One short-lived connection per call (the panel sees a handful of requests a minute), so the
stores are safe from FastAPI's worker threads without a shared connection or a lock.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from gateway.spool.durable import write_bytes_durably

WEB_DIR = "web"
DB_FILE = "panel.sqlite"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS users (
    username TEXT PRIMARY KEY,
    role TEXT NOT NULL,
    password_hash TEXT NOT NULL,
    created_at REAL NOT NULL,
    failures INTEGER NOT NULL DEFAULT 0,  -- unused since issue 11 (auth.throttle, in memory)
    locked_until REAL  -- unused since issue 11; kept so older databases open unchanged
);
CREATE TABLE IF NOT EXISTS sessions (
    id_hash TEXT PRIMARY KEY,
    username TEXT NOT NULL REFERENCES users(username) ON DELETE CASCADE,
    csrf_token TEXT NOT NULL,
    created_at REAL NOT NULL,
    last_seen REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS sessions_by_user ON sessions(username);
CREATE TABLE IF NOT EXISTS setup_token (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    token_hash TEXT NOT NULL,
    created_at REAL NOT NULL
);
"""


def web_dir(state_dir: Path) -> Path:
    """The panel's folder under the state dir (database, certificate, tokens); mode 0700."""
    return state_dir / WEB_DIR


class PanelDb:
    """Opens connections to the panel database, creating it (mode 0600) and its tables once."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @classmethod
    def under(cls, state_dir: Path) -> PanelDb:
        """The database at ``<state_dir>/web/panel.sqlite``, created if missing."""
        db = cls(web_dir(state_dir) / DB_FILE)
        db.create()
        return db

    def create(self) -> None:
        """Make the folder (0700), the file (0600) and the tables if they are not there yet."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.parent.chmod(0o700)
        # Password hashes live here: nobody but the daemon's user may read the file.
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        os.close(fd)
        with self.connect() as conn:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.executescript(_SCHEMA)

    @contextmanager
    def connect(self) -> Iterator[sqlite3.Connection]:
        """A connection in autocommit mode with foreign keys on; closed on exit."""
        conn = sqlite3.connect(self.path, timeout=10.0, isolation_level=None)
        try:
            conn.execute("PRAGMA foreign_keys=ON")
            yield conn
        finally:
            conn.close()


def write_private(path: Path, text: str) -> None:
    """Write a 0600 file atomically and durably (it never exists with wider permissions)."""
    write_bytes_durably(path, text.encode("ascii"), 0o600)
