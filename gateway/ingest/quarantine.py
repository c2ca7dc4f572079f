"""Files the gateway cannot take, moved aside with the reason, durably and never lost.

Layout of the quarantine folder (created 0700 on first use), one pair per file, both 0600::

    20250102T030405Z-7-<original basename>     the file, bytes unchanged (mode 0600)
    20250102T030405Z-7.reason.json             why, from which source, size, sha256, when

The id ``<UTC time>-<counter>`` is unique in the folder, also between processes (the daemon and
a ``dicom-gateway quarantine requeue`` beside it each count from 1): an id is claimed by
creating its temporary reason file ``.<id>.reason.tmp`` exclusively, and is skipped when that
claim fails or its reason file already exists (an earlier run, a clock that went back, another
process at work on it). A claim left by a crash is never taken over, so its id stays unused;
the reason file is published without replacing one. The reason file's name holds digits only
between its dashes, so no quarantined file can pose as one.

Order of a move: the id is claimed, the file placed (a hard link when the quarantine is on the
same filesystem and the file has no other name, else an exclusive copy that keeps its
modification time), fsync'd with its directory, the reason file written and fsync'd, and only
then is the original unlinked. A failure before that point removes our half of the work and
raises, leaving the original where it was, mode included. A link shares the file's mode, so the
quarantined file is made 0600 only once the original name is gone and it is the only name: a
chmod before that would change the dropped file, and every other name of it, too.
"""

from __future__ import annotations

import builtins
import contextlib
import errno
import hashlib
import json
import os
import re
import stat
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.clock import Clock
from gateway.spool.durable import synced_new_file

REASON_SUFFIX = ".reason.json"
REASON_RE = re.compile(r"^(\d{8}T\d{6}Z-\d+)\.reason\.json$")
_IDENT_RE = re.compile(r"^(\d{8}T\d{6}Z-\d+)-")
MAX_BASENAME_BYTES = 200  # the id and dash take the rest of NAME_MAX (255)
CHUNK = 1 << 20
MAX_REASON_BYTES = 64 * 1024
INTERRUPTED = "interrupted before its reason was recorded"
FILE_MODE = 0o600  # a quarantined file, linked or copied (the folder is 0700)
# What os.link raises where a hard link cannot be made (another filesystem, a filesystem or a
# file that forbids them, too many links): the file is copied, the reason renamed instead.
_NO_LINK = (errno.EXDEV, errno.EPERM, errno.ENOTSUP, errno.EMLINK, errno.EACCES)
_CLAIM_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW


class SourceChangedError(OSError):
    """The file changed while it was being copied aside; nothing was moved, try again later."""


@dataclass(frozen=True)
class QuarantinedFile:
    """One file in quarantine, as the operator sees it."""

    path: Path
    reason: str
    source: str
    time: float  # seconds since the epoch
    size: int
    original: str = ""  # where it was dropped
    sha256: str = ""

    @property
    def ident(self) -> str:
        """The id operators name it by (``<UTC time>-<counter>``; a stray file: its name)."""
        return ident_of(self.path.name)


def ident_of(name: str) -> str:
    """The id in a quarantined file's name ``<id>-<original name>`` (else the name itself)."""
    match = _IDENT_RE.match(name)
    return match.group(1) if match else name


