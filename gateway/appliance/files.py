"""File effects of the appliance's boot steps: durable, owned, and under a root path.

Every path the steps touch is ``root / <absolute path>`` (:func:`under`), so a test runs the
same code against a fake root in a temporary folder. The rules, which make a power cut at any
instant leave either the old or the whole new state under every name:

* a file is written to a temporary sibling (gateway.spool.durable's ``temp_sibling`` name),
  given its mode and owner, synced, renamed over the name, and the folder synced;
* a folder is made the same way: a temporary sibling is made, given its mode and owner, synced
  and renamed into place, so a name never points at a folder with the wrong owner or mode (a
  cut between ``mkdir`` and ``chmod`` would otherwise leave one for good, since a folder that
  exists is left as it is: other parts may own it);
* what a cut leaves behind is only ever a temporary sibling; the next write of the same name
  (or the next :func:`ensure_dir` of the folder) removes those first.

Owners are looked up in ``<root>/etc/passwd`` and ``<root>/etc/group`` (the box's own
accounts, made by sysusers at image build), not through NSS: a fake root brings its own.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import stat
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from gateway.spool.durable import fsync_dir, temp_sibling

SERVICE_USER = "dicom-gateway"  # systemd/sysusers.d: the daemon's user and group


@dataclass(frozen=True)
class Owner:
    """A numeric owner for files the steps make."""

    uid: int
    gid: int


ROOT_OWNER = Owner(0, 0)


def under(root: Path, path: str | PurePosixPath) -> Path:
    """``path`` (absolute, as on the box) inside ``root``."""
    relative = PurePosixPath(path).relative_to("/")
    return root / relative


def _ids(table: str) -> dict[str, int]:
    """name -> id from passwd/group text (third field), ignoring malformed lines."""
    found: dict[str, int] = {}
    for line in table.splitlines():
        fields = line.split(":")
        if len(fields) >= 3 and fields[2].isdigit():
            found.setdefault(fields[0], int(fields[2]))
    return found


def lookup_owner(root: Path, user: str, group: str) -> Owner | None:
    """The ids of ``user``:``group`` in the root's account files, or None when either is absent."""
    try:
        users = _ids(under(root, "/etc/passwd").read_text(encoding="utf-8", errors="replace"))
        groups = _ids(under(root, "/etc/group").read_text(encoding="utf-8", errors="replace"))
    except FileNotFoundError:
        return None
    if user not in users or group not in groups:
        return None
    return Owner(users[user], groups[group])


def _stale_siblings(path: Path) -> list[Path]:
    """Temporary siblings of ``path`` a cut left behind (``temp_sibling``'s naming)."""
    if not path.parent.is_dir():
        return []
    return sorted(path.parent.glob(f".{path.name}.*.tmp"))


TEMP_NAME = re.compile(r"^\..+\.[0-9a-f]{32}\.tmp$")  # temp_sibling's names


def sweep_temporaries(folder: Path) -> list[Path]:
    """Remove every temporary sibling in ``folder`` (not below it); the ones removed.

    Only for folders no other process writes to while first boot runs (it runs before the
    daemon): there, a temporary file is what a cut left of a write by gateway.spool.durable
    (the configuration history, the panel's token and certificate), never read and never
    removed by anything else.
    """
    if not folder.is_dir():
        return []
    stale = sorted(p for p in folder.iterdir() if TEMP_NAME.match(p.name) and p.is_file())
    for leftover in stale:
        with contextlib.suppress(FileNotFoundError):
            leftover.unlink()
    if stale:
        fsync_dir(folder)
    return stale


def _sweep(path: Path) -> None:
    stale = _stale_siblings(path)
    for leftover in stale:
        if leftover.is_dir() and not leftover.is_symlink():
            shutil.rmtree(leftover)
        else:
            with contextlib.suppress(FileNotFoundError):
                leftover.unlink()
    if stale:
        fsync_dir(path.parent)


