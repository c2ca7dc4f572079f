"""Faults of the box's own storage: told apart from faults of the data, in one place.

An error of the state file system (full, read-only, failing) is never the fault of the file,
message or object being handled: it is kept where it is (drop folder, device, modality) and
tried again when the storage is back, and it is never quarantined or failed for it. Every
component that writes to the state file system routes its errors through :func:`classify`.

Which errors are the storage's (and nothing else is):

============================  ======================================================  ==========
where                         error                                                   fault
============================  ======================================================  ==========
any OSError                   ENOSPC (no space), EDQUOT (quota)                       full
any OSError                   EROFS (read-only file system)                           read-only
any OSError                   EIO (the device failed)                                 I/O error
sqlite3.Error                 SQLITE_FULL "database or disk is full"                  full
sqlite3.Error                 SQLITE_READONLY "attempt to write a readonly database"  read-only
sqlite3.Error                 SQLITE_IOERR "disk I/O error" (and its extended codes)  I/O error
sqlite3.Error                 SQLITE_CANTOPEN "unable to open database file"          I/O error
============================  ======================================================  ==========

An error wrapping one of these (``raise ... from``, or raised while handling one) counts as
the one it wraps: a library that turns ENOSPC into its own exception does not make it the
file's fault. SQLITE_CANTOPEN is counted because SQLite reports a database it cannot create
for want of an inode or a -shm file that way; a missing state_dir is a config error caught
before any database is opened.

The exception to raise is :class:`StorageNotReadyError` ("not ready: try again later", as
Home Assistant's ``ConfigEntryNotReady``): whoever catches it keeps the input and waits.
"""

from __future__ import annotations

import contextlib
import errno
import sqlite3
from collections.abc import Iterator
from enum import StrEnum


class StorageFault(StrEnum):
    """What is wrong with the state file system."""

    FULL = "full"
    READ_ONLY = "read-only"
    IO_ERROR = "I/O error"


_ERRNO_FAULTS = {
    errno.ENOSPC: StorageFault.FULL,
    errno.EDQUOT: StorageFault.FULL,
    errno.EROFS: StorageFault.READ_ONLY,
    errno.EIO: StorageFault.IO_ERROR,
}
# Primary result codes (the low byte of an extended code): sqlite3.SQLITE_FULL and friends.
_SQLITE_FAULTS = {
    sqlite3.SQLITE_FULL: StorageFault.FULL,
    sqlite3.SQLITE_READONLY: StorageFault.READ_ONLY,
    sqlite3.SQLITE_IOERR: StorageFault.IO_ERROR,
    sqlite3.SQLITE_CANTOPEN: StorageFault.IO_ERROR,
}
# Older SQLite builds leave sqlite_errorcode unset on some errors: their messages then.
_SQLITE_MESSAGES = (
    ("database or disk is full", StorageFault.FULL),
    ("attempt to write a readonly database", StorageFault.READ_ONLY),
    ("disk i/o error", StorageFault.IO_ERROR),
)
_MAX_CHAIN = 16  # causes followed; a cycle in __context__ must not loop forever


class StorageNotReadyError(Exception):
    """The state file system cannot take a write now: keep the input, try again later.

    Never the input's fault. ``fault`` says what is wrong, ``what`` which operation met it.
    """

    def __init__(self, fault: StorageFault, what: str, detail: str = "") -> None:
        super().__init__(fault, what, detail)
        self.fault = fault
        self.what = what
        self.detail = detail

    def __str__(self) -> str:
        text = f"state storage {self.fault}: {self.what}"
        return f"{text} ({self.detail})" if self.detail else text


def classify(exc: BaseException) -> StorageFault | None:
    """The storage fault ``exc`` is, or wraps (see the table above); None when it is none."""
    seen = 0
    current: BaseException | None = exc
    while current is not None and seen < _MAX_CHAIN:
        fault = _own_fault(current)
        if fault is not None:
            return fault
        current = current.__cause__ or current.__context__
        seen += 1
    return None


def _own_fault(exc: BaseException) -> StorageFault | None:
    if isinstance(exc, StorageNotReadyError):
        return exc.fault
    if isinstance(exc, OSError):
        return _ERRNO_FAULTS.get(exc.errno) if exc.errno is not None else None
    if isinstance(exc, sqlite3.Error):
        code = getattr(exc, "sqlite_errorcode", None)
        if isinstance(code, int):
            return _SQLITE_FAULTS.get(code & 0xFF)
        message = str(exc).lower()
        for text, fault in _SQLITE_MESSAGES:
            if text in message:
                return fault
    return None


def as_not_ready(exc: BaseException, what: str) -> StorageNotReadyError | None:
    """``exc`` as a StorageNotReadyError for ``what`` when it is a storage fault, else None."""
    if isinstance(exc, StorageNotReadyError):
        return exc
    fault = classify(exc)
    if fault is None:
        return None
    return StorageNotReadyError(fault, what, _detail(exc))


def _detail(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc)


@contextlib.contextmanager
def storage_errors(what: str) -> Iterator[None]:
    """Turn a storage fault raised inside into StorageNotReadyError for ``what``; others pass."""
    try:
        yield
    except (OSError, sqlite3.Error) as exc:
        not_ready = as_not_ready(exc, what)
        if not_ready is None:
            raise
        raise not_ready from exc
