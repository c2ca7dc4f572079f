"""Reconciliation of held objects: list them, bind one to a worklist item or typed demographics,
or discard it with a reason. Every action is written to the audit log with who and when.

The CLI (``dicom-gateway held ...``) and the web API use this class; it decides nothing by
itself: the operator names the item or types the patient, and a binding is refused rather than
guessed (an accession number that matches two items is an error, not a choice).

Binding rewrites the held object's header (gateway.convert.coerce, reason CORRECT, the replaced
values kept in the Original Attributes Sequence when ``keep_original``) and releases it through
gateway.spool.rebind, which keeps the queue's crash safety. The SOP Instance UID is kept: the
instance was never sent, so it is still the same instance. A worklist binding gives the object
the item's Study Instance UID (apply_item).
"""

from __future__ import annotations

import datetime
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset

from gateway.audit import AuditLog
from gateway.clock import Clock
from gateway.convert.bindattrs import apply_demographics, apply_item
from gateway.convert.coerce import REASON_CORRECT, rewrite_part10
from gateway.convert.modules import check_identity
from gateway.convert.result import ConversionError
from gateway.identity import PatientIdentity
from gateway.spool.entries import ObjectInfo
from gateway.spool.rebind import HeldObjects, NotHeldError, check_reason
from gateway.spool.store import Spool
from gateway.worklist.item import WorklistItem
from gateway.worklist.lookup import WorklistLookup

# What ``show`` reads from a held object's header for the operator (display only, never logged).
SHOWN_ATTRIBUTES = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "AccessionNumber",
    "StudyDate",
    "StudyTime",
    "StudyDescription",
    "Modality",
    "SeriesDescription",
    "ContentDate",
    "ContentTime",
)
_SEXES = {"M", "F", "O"}


class ReconcileError(Exception):
    """An action was refused and nothing changed; the message is safe to show and to log."""


class ObjectNotHeldError(ReconcileError):
    """The object is unknown, or no longer held (released, sent or discarded): nothing to do."""


class ItemNotFoundError(ReconcileError):
    """No (unique) worklist item: refresh the worklist, or name the item by its key."""


class InvalidIdentityError(ReconcileError):
    """The typed demographics cannot be written as valid DICOM: correct them and try again."""


@dataclass(frozen=True)
class HeldView:
    """A held object for the operator: queue facts, what its header says, likely items."""

    info: ObjectInfo
    attributes: Mapping[str, str]  # keyword -> value as text, from SHOWN_ATTRIBUTES
    candidates: tuple[WorklistItem, ...]  # items sharing its accession number or patient ID


@dataclass(frozen=True)
class BindResult:
    """A held object that was bound and released."""

    object_id: int
    sop_instance_uid: str
    study_instance_uid: str
    deliveries: int  # deliveries moved from held to pending


class Reconciler:
    """Operator actions on held objects of one spool."""

    def __init__(
        self,
        spool: Spool,
        cache_lookup: WorklistLookup,
        audit: AuditLog,
        staging: Path,
        clock: Clock,
        *,
        keep_original: bool = True,
    ) -> None:
        self._held = HeldObjects(spool)
        self._cache = cache_lookup
        self._audit = audit
        self._staging = staging
        self._clock = clock
        self._keep_original = keep_original

    def list_held(self, limit: int = 100, offset: int = 0) -> list[ObjectInfo]:
        """Held objects, oldest first, each with its hold reason: ``limit`` from ``offset``."""
        return self._held.list_held(limit, offset)

    def count_held(self) -> int:
        """How many held objects there are in all (list_held pages through them)."""
        return self._held.count_held()

    def show(self, object_id: int) -> HeldView:
        """One held object with its header's patient/study values and candidate items."""
        info = self._get(object_id)
        assert info.payload is not None  # held objects always have their payload
        header = pydicom.dcmread(info.payload, stop_before_pixels=True, defer_size=4096)
        attributes = {k: str(header.get(k, "")) for k in SHOWN_ATTRIBUTES if k in header}
        found: dict[str, WorklistItem] = {}
        criteria: list[dict[str, str | None]] = [
            {"accession_number": attributes.get("AccessionNumber")},
            {"patient_id": attributes.get("PatientID")},
        ]
        # The valid values of an identity the file name half-gave: candidates the operator
        # may pick, never a binding (docs/reconciliation.md).
        for source in info.sources:
            criteria.append({"accession_number": source.hint_accession_number})
            criteria.append({"patient_id": source.hint_patient_id})
        for wanted in criteria:
            if not any(wanted.values()):
                continue
            for item in self._cache.find(**wanted):
                found.setdefault(item.key, item)
        return HeldView(info, attributes, tuple(found.values()))

    def bind_to_item(self, object_id: int, item_key: str, by: str) -> BindResult:
        """Bind to the worklist item with this key (WorklistItem.key) and release."""
        item = self._cache.get(item_key)
        if item is None:
            raise ItemNotFoundError(f"no worklist item {item_key!r} (unknown or expired)")
        return self._bind_item(object_id, item, by)

    def bind_to_accession(self, object_id: int, accession_number: str, by: str) -> BindResult:
        """Bind to the one worklist item with this accession number; refused when not unique."""
        items = self._cache.find(accession_number=accession_number) if accession_number else []
        if not items:
            raise ItemNotFoundError(f"no worklist item with accession number {accession_number!r}")
        if len(items) > 1:
            keys = ", ".join(i.key for i in items)
            raise ItemNotFoundError(
                f"accession number {accession_number!r} matches {len(items)} worklist items"
                f" ({keys}): bind by --item KEY"
            )
        return self._bind_item(object_id, items[0], by)

    def bind_to_demographics(
        self, object_id: int, identity: PatientIdentity, by: str
    ) -> BindResult:
        """Bind to demographics typed by the operator (patient ID required) and release."""
        validate_identity(identity)
        info = self._get(object_id)
        result = self._rewrite_and_release(
            info, lambda ds: apply_demographics(ds, identity), by, "operator demographics"
        )
        typed = [
            name
            for name, value in (
                ("patient_id", identity.patient_id),
                ("patient_name", identity.patient_name),
                ("birth_date", identity.birth_date),
                ("sex", identity.sex),
                ("accession_number", identity.accession_number),
            )
            if value
        ]
        # Which fields were typed, not their values: the audit log holds no patient data.
        self._audit.append(
            by,
            "held.bind_demographics",
            f"object:{object_id}",
            {
                "fields": typed,
                "accession_number": identity.accession_number or "",
                **_result_details(result),
            },
        )
        return result

    def discard(self, object_id: int, reason: str, by: str) -> Path:
        """Take a held object out of the queue with a reason; returns where its file is kept."""
        try:
            text = check_reason(reason)
            kept = self._held.discard(object_id, text, by)
        except NotHeldError as exc:
            raise ObjectNotHeldError(str(exc)) from None
        except ValueError as exc:
            raise ReconcileError(str(exc)) from None
        self._audit.append(
            by, "held.discard", f"object:{object_id}", {"reason": text, "kept": str(kept)}
        )
        return kept

    # -- helpers -----------------------------------------------------------------------------

    def _get(self, object_id: int) -> ObjectInfo:
        try:
            return self._held.get(object_id)
        except NotHeldError as exc:
            raise ObjectNotHeldError(str(exc)) from None

    def _bind_item(self, object_id: int, item: WorklistItem, by: str) -> BindResult:
        info = self._get(object_id)
        result = self._rewrite_and_release(
            info, lambda ds: apply_item(ds, item), by, f"worklist item {item.key}"
        )
        self._audit.append(
            by,
            "held.bind_item",
            f"object:{object_id}",
            {
                "item_key": item.key,
                "accession_number": item.accession_number,
                **_result_details(result),
            },
        )
        return result

    def _rewrite_and_release(
        self, info: ObjectInfo, apply: Callable[[Dataset], None], by: str, what: str
    ) -> BindResult:
        assert info.payload is not None  # held objects always have their payload
        staged = self._staging / f"{uuid.uuid4().hex}.dcm"
        try:
            facts = rewrite_part10(
                info.payload,
                staged,
                apply,
                reason=REASON_CORRECT,
                keep_original=self._keep_original,
                modified_at=self._clock.now(),
            )
        except BaseException:
            staged.unlink(missing_ok=True)
            raise
        try:
            released = self._held.rebind(info.object_id, staged, facts, by, what)
        except NotHeldError as exc:  # another operator acted since we looked
            raise ObjectNotHeldError(str(exc)) from None
        return BindResult(
            info.object_id, facts.sop_instance_uid, facts.study_instance_uid, released
        )


def validate_identity(identity: PatientIdentity) -> None:
    """InvalidIdentityError unless the demographics can be written (patient ID required)."""
    if not identity.patient_id or not identity.patient_id.strip():
        raise InvalidIdentityError("a patient ID is required")
    try:
        check_identity(identity)
    except ConversionError as exc:
        raise InvalidIdentityError(exc.reason) from None
    if identity.birth_date and not _is_da(identity.birth_date):
        raise InvalidIdentityError("birth date must be a date written YYYYMMDD")
    if identity.sex and identity.sex not in _SEXES:
        raise InvalidIdentityError("sex must be M, F or O")


def _is_da(text: str) -> bool:
    if len(text) != 8 or not text.isdigit():
        return False
    try:
        datetime.date(int(text[:4]), int(text[4:6]), int(text[6:]))
    except ValueError:
        return False
    return True


def _result_details(result: BindResult) -> dict[str, object]:
    return {
        "sop_instance_uid": result.sop_instance_uid,
        "study_instance_uid": result.study_instance_uid,
        "deliveries": result.deliveries,
    }
