"""Inbound C-STORE with custody: Success is answered only once the object is durably queued.

Per received object, in order: pynetdicom has streamed the data set into the spool's staging
folder (``listener/rxfiles.py``); we write a proper Part 10 file beside it (file meta from the
association: transfer syntax, SOP Class/Instance UID of the request, the product's implementation
class UID and version name (gateway.product), the caller's AE title as Source Application Entity
Title), check it with the same bounded structural
walk dropped DICOM files get, optionally let ``prepare`` coerce it from the worklist, and enqueue
it (fsync, rename, directory fsync, commit). Only then is 0x0000 returned.

Statuses (data, never exceptions): 0x0000 stored or already queued; 0xA700 queue full, or the
state storage below its low-water mark, full, read-only or failing (gateway.storagefault; the
modality keeps the object and retries, nothing is quarantined for it); 0xA900 data set does
not match the request; 0xC000 the object cannot be understood (kept in quarantine with the
reason) or an internal error.
No path is ever built from a DICOM value.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import struct
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import cast

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomFileLike
from pydicom.filewriter import write_file_meta_info
from pydicom.uid import UID
from pynetdicom import ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, evt
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.events import Event

from gateway import product
from gateway.convert.dicomcheck import check_part10
from gateway.convert.result import ConversionError, ConvertedObject
from gateway.ingest.intake import QuarantineLike, SpoolLike, report_merged
from gateway.listener.rxfiles import ReceiveFiles
from gateway.listener.services import ListenerService
from gateway.logsetup import event
from gateway.spool.entries import ObjectSource, SourceChannel
from gateway.spool.space import Room
from gateway.storagefault import StorageNotReadyError, as_not_ready
from gateway.worklist.binding import loggable_reason

KIND = "dicom-store"
SUCCESS, OUT_OF_RESOURCES, DATASET_MISMATCH, CANNOT_UNDERSTAND = 0x0000, 0xA700, 0xA900, 0xC000
# The data set itself is deflated in these: inflating is unbounded, so they are not offered.
DEFLATED_DATASET_SYNTAXES = {
    "1.2.840.10008.1.2.1.99",  # Deflated Explicit VR Little Endian
    "1.2.840.10008.1.2.4.95",  # JPIP Referenced Deflate
    "1.2.840.10008.1.2.4.205",  # JPIP HTJ2K Referenced Deflate
}
_UNCOMPRESSED = ("1.2.840.10008.1.2.1", "1.2.840.10008.1.2", "1.2.840.10008.1.2.2")
# pynetdicom picks, per context, the first of OUR syntaxes the caller proposed. Compressed ones
# come first: a modality proposing JPEG beside Implicit VR in one context holds the JPEG, and
# taking it passes the object through untouched instead of making the modality decode it.
STORAGE_SYNTAXES = (
    tuple(
        str(s)
        for s in ALL_TRANSFER_SYNTAXES
        if s not in DEFLATED_DATASET_SYNTAXES and s not in _UNCOMPRESSED
    )
    + _UNCOMPRESSED
)
# Every storage SOP class pynetdicom knows (170 in 3.0.4). Not StoragePresentationContexts:
# pynetdicom trims that list to 120 so that a *requestor* stays under the 128 contexts of one
# A-ASSOCIATE-RQ; an acceptor has no such limit, and the trimmed list refused Breast Projection
# X-Ray, Parametric Map, Extensible SR, Patient Radiation Dose SR and 46 others.
STORAGE_SOP_CLASSES = tuple(str(cx.abstract_syntax) for cx in AllStoragePresentationContexts)
# check_part10's reasons when the data set's UIDs differ from the request's (meta comes from it).
_MISMATCH_REASONS = {
    "meta SOP Instance UID differs from the dataset's SOP Instance UID",
    "meta SOP Class UID differs from the dataset's SOP Class UID",
}
_COPY_CHUNK = 1024 * 1024
_MAX_META_LENGTH = 64 * 1024
_ERROR_COMMENT_MAX = 64  # LO


@dataclass(frozen=True)
class Arrival:
    """How a received object came: the caller, its bytes' hash, when, from which address."""

    calling_ae: str
    sha256: str  # of the data set bytes as received (what a resend is recognised by)
    arrived_at: float  # seconds since the epoch
    peer_address: str | None = None


@dataclass(frozen=True)
class Admission:
    """What became of a received object: the C-STORE status to answer, and its queue id."""

    status: int  # SUCCESS, OUT_OF_RESOURCES, DATASET_MISMATCH or CANNOT_UNDERSTAND
    comment: str | None = None  # the Error Comment: why not (no patient data)
    object_id: int | None = None  # queued (or already queued) as this object
    duplicate: bool = False


class ReceivedFileError(ValueError):
    """pynetdicom's received file is not what it writes (preamble, DICM, meta group)."""