class Quarantine:
    """Moves rejected files into one folder with a JSON reason beside each; thread-safe."""

    def __init__(self, folder: Path, clock: Clock) -> None:
        self.folder = Path(folder)
        self.clock = clock
        self._lock = threading.Lock()
        self._counter = 0

    def put(self, path: Path, source: str, reason: str) -> Path:
        """Move ``path`` into quarantine with ``reason``; return where it is now."""
        path = Path(path)
        with self._lock:
            before = path.lstat()
            if not stat.S_ISREG(before.st_mode):
                raise ValueError("only regular files are quarantined")
            self._make_folder()
            when = self.clock.now()
            ident, target, size, digest = self._place(path, time.gmtime(when))
            reason_file = self.folder / f"{ident}{REASON_SUFFIX}"
            claim = _claim_path(self.folder, ident)
            published = False  # whether reason_file is ours to remove on the way back
            try:
                _check_unchanged(path, before)
                _fsync_dir(self.folder)
                record = {
                    "reason": reason,
                    "source": source,
                    "original_path": str(path),
                    "file": target.name,
                    "size": size,
                    "sha256": digest,
                    "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(when)),
                    "epoch": when,
                }
                self._write_reason(claim, record)
                _publish(claim, reason_file)
                published = True
                _fsync_dir(self.folder)
            except BaseException:
                # A reason file we did not publish (FileExistsError: another writer's, despite
                # the claim, e.g. an older CLI beside this daemon) is never ours to remove.
                self._undo(target, reason_file if published else None, claim)
                raise
            self._remove_original(path, target, reason_file)
            _make_private(target)
            return target

    def list(self) -> builtins.list[QuarantinedFile]:
        """Everything in quarantine, oldest first, also files whose reason was never written."""
        try:
            names = sorted(p.name for p in self.folder.iterdir())
        except FileNotFoundError:
            return []
        out: builtins.list[QuarantinedFile] = []
        claimed: set[str] = set()
        for name in names:
            match = REASON_RE.match(name)
            if match is None:
                continue
            item = self._read_reason(match.group(1), self.folder / name)
            if item is not None:
                claimed.add(item.path.name)
                out.append(item)
        for name in names:
            if name in claimed or REASON_RE.match(name) or name.startswith("."):
                continue
            with contextlib.suppress(FileNotFoundError):
                st = (self.folder / name).lstat()
                if stat.S_ISREG(st.st_mode):
                    out.append(
                        QuarantinedFile(
                            self.folder / name, INTERRUPTED, "", st.st_mtime, st.st_size
                        )
                    )
        return sorted(out, key=lambda q: (q.time, q.path.name))

    def find(self, ident: str) -> QuarantinedFile | None:
        """The file with id ``ident``, or None."""
        return next((item for item in self.list() if item.ident == ident), None)

    def remove(self, item: QuarantinedFile) -> None:
        """Take ``item`` out of quarantine for good (it was put back): reason first, then file.

        A crash between the two leaves the file without its reason, listed as interrupted:
        never a reason that names a file which is gone.
        """
        with self._lock:
            with contextlib.suppress(FileNotFoundError):
                (self.folder / f"{item.ident}{REASON_SUFFIX}").unlink()
            _fsync_dir(self.folder)
            with contextlib.suppress(FileNotFoundError):
                item.path.unlink()
            _fsync_dir(self.folder)

    # --- placing ------------------------------------------------------------------------------

    def _make_folder(self) -> None:
        if self.folder.is_dir():
            return
        self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        _fsync_dir(self.folder.parent)

    def _place(self, path: Path, utc: time.struct_time) -> tuple[str, Path, int, str]:
        """Put a copy of ``path`` under a new id; return id, target, size and sha256."""
        stamp = time.strftime("%Y%m%dT%H%M%SZ", utc)
        basename = _bounded_name(path.name)
        while True:
            self._counter += 1
            ident = f"{stamp}-{self._counter}"
            claim = _claim_path(self.folder, ident)
            try:
                os.close(
                    os.open(claim, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
                )
            except FileExistsError:
                continue  # another process's id, or a crash's leftover: never taken over
            # Checked after the claim: a reason published before it is seen here, and one
            # published after it cannot be, for its writer would have held the claim.
            if (self.folder / f"{ident}{REASON_SUFFIX}").exists():
                claim.unlink()
                continue
            target = self.folder / f"{ident}-{basename}"
            try:
                size, digest = _link_or_copy(path, target)
            except FileExistsError:
                claim.unlink()
                continue
            except BaseException:
                with contextlib.suppress(OSError):
                    claim.unlink()
                raise
            return ident, target, size, digest

    def _write_reason(self, claim: Path, record: dict[str, Any]) -> None:
        """Write the reason into the claimed temporary file, fsync'd (published by the caller)."""
        data = json.dumps(record, indent=2, ensure_ascii=True).encode("ascii") + b"\n"
        fd = os.open(claim, os.O_WRONLY | os.O_TRUNC | os.O_NOFOLLOW)
        try:
            _write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)

    def _remove_original(self, path: Path, target: Path, reason_file: Path) -> None:
        try:
            path.unlink()
        except FileNotFoundError:
            return  # someone else removed it: our copy is now the only one, so it stays
        except BaseException:
            self._undo(target, reason_file)  # the original is still there: one copy, not two
            raise
        # Not durable yet if this fails; after a power cut the file would then reappear and be
        # quarantined a second time, which loses nothing, so this must not undo the move.
        with contextlib.suppress(OSError):
            _fsync_dir(path.parent)

    def _undo(self, target: Path, reason_file: Path | None, claim: Path | None = None) -> None:
        for leftover in (reason_file, target, claim):
            if leftover is None:
                continue
            with contextlib.suppress(OSError):
                leftover.unlink()
        with contextlib.suppress(OSError):
            _fsync_dir(self.folder)

    def _read_reason(self, ident: str, reason_path: Path) -> QuarantinedFile | None:
        try:
            with reason_path.open("rb") as handle:
                raw = handle.read(MAX_REASON_BYTES + 1)
            record = json.loads(raw) if len(raw) <= MAX_REASON_BYTES else None
        except (OSError, ValueError):
            return None
        if not isinstance(record, dict):
            return None
        name = record.get("file")
        if not isinstance(name, str) or "/" in name or not name.startswith(f"{ident}-"):
            return None
        epoch = record.get("epoch")
        size = record.get("size")
        return QuarantinedFile(
            path=self.folder / name,
            reason=str(record.get("reason", "")),
            source=str(record.get("source", "")),
            time=float(epoch) if isinstance(epoch, int | float) else 0.0,
            size=size if isinstance(size, int) else 0,
            original=str(record.get("original_path", "")),
            sha256=str(record.get("sha256", "")),
        )


