"""Login sessions: a random id in a cookie, only its SHA-256 stored; idle and absolute expiry.

The id is 32 random bytes, so a plain hash is enough: a stolen database gives no usable cookie.
Each session carries its own CSRF token, which every state-changing request must echo (form
field ``csrf_token`` or header ``X-CSRF-Token``). ``last_seen`` is written at most once a minute
so browsing does not wear the SD card; idle expiry is accurate to that minute.
"""

from __future__ import annotations

import hashlib
import secrets
import sqlite3
from dataclasses import dataclass

from gateway.clock import Clock
from gateway.sqltxn import transaction
from gateway.web.auth.db import PanelDb

TOUCH_EVERY = 60.0  # seconds between writes of last_seen for one session


@dataclass(frozen=True)
class Session:
    """A live session as a request sees it."""

    username: str
    csrf_token: str
    created_at: float
    last_seen: float


@dataclass(frozen=True)
class NewSession:
    """What login hands back: the cookie value (never stored) and the session."""

    token: str
    session: Session


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class SessionStore:
    """The sessions table; a session ends after ``idle_seconds`` unused or ``max_seconds``."""

    def __init__(self, db: PanelDb, clock: Clock, idle_seconds: float, max_seconds: float) -> None:
        self._db = db
        self._clock = clock
        self.idle_seconds = idle_seconds
        self.max_seconds = max_seconds

    def create(self, username: str) -> NewSession:
        """Start a session for a user who just proved who they are."""
        token = secrets.token_urlsafe(32)
        now = self._clock.now()
        session = Session(username, secrets.token_urlsafe(32), now, now)
        with self._db.connect() as conn, transaction(conn):
            self._drop_expired(conn, now)
            conn.execute(
                "INSERT INTO sessions (id_hash, username, csrf_token, created_at, last_seen) "
                "VALUES (?,?,?,?,?)",
                (_digest(token), username, session.csrf_token, now, now),
            )
        return NewSession(token, session)

    def lookup(self, token: str) -> Session | None:
        """The live session for this cookie value (marked as used now), or None."""
        if not token or len(token) > 128:
            return None
        key = _digest(token)
        now = self._clock.now()
        with self._db.connect() as conn:
            row = conn.execute(
                "SELECT username, csrf_token, created_at, last_seen FROM sessions "
                "WHERE id_hash = ?",
                (key,),
            ).fetchone()
            if row is None:
                return None
            username, csrf, created, seen = row
            if now - seen >= self.idle_seconds or now - created >= self.max_seconds:
                conn.execute("DELETE FROM sessions WHERE id_hash = ?", (key,))
                return None
            if now - seen >= TOUCH_EVERY:
                conn.execute("UPDATE sessions SET last_seen = ? WHERE id_hash = ?", (now, key))
                seen = now
        return Session(username, csrf, created, seen)

    def end(self, token: str) -> None:
        """Log out: the cookie value no longer opens anything."""
        with self._db.connect() as conn:
            conn.execute("DELETE FROM sessions WHERE id_hash = ?", (_digest(token),))

    def end_all(self, username: str, *, keep: str | None = None) -> int:
        """End every session of a user (password or role changed), except ``keep``'s."""
        keep_hash = _digest(keep) if keep else ""
        with self._db.connect() as conn:
            cur = conn.execute(
                "DELETE FROM sessions WHERE username = ? AND id_hash != ?", (username, keep_hash)
            )
            return cur.rowcount

    def count(self) -> int:
        """Sessions not yet expired."""
        now = self._clock.now()
        with self._db.connect() as conn:
            return int(
                conn.execute(
                    "SELECT COUNT(*) FROM sessions WHERE last_seen >= ? AND created_at >= ?",
                    (now - self.idle_seconds, now - self.max_seconds),
                ).fetchone()[0]
            )

    def _drop_expired(self, conn: sqlite3.Connection, now: float) -> None:
        conn.execute(
            "DELETE FROM sessions WHERE last_seen < ? OR created_at < ?",
            (now - self.idle_seconds, now - self.max_seconds),
        )