Prepare = Callable[[Path, Path], ConvertedObject | None]


class StoreReceiver:
    """The Storage SCP's C-STORE handler; thread-safe (one call per association at a time)."""

    def __init__(
        self,
        spool: SpoolLike,
        quarantine: QuarantineLike,
        *,
        prepare: Prepare | None,
        logger: logging.Logger,
    ) -> None:
        self._spool = spool
        self._quarantine = quarantine
        self._prepare = prepare
        self.log = logger
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()
        self._files = ReceiveFiles(spool.staging_path().parent)

    def service(self) -> ListenerService:
        """Storage SCP for every storage SOP class; received data sets land in staging."""
        self._files.install()
        return ListenerService(
            name="storage",
            sop_classes=STORAGE_SOP_CLASSES,
            transfer_syntaxes=STORAGE_SYNTAXES,
            handlers=((evt.EVT_C_STORE, self.handle),),
            on_association_end=self._files.release,
        )

    def stats(self) -> dict[str, int]:
        """Counts by outcome: stored, duplicate, full, mismatch, quarantined, errors."""
        with self._lock:
            return dict(self._counts)

    def handle(self, store: Event) -> Dataset:
        """EVT_C_STORE: the response status, never an exception (the listener survives)."""
        staged: list[Path] = []
        request = cast(C_STORE, store.request)
        sop_instance = str(request.AffectedSOPInstanceUID or "")
        try:
            return self._store(store, staged)
        except Exception as exc:
            not_ready = as_not_ready(exc, "storing a received object")
            if not_ready is not None:
                failed = self._storage_failed(not_ready, sop_instance)
            else:
                self.log.exception("C-STORE failed", extra={"sop_instance_uid": sop_instance})
                failed = self._answer(CANNOT_UNDERSTAND, "errors", sop_instance, "internal error")
            return _status(failed.status, failed.comment)
        finally:
            for path in staged:
                with contextlib.suppress(OSError):
                    path.unlink(missing_ok=True)  # enqueue or quarantine moved the ones kept

    def _store(self, store: Event, staged: list[Path]) -> Dataset:
        request = cast(C_STORE, store.request)
        sop_class = str(request.AffectedSOPClassUID or "")
        sop_instance = str(request.AffectedSOPInstanceUID or "")
        calling = str(store.assoc.requestor.ae_title or "").strip()
        cut = self._files.write_error(Path(store.dataset_path))
        if cut is not None:
            raise cut  # the data set did not fit on our disk: never the object's fault
        part10 = self._spool.staging_path()
        staged.append(part10)
        digest = write_part10(
            Path(store.dataset_path),
            part10,
            _meta(sop_class, sop_instance, str(store.context.transfer_syntax), calling),
        )
        arrival = Arrival(
            calling_ae=calling,
            sha256=digest,
            arrived_at=store.timestamp.timestamp(),
            peer_address=str(store.assoc.requestor.address or "") or None,
        )
        admission = self.admit(part10, sop_instance, arrival, staged)
        return _status(admission.status, admission.comment)

    def admit(
        self, part10: Path, sop_instance: str, arrival: Arrival, staged: list[Path]
    ) -> Admission:
        """Check, coerce and queue a received object written as ``part10`` in staging.

        The custody path of every C-STORE after its Part 10 file is written, and of a received
        object put back from quarantine (gateway.ingest.requeue): a file that fails the check
        goes to quarantine with the reason, and Success means it is durably queued. Files this
        makes in staging are appended to ``staged`` for the caller to remove.
        """
        source = f"dicom:{arrival.calling_ae}"
        try:
            facts = check_part10(part10)
        except ConversionError as exc:
            if as_not_ready(exc, "checking a received object") is not None:
                raise  # reading our own staging file failed: not the object's fault
            return self._reject(part10, source, sop_instance, exc.reason)
        room = self._spool.room_for(part10.stat().st_size)
        if not room.ok:
            return self._answer(OUT_OF_RESOURCES, "full", sop_instance, _room_comment(room))
        obj = ConvertedObject(
            path=part10,
            sop_class_uid=facts.sop_class_uid,
            sop_instance_uid=facts.sop_instance_uid,
            transfer_syntax_uid=facts.transfer_syntax_uid,
            study_instance_uid=facts.study_instance_uid,
            source_sha256=arrival.sha256,
            kind=KIND,
        )
        if self._prepare is not None:
            prepared = self._spool.staging_path()
            staged.append(prepared)
            changed = self._prepare(part10, prepared)
            if changed is not None:
                # Same received bytes, same source hash: a resend is a duplicate either way.
                obj = replace(changed, source_sha256=arrival.sha256, kind=KIND)
        origin = ObjectSource(
            channel=SourceChannel.DICOM,
            source=source,
            sha256=arrival.sha256,
            arrived_at=arrival.arrived_at,
            size=part10.stat().st_size,
            calling_ae=arrival.calling_ae,
            peer_address=arrival.peer_address,
        )
        result = self._spool.enqueue(obj, source, origin)
        with self._lock:
            self._counts["duplicate" if result.duplicate else "stored"] += 1
        event_name = "already queued" if result.duplicate else "stored"
        event(
            self.log,
            logging.INFO,
            event_name,
            object_id=result.object_id,
            sop_instance_uid=obj.sop_instance_uid,
            calling_ae=arrival.calling_ae,
            held=loggable_reason(obj.held_reason),  # the summary: the queue's may name IDs
        )
        report_merged(self.log, result, calling_ae=arrival.calling_ae)
        return Admission(SUCCESS, None, result.object_id, result.duplicate)

    def _reject(self, part10: Path, source: str, sop_instance: str, reason: str) -> Admission:
        mismatch = reason in _MISMATCH_REASONS
        try:
            self._quarantine.put(part10, source, f"received by C-STORE: {reason}")
        except Exception as exc:
            not_ready = as_not_ready(exc, "quarantining a received object")
            if not_ready is not None:  # not kept: the modality must keep it and send it again
                return self._storage_failed(not_ready, sop_instance)
            self.log.exception("quarantine failed", extra={"sop_instance_uid": sop_instance})
        if mismatch:
            return self._answer(DATASET_MISMATCH, "mismatch", sop_instance, reason)
        return self._answer(CANNOT_UNDERSTAND, "quarantined", sop_instance, reason)

    def _storage_failed(self, exc: StorageNotReadyError, sop_instance: str) -> Admission:
        """Our storage failed: Out of Resources, the modality keeps the object and retries."""
        self._spool.report_storage_fault(exc)
        return self._answer(OUT_OF_RESOURCES, "full", sop_instance, f"state storage {exc.fault}")

    def _answer(self, status: int, counter: str, sop_instance: str, reason: str) -> Admission:
        with self._lock:
            self._counts[counter] += 1
        event(
            self.log,
            logging.WARNING,
            "C-STORE refused",
            status=f"0x{status:04X}",
            reason=reason,
            sop_instance_uid=sop_instance,
        )
        return Admission(status, reason[:_ERROR_COMMENT_MAX])


def _room_comment(room: Room) -> str:
    """The Error Comment of a refusal for room: short, without the numbers."""
    return room.reason.split(" (", 1)[0] if room.disk else "queue full"


def _status(code: int, comment: str | None = None) -> Dataset:
    out = Dataset()
    out.Status = code
    if comment:
        out.ErrorComment = comment[:_ERROR_COMMENT_MAX]
    return out


def _meta(sop_class: str, sop_instance: str, syntax: str, calling: str) -> FileMetaDataset:
    meta = FileMetaDataset()
    meta.FileMetaInformationVersion = b"\x00\x01"
    meta.MediaStorageSOPClassUID = UID(sop_class)
    meta.MediaStorageSOPInstanceUID = UID(sop_instance)
    meta.TransferSyntaxUID = UID(syntax)
    meta.ImplementationClassUID = UID(product.IMPLEMENTATION_CLASS_UID)
    meta.ImplementationVersionName = product.IMPLEMENTATION_VERSION_NAME
    if calling:
        meta.SourceApplicationEntityTitle = calling[:16]
    return meta


def dataset_offset(received: Path) -> int:
    """Where the data set starts in a file pynetdicom wrote (preamble, DICM, meta group)."""
    with received.open("rb") as f:
        head = f.read(144)
    if len(head) < 144 or head[128:132] != b"DICM":
        raise ReceivedFileError("received file has no DICOM preamble")
    group, element, vr, vl, value = struct.unpack("<HH2sHL", head[132:144])
    if (group, element, vr, vl) != (0x0002, 0x0000, b"UL", 4) or value > _MAX_META_LENGTH:
        raise ReceivedFileError("received file has no File Meta group length")
    return 144 + int(value)


def dataset_digest(part10: Path) -> str:
    """SHA-256 of the data set bytes of a Part 10 file (what ``write_part10`` returns for it)."""
    digest = hashlib.sha256()
    with part10.open("rb") as src:
        src.seek(dataset_offset(part10))
        while chunk := src.read(_COPY_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def write_part10(received: Path, target: Path, meta: FileMetaDataset) -> str:
    """Write ``meta`` and the received data set to ``target``; SHA-256 of the data set bytes."""
    offset = dataset_offset(received)
    digest = hashlib.sha256()
    with received.open("rb") as src, target.open("xb") as dst:
        dst.write(b"\x00" * 128 + b"DICM")
        write_file_meta_info(DicomFileLike(dst), meta, enforce_standard=True)
        src.seek(offset)
        while chunk := src.read(_COPY_CHUNK):
            digest.update(chunk)
            dst.write(chunk)
    return digest.hexdigest()
