"""Quarantined files for operators: list them, look at one, put one back through ingest.

Putting a file back (``requeue``) makes it arrive again, by the way it first came:

* **A drop-folder file** goes back into its drop folder under its own name (its sidecars
  first, so the file finds them when it settles). The folder watcher takes it as a new arrival:
  settle, bind, convert, queue, or quarantine again with the new reason. With the daemon
  stopped, it is taken at the next start.
* **An object received by C-STORE** (source ``dicom:<calling AE>``) goes through the
  receiver's custody path again (``StoreReceiver.admit``: check, worklist coercion when
  configured, enqueue), as the same caller's arrival with the same data set hash, so a copy
  already queued is recognised as a duplicate.
* **A device message** (serial) is not put back: a message is replayed by the device; the raw
  bytes stay in quarantine for support. Neither is a file whose reason was never written (its
  origin is unknown), nor a sidecar on its own (it goes back with its file).

Nothing is lost on the way: the quarantined copy is removed only once the file is durably back
in its drop folder, or durably queued, or durably quarantined again with its new reason
(``QuarantineDesk.requeue`` returns which). When the queue cannot take it now (full, storage
fault) it stays in quarantine as it was. Every requeue is audited (``quarantine requeue``) and
runs under the spool's operator lock, so recovery at a daemon start never mistakes an object
being queued for an orphan, and two operators cannot requeue the same file twice.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from pydicom.errors import InvalidDicomError
from pydicom.filereader import read_file_meta_info

from gateway.audit import AuditLog
from gateway.clock import Clock
from gateway.config import GatewayConfig
from gateway.ingest.intake import MALFORMED_SIDECAR, SIDECAR_OF_QUARANTINED
from gateway.ingest.quarantine import INTERRUPTED, Quarantine, QuarantinedFile, ident_of
from gateway.ingest.receiver import SUCCESS, Admission, Arrival, dataset_digest
from gateway.spool import durable
from gateway.spool.entries import SourceChannel
from gateway.spool.store import Spool

DICOM_SOURCE_PREFIX = "dicom:"
# The receiver's custody path for one staged Part 10 file (StoreReceiver.admit's signature).
Admit = Callable[[Path, str, Arrival, list[Path]], Admission]


class RequeueError(Exception):
    """The file cannot be put back (unknown id, not requeueable, its name is taken); why."""


@dataclass(frozen=True)
class QuarantineEntry:
    """One quarantined file as operators see it, and whether it can be put back."""

    file: QuarantinedFile
    channel: SourceChannel  # UNRECORDED: no reason file, or a source no longer configured
    not_requeueable: str | None  # None: requeue puts it back; else why not

    @property
    def ident(self) -> str:
        """The id to name it by on the command line and in the panel."""
        return self.file.ident


@dataclass(frozen=True)
class RequeueResult:
    """What a requeue did (``what`` is one sentence for the operator)."""

    ident: str
    channel: SourceChannel
    outcome: str  # "returned" (to its drop folder), "queued", "duplicate", "quarantined", "kept"
    what: str
    object_id: int | None = None

    @property
    def ok(self) -> bool:
        """True unless the file stayed in quarantine as it was (the queue could not take it)."""
        return self.outcome != "kept"


class QuarantineDesk:
    """Lists quarantined files and puts them back; shared by the CLI and the panel."""

    def __init__(
        self,
        quarantine: Quarantine,
        *,
        folders: Mapping[str, Path],
        serial_lines: Iterable[str],
        admit: Admit | None,
        staging_path: Callable[[], Path],
        spool_root: Path,
        audit: AuditLog,
        clock: Clock,
    ) -> None:
        self._quarantine = quarantine
        self._folders = dict(folders)
        self._serial = frozenset(serial_lines)
        self._admit = admit
        self._staging_path = staging_path
        self._spool_root = spool_root
        self._audit = audit
        self._clock = clock

    @classmethod
    def for_config(
        cls,
        config: GatewayConfig,
        quarantine: Quarantine,
        spool: Spool,
        admit: Admit | None,
        audit: AuditLog,
        clock: Clock,
    ) -> QuarantineDesk:
        """The desk for the sources ``config`` names (the daemon's and the CLI's alike)."""
        return cls(
            quarantine,
            folders={f.name: f.path for f in config.ingest.folder},
            serial_lines=[s.name for s in config.ingest.serial],
            admit=admit,
            staging_path=spool.staging_path,
            spool_root=spool.root,
            audit=audit,
            clock=clock,
        )

    def entries(self) -> list[QuarantineEntry]:
        """Every quarantined file, oldest first."""
        return [self._entry(item) for item in self._quarantine.list()]

    def find(self, ident: str) -> QuarantineEntry:
        """The file with id ``ident`` (RequeueError when there is none)."""
        item = self._quarantine.find(ident)
        if item is None:
            raise RequeueError(f"nothing in quarantine has the id {ident!r}")
        return self._entry(item)

    def counts(self) -> dict[SourceChannel, tuple[int, int]]:
        """Files and bytes in quarantine per channel (every channel present, 0 when none)."""
        out = dict.fromkeys(SourceChannel, (0, 0))
        for item in self._quarantine.list():
            files, size = out[self._channel(item)]
            out[self._channel(item)] = (files + 1, size + item.size)
        return out

    def requeue(self, ident: str, actor: str) -> RequeueResult:
        """Put the file back through ingest (module docstring); audited as ``actor``."""
        with durable.spool_lock(self._spool_root):
            entry = self.find(ident)  # again under the lock: another operator may have acted
            if entry.not_requeueable is not None:
                raise RequeueError(f"{ident}: {entry.not_requeueable}")
            if entry.channel is SourceChannel.FILE:
                result = self._return_to_folder(entry)
            else:
                result = self._receive_again(entry)
        details: dict[str, object] = {"outcome": result.outcome, "channel": str(entry.channel)}
        if result.object_id is not None:
            details["object_id"] = result.object_id
        self._audit.append(actor, "quarantine requeue", f"quarantine:{ident}", details)
        return result

    # -- classification ----------------------------------------------------------------------

    def _channel(self, item: QuarantinedFile) -> SourceChannel:
        if item.reason == INTERRUPTED or not item.source:
            return SourceChannel.UNRECORDED
        if item.source.startswith(DICOM_SOURCE_PREFIX):
            return SourceChannel.DICOM
        if item.source in self._folders:
            return SourceChannel.FILE
        if item.source in self._serial:
            return SourceChannel.SERIAL
        return SourceChannel.UNRECORDED

    def _entry(self, item: QuarantinedFile) -> QuarantineEntry:
        channel = self._channel(item)
        return QuarantineEntry(item, channel, self._why_not(item, channel))

    def _why_not(self, item: QuarantinedFile, channel: SourceChannel) -> str | None:
        if channel is SourceChannel.UNRECORDED:
            if item.reason == INTERRUPTED or not item.source:
                return "its origin was never recorded (the move was interrupted)"
            return f"its source {item.source!r} is not configured any more"
        if channel is SourceChannel.SERIAL:
            return "a device message is not put back: the device sends it again"
        if item.reason.startswith(SIDECAR_OF_QUARANTINED):
            file_name = item.reason.removeprefix(SIDECAR_OF_QUARANTINED)
            return f"a sidecar goes back with its file: requeue {ident_of(file_name)}"
        if item.reason.startswith(MALFORMED_SIDECAR):
            return "its file was queued (and held): correct the object with 'held bind'"
        if channel is SourceChannel.DICOM and self._admit is None:
            return "the DICOM listener's storage is not enabled"
        if channel is SourceChannel.FILE and not item.original:
            return "its drop-folder path was not recorded"
        return None

    # -- putting back ------------------------------------------------------------------------

    def _return_to_folder(self, entry: QuarantineEntry) -> RequeueResult:
        item = entry.file
        root = self._folders[item.source]
        target = _inside(root, Path(item.original))
        sidecars = [
            s
            for s in self._quarantine.list()
            if s.source == item.source and s.reason == SIDECAR_OF_QUARANTINED + item.path.name
        ]
        placed: list[tuple[QuarantinedFile, Path]] = []
        for sidecar in sidecars:
            placed.append((sidecar, _inside(root, Path(sidecar.original))))
        placed.append((item, target))
        taken = [str(where) for _, where in placed if where.exists()]
        if taken:
            raise RequeueError(f"{entry.ident}: the drop folder already has {', '.join(taken)}")
        for quarantined, where in placed:  # sidecars first: the file finds them when it settles
            _copy_into(quarantined.path, where)
            self._quarantine.remove(quarantined)
        return RequeueResult(
            entry.ident,
            entry.channel,
            "returned",
            f"put back into drop folder {item.source!r} as {target.relative_to(root)}; it is"
            " taken as a new arrival",
        )

    def _receive_again(self, entry: QuarantineEntry) -> RequeueResult:
        assert self._admit is not None  # _why_not refused it otherwise
        item = entry.file
        staged: list[Path] = []
        copy = self._staging_path()
        staged.append(copy)
        try:
            durable.synced_copy(item.path, copy)
            arrival = Arrival(
                calling_ae=item.source.removeprefix(DICOM_SOURCE_PREFIX),
                sha256=dataset_digest(copy),
                arrived_at=self._clock.now(),
            )
            admission = self._admit(copy, _sop_instance(copy), arrival, staged)
            # admit moved the copy away when it queued it or quarantined it again.
            taken = not copy.exists()
        finally:
            for path in staged:
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()  # enqueue or quarantine moved the one they kept
        if admission.status == SUCCESS:
            self._quarantine.remove(item)
            if admission.duplicate:
                what = f"already queued as object {admission.object_id}"
                return RequeueResult(
                    entry.ident, entry.channel, "duplicate", what, admission.object_id
                )
            what = f"queued as object {admission.object_id}"
            return RequeueResult(entry.ident, entry.channel, "queued", what, admission.object_id)
        if taken:
            # Refused again: admit quarantined the copy with the new reason.
            self._quarantine.remove(item)
            what = f"refused again ({admission.comment}); quarantined again with that reason"
            return RequeueResult(entry.ident, entry.channel, "quarantined", what)
        what = f"not queued now ({admission.comment or 'out of resources'}); it stays in quarantine"
        return RequeueResult(entry.ident, entry.channel, "kept", what)


def _sop_instance(part10: Path) -> str:
    """The SOP Instance UID its File Meta names (for the log), or "" when it cannot be read."""
    try:
        return str(read_file_meta_info(part10).get("MediaStorageSOPInstanceUID", ""))
    except (OSError, InvalidDicomError, ValueError):
        return ""


def _inside(root: Path, original: Path) -> Path:
    """Where a file dropped at ``original`` goes back: the same place when that is inside the
    drop folder ``root`` (no ``..``, no symlinked folder out of it), else ``root``/its name."""
    with contextlib.suppress(ValueError, OSError):
        relative = original.relative_to(root)
        inside = (root / relative).parent.resolve().is_relative_to(root.resolve())
        if inside and ".." not in relative.parts:
            return root / relative
    return root / original.name


def _copy_into(src: Path, dst: Path) -> None:
    """Copy ``src`` to the new name ``dst`` durably, never replacing a file (hidden until done:
    the watcher ignores dot names, so it never sees a half-written file).

    The file keeps its modification time: conversion dates the object and groups it into a
    study by it, so the file put back is the file as it was dropped.
    """
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = durable.temp_sibling(dst)
    try:
        durable.synced_copy(src, tmp)
        st = src.stat()
        os.utime(tmp, ns=(st.st_atime_ns, st.st_mtime_ns))
        durable.durable_move(tmp, dst)  # fsyncs the file (its times too) before the name
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