def _bounded_name(name: str) -> str:
    """The basename, shortened (extension kept) to fit a file name after the id."""
    if len(os.fsencode(name)) <= MAX_BASENAME_BYTES:
        return name
    stem, dot, ext = name.rpartition(".")
    if not dot or len(os.fsencode(ext)) > 16:
        stem, ext = name, ""
    suffix = f".{ext}" if ext else ""
    while stem and len(os.fsencode(stem + suffix)) > MAX_BASENAME_BYTES:
        stem = stem[:-1]
    return stem + suffix


def _claim_path(folder: Path, ident: str) -> Path:
    """The temporary reason file whose exclusive creation claims ``ident`` (a dot file)."""
    return folder / f".{ident}.reason.tmp"


def _publish(temp: Path, reason_file: Path) -> None:
    """Give ``temp`` the name ``reason_file`` without ever replacing an existing file."""
    try:
        os.link(temp, reason_file, follow_symlinks=False)
    except OSError as exc:
        if exc.errno not in _NO_LINK:
            raise  # FileExistsError included: someone else's reason, which must stay
        # No hard links here: the claim already made the name ours.
        temp.rename(reason_file)
        return
    temp.unlink()


def _link_or_copy(source: Path, target: Path) -> tuple[int, str]:
    """Create ``target`` with the bytes of ``source``, fsync'd; never replace an existing file.

    A hard link only when ``source`` has no other name and we may later make the link private
    (our own file, or we are root): its mode is shared with every name, so the link is made
    0600 only when it is the only one (:func:`_make_private`). Otherwise a copy.
    """
    st = source.lstat()
    euid = os.geteuid()
    if st.st_nlink != 1 or euid not in (0, st.st_uid):
        return _copy_exclusive(source, target)
    try:
        os.link(source, target, follow_symlinks=False)
    except FileExistsError:
        raise
    except OSError as exc:
        if exc.errno not in _NO_LINK:
            raise
        return _copy_exclusive(source, target)
    try:
        if target.lstat().st_nlink != 2:  # a name added since the look above: copy after all
            target.unlink()
            return _copy_exclusive(source, target)
        return _hash_and_fsync(target)
    except BaseException:
        with contextlib.suppress(OSError):
            target.unlink()
        raise


def _make_private(target: Path) -> None:
    """Make the quarantined file 0600 once the dropped name is gone (a copy already is)."""
    # The move is done whatever happens here (the folder is 0700 in any case), so a failure
    # must not raise as if it had not been.
    with contextlib.suppress(OSError):
        if target.lstat().st_nlink == 1:
            target.chmod(FILE_MODE)


def _hash_and_fsync(path: Path) -> tuple[int, str]:
    digest = hashlib.sha256()
    size = 0
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    try:
        while chunk := os.read(fd, CHUNK):
            digest.update(chunk)
            size += len(chunk)
        os.fsync(fd)
    finally:
        os.close(fd)
    return size, digest.hexdigest()


def _copy_exclusive(source: Path, target: Path) -> tuple[int, str]:
    digest = hashlib.sha256()
    size = 0
    src = os.open(source, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    try:
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
        with synced_new_file(target, flags) as dst:
            while chunk := os.read(src, CHUNK):
                digest.update(chunk)
                size += len(chunk)
                _write_all(dst, chunk)
            # Its modification time too, as a hard link keeps it: a requeue puts the file back
            # as it was dropped (conversion dates it and groups its study by it).
            st = os.fstat(src)
            os.utime(dst, ns=(st.st_atime_ns, st.st_mtime_ns))
    finally:
        os.close(src)
    return size, digest.hexdigest()


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _check_unchanged(path: Path, before: os.stat_result) -> None:
    after = path.lstat()
    if (after.st_ino, after.st_size, after.st_mtime_ns) != (
        before.st_ino,
        before.st_size,
        before.st_mtime_ns,
    ):
        raise SourceChangedError(errno.EAGAIN, "file changed while being quarantined")


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
