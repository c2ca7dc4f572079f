"""Worklist coercion of objects received by C-STORE ([dicom_listener] coerce_from_worklist).

A DICOM-capable modality already wrote a patient into its objects. Its Accession Number and
Patient ID are judged by the binding rules (gateway.worklist.keys: each key looked up on its
own). When they name exactly one worklist step and agree with it, the step's patient and order
attributes are written in, the replaced values kept in Original Attributes Sequence. When they
match nothing the object goes on as it came: its own identity is the modality's, not a guess.
When they are ambiguous, or contradict the worklist (an accession scheduled for another patient
than the object's Patient ID), it is held with the reason, unchanged.

Without coerce_from_worklist the listener does not consult the worklist at all (docs/
assumptions.md says why): this hook is not installed.
"""

from __future__ import annotations

from pathlib import Path

from pydicom import dcmread
from pydicom.dataset import Dataset

from gateway.convert.bindattrs import apply_item
from gateway.convert.coerce import rewrite_part10
from gateway.convert.result import ConvertedObject
from gateway.identity import PatientIdentity
from gateway.worklist.binding import HELD_NO_IDENTITY, Binder

MODIFYING_REASON = "COERCE"
CARRIER = "received object"  # how held reasons name where the identity came from


class WorklistCoercion:
    """The StoreReceiver's ``prepare`` hook: bind a received object to its worklist step."""

    def __init__(self, binder: Binder) -> None:
        # The binder must not require a match (an unmatched object keeps its own identity) and
        # must not apply the room's selected procedure (that is for the legacy device's files).
        self._binder = binder

    def __call__(self, src: Path, dst: Path) -> ConvertedObject | None:
        """Write the coerced object to ``dst``; None when it goes on unchanged."""
        header = dcmread(src, stop_before_pixels=True, specific_tags=_IDENTITY_TAGS)
        identity = PatientIdentity(
            patient_id=_text(header, "PatientID"),
            patient_name=_text(header, "PatientName"),
            accession_number=_text(header, "AccessionNumber"),
        )
        if not (identity.patient_id or identity.accession_number):
            return None
        binding = self._binder.bind(identity, None, carrier=CARRIER)
        if binding.held_reason == HELD_NO_IDENTITY:
            # No step names it and it has no Patient ID (Type 2, may be empty): the rule that a
            # created object needs one is not the modality's; its object goes on as it came.
            return None
        if binding.held_reason is not None:
            return _held(src, header, binding.held_reason)
        if binding.item is None:
            return None  # nothing in the worklist names it: the modality's identity stands
        item = binding.item
        facts = rewrite_part10(
            src, dst, lambda ds: apply_item(ds, item), reason=MODIFYING_REASON, keep_original=True
        )
        return ConvertedObject(
            path=dst,
            sop_class_uid=facts.sop_class_uid,
            sop_instance_uid=facts.sop_instance_uid,
            transfer_syntax_uid=facts.transfer_syntax_uid,
            study_instance_uid=facts.study_instance_uid,
            source_sha256="",  # the receiver fills in the hash of what it received
            kind="dicom",
        )


_IDENTITY_TAGS = [
    "SOPClassUID",
    "SOPInstanceUID",
    "StudyInstanceUID",
    "PatientID",
    "PatientName",
    "AccessionNumber",
    "SpecificCharacterSet",
]


def _text(ds: Dataset, keyword: str) -> str | None:
    value = ds.get(keyword)
    text = str(value).strip() if value is not None else ""
    return text or None


def _held(src: Path, header: Dataset, reason: str) -> ConvertedObject:
    return ConvertedObject(
        path=src,
        sop_class_uid=str(header.SOPClassUID),
        sop_instance_uid=str(header.SOPInstanceUID),
        transfer_syntax_uid=str(header.file_meta.TransferSyntaxUID),
        study_instance_uid=str(header.get("StudyInstanceUID", "")),
        source_sha256="",
        kind="dicom",
        held_reason=reason,
    )
