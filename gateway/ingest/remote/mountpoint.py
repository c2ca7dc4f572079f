"""A mount target opened without following links, and what the kernel says about it.

The I/O half of the mount-target rules of gateway.ingest.remote.cifs, which judges purely.
:func:`open_target` walks the path from ``/`` one component at a time with
``openat(O_DIRECTORY | O_NOFOLLOW)``, so no symbolic link anywhere in it is followed, and keeps
the descriptors of the directory and of its parent. The judged directory is then used through
those descriptors, never through the path's text again:

* mounting goes through ``/proc/self/fd/N`` of the directory, handed to mount.cifs, which
  changes into it and mounts on ``.``: what was judged is what is mounted on, even if a
  component of the path is swapped for a link meanwhile;
* unmounting goes through ``/proc/self/fd/P/<name>`` with ``UMOUNT_NOFOLLOW``: the parent as
  judged, the last component not followed should it have become a link (the directory's own
  descriptor is closed first: an open descriptor keeps the mount busy);
* a directory is a mount point when its mount id (``/proc/self/fdinfo``) differs from its
  parent's, which also finds a bind mount of a folder of the same file system (same st_dev).

What remains between the judgement and the mount: a file the gateway puts in the folder after
it was seen empty is hidden by the mount until the unmount (the gateway's own file, nothing of
root's); a mount that root itself makes there meanwhile is mounted over.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from gateway.ingest.remote.cifs import MountEntry, TargetFacts, parse_mountinfo

_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_UMOUNT_NOFOLLOW = 8  # <sys/mount.h>: do not follow a link as the last component
MOUNTINFO = Path("/proc/self/mountinfo")


@dataclass
class OpenedTarget:
    """A target's facts, and the descriptors it was judged through (None when not opened)."""

    facts: TargetFacts
    fd: int | None = None
    parent_fd: int | None = None
    name: str = ""

    def mount_path(self) -> str:
        """The path to hand to mount.cifs: this very directory, whatever its path says now."""
        assert self.fd is not None
        return f"/proc/self/fd/{self.fd}"


@contextlib.contextmanager
def open_target(
    path: Path, mountinfo: Path = MOUNTINFO, make_as: tuple[int, int] | None = None
) -> Iterator[OpenedTarget]:
    """Open ``path`` without following any link, read its facts; close on leaving.

    With ``make_as`` (uid, gid), a missing last component is made in the parent as opened, as
    an empty folder of that owner, mode 0770 (as ``share mount`` made it before, but never a
    missing parent: only a leaf whose path the caller has already judged).
    """
    opened = OpenedTarget(TargetFacts())
    try:
        problem = _walk(path, opened, make_as)
        if problem is not None:
            opened.facts = TargetFacts(problem=problem)
        else:
            try:
                opened.facts = _facts(opened, mountinfo)
            except OSError as exc:  # a share gone bad, say: judged unusable, not a crash
                opened.facts = TargetFacts(problem=f"{path}: {exc.strerror or exc}")
        yield opened
    finally:
        for fd in (opened.fd, opened.parent_fd):
            if fd is not None:
                os.close(fd)


def unmount(opened: OpenedTarget) -> str | None:
    """Unmount what is mounted on the opened directory; None when done, else the error."""
    assert opened.fd is not None and opened.parent_fd is not None
    os.close(opened.fd)
    opened.fd = None
    libc = ctypes.CDLL(None, use_errno=True)
    where = f"/proc/self/fd/{opened.parent_fd}/{opened.name}".encode()
    if libc.umount2(where, _UMOUNT_NOFOLLOW) == 0:
        return None
    return os.strerror(ctypes.get_errno())


def _walk(path: Path, opened: OpenedTarget, make_as: tuple[int, int] | None) -> str | None:
    if not path.is_absolute():
        return f"{path} is not an absolute path"
    opened.fd = os.open("/", _FLAGS)
    here = Path("/")
    parts = path.parts[1:]
    for index, part in enumerate(parts):
        here = here / part
        try:
            child = os.open(part, _FLAGS, dir_fd=opened.fd)
        except FileNotFoundError as exc:
            if make_as is None or index != len(parts) - 1:
                return _why(here, part, opened.fd, exc)
            try:
                child = _make_folder(part, opened.fd, make_as)
            except OSError as made:
                return _why(here, part, opened.fd, made)
        except OSError as exc:
            return _why(here, part, opened.fd, exc)
        if opened.parent_fd is not None:
            os.close(opened.parent_fd)
        opened.parent_fd, opened.fd, opened.name = opened.fd, child, part
    return None


def _make_folder(name: str, parent_fd: int, owner: tuple[int, int]) -> int:
    os.mkdir(name, 0o700, dir_fd=parent_fd)
    fd = os.open(name, _FLAGS, dir_fd=parent_fd)
    try:
        # Mode first, while root owns it (no CAP_FOWNER needed), then the owner (CAP_CHOWN). No
        # set-group-id bit (the unit's RestrictSUIDSGID=): the share's dir_mode covers it.
        os.fchmod(fd, 0o770)
        os.fchown(fd, *owner)
    except OSError:
        os.close(fd)
        raise
    return fd


def _why(here: Path, part: str, parent_fd: int, exc: OSError) -> str:
    if exc.errno == errno.ENOENT:
        return f"{here} does not exist"
    if exc.errno in (errno.ELOOP, errno.ENOTDIR):
        with contextlib.suppress(OSError):
            if stat.S_ISLNK(os.stat(part, dir_fd=parent_fd, follow_symlinks=False).st_mode):
                return f"{here} is a symbolic link"
        return f"{here} is not a directory"
    return f"{here}: {exc.strerror}"


def _facts(opened: OpenedTarget, mountinfo: Path) -> TargetFacts:
    assert opened.fd is not None
    info = os.fstat(opened.fd)
    mount: MountEntry | None = None
    own_id = _mount_id(opened.fd)
    if opened.parent_fd is None or own_id != _mount_id(opened.parent_fd):
        text = mountinfo.read_text(encoding="utf-8", errors="replace")
        mount = next((m for m in parse_mountinfo(text) if m.mount_id == own_id), None)
        if mount is None:  # not listed: still a mount point, of something unknown
            mount = MountEntry(own_id, "?", "?", "?")
    # A share's own files are not listed. listdir, not Path.iterdir: by descriptor, not path.
    empty = mount is None and not os.listdir(opened.fd)  # noqa: PTH208
    return TargetFacts(owner_uid=info.st_uid, empty=empty, mount=mount)


def _mount_id(fd: int) -> int:
    for line in Path(f"/proc/self/fdinfo/{fd}").read_text(encoding="ascii").splitlines():
        key, _, value = line.partition(":")
        if key == "mnt_id":
            return int(value)
    raise OSError(errno.ENOTSUP, "no mnt_id in /proc/self/fdinfo (Linux 3.15 or later needed)")
