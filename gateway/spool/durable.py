"""Crash-safe file operations: data reaches the flash before the name that points to it.

A rename is atomic, but after a power cut only what was fsync'd is certain: the file's data
must be synced before it is renamed into place, and the directory after, or the new name can
come back pointing at an empty or half-written file (or not come back at all).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

# fsync on a directory fd is refused with EINVAL by filesystems that cannot sync directories
# (some FUSE and network mounts); there is nothing more we can do there.
_DIR_SYNC_UNSUPPORTED = {errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP}
# os.link fails with these where hard links do not exist (vfat, some FUSE mounts).
_NO_HARD_LINKS = {errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK}


def fsync_file(path: Path) -> None:
    """Flush a file's data and metadata to the storage device."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: Path) -> None:
    """Flush a directory, so the names created, renamed or removed in it survive a power cut."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno not in _DIR_SYNC_UNSUPPORTED:
            raise
    finally:
        os.close(fd)


def temp_sibling(path: Path) -> Path:
    """A fresh name beside ``path`` (same directory, so a rename to ``path`` is atomic)."""
    return path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")


@contextlib.contextmanager
def synced_new_file(path: Path, flags: int) -> Iterator[int]:
    """Open ``path`` for writing (``flags`` as for os.open, mode 0o600) and give its descriptor.

    When the writing is done the data is synced and the file closed; if the writing or the sync
    fails, the file is closed and removed (a removal that fails is let be) and the error raised,
    so no partial file stays behind.
    """
    fd = os.open(path, flags, 0o600)
    try:
        yield fd
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(OSError):
            path.unlink()
        raise
    os.close(fd)


def write_bytes_durably(path: Path, data: bytes, mode: int | None = None) -> None:
    """Replace ``path`` with ``data``; readers and a power cut see the old or the whole new file.

    With ``mode`` the file has exactly those permissions from its creation on (the umask neither
    widens nor narrows them), so a private file is never readable by others, not even briefly.
    """

    def fill(tmp: Path) -> None:
        with _create(tmp, mode) as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())

    _replace_through_temp(path, fill)


def copy_durably(src: Path, dst: Path) -> None:
    """Replace ``dst`` with a copy of ``src``; a power cut leaves the old or the whole new file."""
    _replace_through_temp(dst, lambda tmp: synced_copy(src, tmp))


def _replace_through_temp(path: Path, fill: Callable[[Path], None]) -> None:
    # fill() writes and syncs a fresh sibling; only then is it renamed over path.
    tmp = temp_sibling(path)
    try:
        fill(tmp)
        tmp.replace(path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    fsync_dir(path.parent)


def synced_copy(src: Path, new: Path) -> None:
    """Copy ``src`` to the new file ``new`` (refused if it exists), its data synced."""
    with src.open("rb") as fin, new.open("xb") as fout:
        shutil.copyfileobj(fin, fout, 1 << 20)
        fout.flush()
        os.fsync(fout.fileno())


def _create(path: Path, mode: int | None) -> BinaryIO:
    if mode is None:
        return path.open("xb")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        os.fchmod(fd, mode)
    except BaseException:
        os.close(fd)
        raise
    return os.fdopen(fd, "wb")


def durable_replace(src: Path, dst: Path) -> None:
    """Rename ``src`` over ``dst`` (same filesystem) so that it survives a power cut.

    ``src``'s data is synced before the rename, then both directories after it.
    """
    fsync_file(src)
    src.replace(dst)
    fsync_dir(dst.parent)
    if src.parent.resolve() != dst.parent.resolve():
        fsync_dir(src.parent)


def durable_move(src: Path, dst: Path) -> None:
    """Move ``src`` to ``dst`` without overwriting it, durably, across filesystems if need be.

    Raises FileExistsError when ``dst`` exists. Across filesystems the data is first copied to a
    synced temporary file beside ``dst``; ``src`` is removed only once the new name is durable.
    """
    fsync_file(src)
    try:
        _place_without_replacing(src, dst)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
        _copy_then_remove(src, dst)
        return
    fsync_dir(dst.parent)  # the new name is durable before the old one goes
    linked = src.exists() and src.samefile(dst)
    if linked:
        src.unlink()
    if linked or src.parent.resolve() != dst.parent.resolve():
        fsync_dir(src.parent)


def _place_without_replacing(src: Path, dst: Path) -> None:
    """Give ``src``'s file the name ``dst`` (a hard link, or a rename), never replacing ``dst``."""
    try:
        os.link(src, dst)  # fails with FileExistsError instead of replacing: atomic no-clobber
    except OSError as exc:
        if exc.errno not in _NO_HARD_LINKS:
            raise
        # No hard links on this filesystem: check, then rename (a racing creator could still lose).
        if dst.exists():
            raise FileExistsError(errno.EEXIST, "destination exists", str(dst)) from None
        src.rename(dst)


def _copy_then_remove(src: Path, dst: Path) -> None:
    if dst.exists():
        raise FileExistsError(errno.EEXIST, "destination exists", str(dst))
    tmp = temp_sibling(dst)
    try:
        synced_copy(src, tmp)
        _place_without_replacing(tmp, dst)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    fsync_dir(dst.parent)
    src.unlink()
    fsync_dir(src.parent)


LOCK_FILE = "operator.lock"


@contextlib.contextmanager
def spool_lock(root: Path) -> Iterator[None]:
    """Exclusive lock between file-creating operator actions and recovery at open().

    Recovery removes files in objects/ that no row names; a rebind run from the CLI while the
    daemon starts could otherwise lose its new file between the rename and the commit. The
    daemon's Spool.open(recover=True) holds it while it recovers; rebind holds it from the rename
    into objects/ to its commit.
    """
    fd = os.open(root / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o640)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock
