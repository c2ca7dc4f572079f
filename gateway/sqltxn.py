"""Explicit SQLite transactions for a connection opened with isolation_level=None."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def transaction(conn: sqlite3.Connection, *, synced: bool = True) -> Iterator[sqlite3.Connection]:
    """BEGIN IMMEDIATE ... COMMIT, rolled back on any exception.

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
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
    finally:
        if not synced:
            conn.execute("PRAGMA synchronous=FULL")
