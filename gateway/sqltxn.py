"""Explicit SQLite transactions for a connection opened with isolation_level=None."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator


@contextlib.contextmanager
def transaction(conn: sqlite3.Connection, *, synced: bool = True) -> Iterator[sqlite3.Connection]:
    """BEGIN IMMEDIATE ... COMMIT, rolled back on any exception, a failed COMMIT included.

    A COMMIT that fails (a full or read-only disk) leaves SQLite's transaction open; it is
    rolled back here, or every later BEGIN on the connection would fail. A rollback SQLite
    already did itself, or one that fails too, never hides the error that caused it.

    ``synced=False`` commits without fsync (WAL with synchronous=NORMAL): the change survives a
    killed process but may be lost, whole, on a power cut; the next synced commit makes it durable.
    Use it only for changes whose loss is harmless, to spare the flash a sync.
    """
    if not synced:
        conn.execute("PRAGMA synchronous=NORMAL")
    try:
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
            conn.execute("COMMIT")
        except BaseException:
            _rollback(conn)
            raise
    finally:
        if not synced:
            conn.execute("PRAGMA synchronous=FULL")


def _rollback(conn: sqlite3.Connection) -> None:
    if conn.in_transaction:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")
