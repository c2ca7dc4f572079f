"""Crash-safe file operations: data reaches the flash before the name that points to it.

A rename is atomic, but after a power cut only what was fsync'd is certain: the file's data
must be synced before it is renamed into place, and the directory after, or the new name can
come back pointing at an empty or half-written file (or not come back at all).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import functools
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
# renameat2(2) fails with these where RENAME_NOREPLACE is not offered: EINVAL from a filesystem
# without it, ENOSYS from a kernel older than 3.15.
_NO_RENAMEAT2 = {errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP}
_AT_FDCWD = -100
_RENAME_NOREPLACE = 1


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
        rename_noreplace(src, dst)  # one step: the name moves (the link fallback: both synced)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
        _copy_then_remove(src, dst)
        return
    fsync_dir(dst.parent)
    if src.parent.resolve() != dst.parent.resolve():
        fsync_dir(src.parent)


def rename_noreplace(src: Path, dst: Path) -> None:
    """Rename ``src`` to ``dst`` (same filesystem), never replacing ``dst``: not durable by itself.

    Raises FileExistsError when ``dst`` exists, whatever it is (a file, a folder, a dangling
    link), also when another process creates it at the same instant. In order of preference:

    * renameat2(RENAME_NOREPLACE): one atomic step, files and folders alike, and the watcher
      sees the same moved-in event as from a plain rename (ext4, tmpfs, vfat, btrfs, xfs);
    * where the filesystem or kernel lacks it, for a file: a hard link to ``dst`` (atomic, fails
      if the name exists), then ``src`` unlinked;
    * where neither exists (a folder there, or a filesystem without links): a look, then a
      rename. Only there could a creator racing between the two still lose its file.
    """
    try:
        _renameat2_noreplace(src, dst)
        return
    except OSError as exc:
        if exc.errno not in _NO_RENAMEAT2:
            raise
    if not src.is_dir() or src.is_symlink():
        try:
            os.link(src, dst, follow_symlinks=False)
        except OSError as exc:
            if exc.errno not in _NO_HARD_LINKS:
                raise
        else:
            src.unlink()
            return
    if os.path.lexists(dst):
        raise FileExistsError(errno.EEXIST, "destination exists", str(dst))
    src.rename(dst)


@functools.cache
def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def _renameat2_noreplace(src: Path, dst: Path) -> None:
    try:
        call = _libc().renameat2  # glibc 2.28 or newer (Debian 12: 2.36)
    except AttributeError:
        raise OSError(errno.ENOSYS, "renameat2 not in this C library") from None
    if call(_AT_FDCWD, os.fsencode(src), _AT_FDCWD, os.fsencode(dst), _RENAME_NOREPLACE) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code), str(src), None, str(dst))


def _copy_then_remove(src: Path, dst: Path) -> None:
    if dst.exists():
        raise FileExistsError(errno.EEXIST, "destination exists", str(dst))
    tmp = temp_sibling(dst)
    try:
        synced_copy(src, tmp)
        rename_noreplace(tmp, dst)
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
