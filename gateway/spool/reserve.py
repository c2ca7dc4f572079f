"""The delivery reserve: space on the state file system kept back so a full disk cannot stop
delivery.

Why: in WAL mode SQLite appends every commit to the -wal file and a checkpoint may grow the
database file, so on a disk with no byte left even "mark this delivery sent" fails with
"database or disk is full" (and so does opening the queue, which must write the -shm file).
Sending is what frees space, so the spool keeps ``size`` bytes allocated in one file
(``spool/reserve``), and gives them back the moment a write of the queue meets a full disk:
the write is then retried and the deliveries go on, each one sent freeing its payload. The
file is made again once the disk has the room for it above the ingest low-water mark; while it
is missing, ingest counts its size as used (see :mod:`gateway.spool.space`).

The file is allocated for real (``posix_fallocate``, else written with zeros), not sparse: a
sparse file would reserve nothing.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

from gateway.spool.durable import synced_new_file

_CHUNK = 1024 * 1024


class DeliveryReserve:
    """One preallocated file of ``size`` bytes; ``size`` 0 disables it."""

    def __init__(self, path: Path, size: int) -> None:
        self.path = path
        self.size = size

    @property
    def in_place(self) -> bool:
        """True when the whole reserve is allocated (always, when disabled)."""
        if self.size <= 0:
            return True
        try:
            return self.path.stat().st_blocks * 512 >= self.size
        except FileNotFoundError:
            return False

    @property
    def missing(self) -> int:
        """Bytes of the reserve not in place now (0 when it is, or when disabled)."""
        return 0 if self.in_place else self.size

    def release(self) -> bool:
        """Give the space back; True when there was some to give."""
        if self.size <= 0:
            return False
        try:
            self.path.unlink()
        except FileNotFoundError:
            return False
        return True

    def make(self) -> None:
        """Allocate the file; raises OSError (ENOSPC...) and leaves no partial file then."""
        if self.size <= 0 or self.in_place:
            return
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        with synced_new_file(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC) as fd:
            try:
                os.posix_fallocate(fd, 0, self.size)
            except OSError as exc:
                if exc.errno not in _NO_FALLOCATE:
                    raise
                _write_zeros(fd, self.size)
        tmp.rename(self.path)


_NO_FALLOCATE = {errno.EOPNOTSUPP, errno.ENOTSUP, errno.EINVAL}  # some FUSE mounts, vfat


def _write_zeros(fd: int, size: int) -> None:
    block = b"\0" * _CHUNK
    left = size
    while left > 0:
        left -= os.write(fd, block[: min(left, _CHUNK)])
