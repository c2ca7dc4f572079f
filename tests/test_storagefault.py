"""gateway.storagefault: the box's own storage errors, told apart from everything else."""

from __future__ import annotations

import errno
import sqlite3
from pathlib import Path

import pytest

from gateway.convert.result import ConversionError
from gateway.storagefault import (
    StorageFault,
    StorageNotReadyError,
    as_not_ready,
    classify,
    storage_errors,
)


@pytest.mark.parametrize(
    ("code", "fault"),
    [
        (errno.ENOSPC, StorageFault.FULL),
        (errno.EDQUOT, StorageFault.FULL),
        (errno.EROFS, StorageFault.READ_ONLY),
        (errno.EIO, StorageFault.IO_ERROR),
    ],
)
def test_oserrors_of_the_storage(code: int, fault: StorageFault) -> None:
    assert classify(OSError(code, "x")) is fault


@pytest.mark.parametrize("code", [errno.ENOENT, errno.EACCES, errno.EINVAL, None])
def test_other_oserrors_are_not_storage_faults(code: int | None) -> None:
    exc = OSError("no errno") if code is None else OSError(code, "x")
    assert classify(exc) is None


def _sqlite_error(code: int, message: str) -> sqlite3.Error:
    exc = sqlite3.OperationalError(message)
    exc.sqlite_errorcode = code  # type: ignore[attr-defined]
    return exc


@pytest.mark.parametrize(
    ("code", "message", "fault"),
    [
        (sqlite3.SQLITE_FULL, "database or disk is full", StorageFault.FULL),
        (sqlite3.SQLITE_READONLY, "attempt to write a readonly database", StorageFault.READ_ONLY),
        (sqlite3.SQLITE_IOERR, "disk I/O error", StorageFault.IO_ERROR),
        (sqlite3.SQLITE_IOERR | (4 << 8), "disk I/O error", StorageFault.IO_ERROR),  # _SHORT_READ
        (sqlite3.SQLITE_CANTOPEN, "unable to open database file", StorageFault.IO_ERROR),
    ],
)
def test_sqlite_errors_of_the_storage(code: int, message: str, fault: StorageFault) -> None:
    assert classify(_sqlite_error(code, message)) is fault


def test_sqlite_errors_by_message_when_the_code_is_missing() -> None:
    assert classify(sqlite3.OperationalError("database or disk is full")) is StorageFault.FULL
    assert classify(sqlite3.OperationalError("no such table: x")) is None


def test_other_sqlite_errors_are_not_storage_faults() -> None:
    assert classify(_sqlite_error(sqlite3.SQLITE_CONSTRAINT, "UNIQUE constraint failed")) is None
    assert classify(_sqlite_error(sqlite3.SQLITE_BUSY, "database is locked")) is None


def test_a_real_sqlite_error_on_a_read_only_database(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite"
    sqlite3.connect(path).execute("CREATE TABLE t (x)").connection.commit()
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    with pytest.raises(sqlite3.Error) as caught:
        conn.execute("INSERT INTO t VALUES (1)")
    assert classify(caught.value) is StorageFault.READ_ONLY


def test_a_wrapped_storage_error_is_still_the_storage_s() -> None:
    try:
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError as exc:
            raise ConversionError("PNG does not decode: write failed") from exc
    except ConversionError as wrapped:
        assert classify(wrapped) is StorageFault.FULL
        not_ready = as_not_ready(wrapped, "converting a file")
    assert not_ready is not None
    assert str(not_ready) == (
        "state storage full: converting a file (PNG does not decode: write failed)"
    )


def test_a_conversion_error_alone_is_the_file_s() -> None:
    assert classify(ConversionError("PNG does not decode")) is None
    assert as_not_ready(ValueError("bug"), "x") is None


def test_a_cycle_in_the_context_chain_ends() -> None:
    a, b = ValueError("a"), ValueError("b")
    a.__context__, b.__context__ = b, a
    assert classify(a) is None


def test_storage_errors_turns_only_storage_faults_into_not_ready() -> None:
    with pytest.raises(StorageNotReadyError) as caught, storage_errors("recording"):
        raise OSError(errno.EROFS, "Read-only file system")
    assert caught.value.fault is StorageFault.READ_ONLY
    assert str(caught.value) == "state storage read-only: recording (Read-only file system)"
    with pytest.raises(KeyError), storage_errors("recording"):
        raise KeyError("x")
    with pytest.raises(sqlite3.IntegrityError), storage_errors("recording"):
        raise sqlite3.IntegrityError("UNIQUE constraint failed")