def ensure_dir(path: Path, mode: int, owner: Owner | None = None) -> bool:
    """Make ``path`` with exactly ``mode`` and ``owner`` if it is missing; True if made.

    A folder that exists is left as it is (its owner and mode may be another part's). Missing
    parents are made first, root's, 0755.
    """
    if path.is_dir():
        return False
    if not path.parent.is_dir():
        ensure_dir(path.parent, 0o755)
    _sweep(path)
    tmp = temp_sibling(path)
    tmp.mkdir(0o700)
    _own(tmp, mode, owner)
    fsync_dir(tmp)
    tmp.rename(path)
    fsync_dir(path.parent)
    return True


def write_file(
    path: Path, data: bytes, mode: int | None = 0o644, owner: Owner | None = None
) -> bool:
    """Replace ``path`` with ``data`` durably unless it already holds exactly that; True if written.

    ``mode`` None: no chmod at all (FAT, where the mount options decide and chmod fails).
    Mode and owner are set on the temporary file, before its name becomes ``path``. A file that
    already holds ``data`` only gets its mode and owner set again (a cut may have come between
    an earlier write and a chown of it), through the file opened without following a symbolic
    link: the steps run as root in folders the gateway's user can write, where a link put in
    place of the file must not hand root's chown and chmod to whatever it points at. A link (or
    anything but a regular file) under the name is replaced by the file, as a different content
    would be.
    """
    _sweep(path)
    current = _open_no_follow(path)
    if current is not None:
        try:
            st = os.fstat(current)
            if stat.S_ISREG(st.st_mode) and _read_all(current) == data:
                if mode is not None:
                    _own_open(current, st, mode, owner)
                return False
        finally:
            os.close(current)
    tmp = temp_sibling(path)
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600 if mode is None else mode)
        try:
            if mode is not None:
                os.fchmod(fd, mode)
                if owner is not None:
                    os.fchown(fd, owner.uid, owner.gid)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        tmp.replace(path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    fsync_dir(path.parent)
    return True


def remove_file(path: Path) -> bool:
    """Remove ``path`` durably; True if it was there."""
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    fsync_dir(path.parent)
    return True


def rename_file(src: Path, dst: Path) -> None:
    """Rename ``src`` over ``dst`` (same folder or filesystem) so that it survives a power cut."""
    src.replace(dst)
    fsync_dir(dst.parent)
    if src.parent != dst.parent:
        fsync_dir(src.parent)


def own_tree(path: Path, owner: Owner | None) -> None:
    """Give ``path`` and everything below it to ``owner`` (modes unchanged); None: leave as is."""
    if owner is None or not path.exists():
        return
    os.chown(path, owner.uid, owner.gid, follow_symlinks=False)
    if path.is_dir() and not path.is_symlink():
        for entry in sorted(path.rglob("*")):
            os.chown(entry, owner.uid, owner.gid, follow_symlinks=False)


def _open_no_follow(path: Path) -> int | None:
    """A read-only descriptor of ``path`` itself; None when it is missing, a symbolic link or
    a socket (then replaced like any other thing that is not the file).

    O_NONBLOCK: a FIFO put under the name must not hang the boot (no effect on files).
    """
    try:
        return os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        # O_NOFOLLOW's answer for a link; a socket cannot be opened (ENXIO, EOPNOTSUPP).
        if exc.errno in (errno.ELOOP, errno.ENXIO, errno.EOPNOTSUPP):
            return None
        raise


def _read_all(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, 1 << 16):
        chunks.append(chunk)
    return b"".join(chunks)


def _own_open(fd: int, st: os.stat_result, mode: int, owner: Owner | None) -> None:
    """Owner and mode of an open file (never of what a name points at)."""
    if owner is not None and (st.st_uid, st.st_gid) != (owner.uid, owner.gid):
        os.fchown(fd, owner.uid, owner.gid)
    if (st.st_mode & 0o7777) != mode:
        os.fchmod(fd, mode)


def _own(path: Path, mode: int, owner: Owner | None) -> None:
    """Owner and mode of ``path`` itself (a folder this module just made)."""
    fd = _open_no_follow(path)
    if fd is None:
        raise FileNotFoundError(errno.ENOENT, "missing, or a symbolic link", str(path))
    try:
        _own_open(fd, os.fstat(fd), mode, owner)
    finally:
        os.close(fd)
