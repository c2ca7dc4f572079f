"""Structured Reports for serial messages: content items and the SR modules around them.

Measurements become a Comprehensive SR (PS3.3 A.35.3) with an ad hoc tree, not a TID 1500
Measurement Report: TID 1500 is built for imaging measurements (it requires a Procedure
Reported, an Image Library, and measurement groups with Tracking Identifiers tied to image
regions), while a blood-gas analyser or a vital-signs monitor sends plain quantities with no
image. The tree here:

    CONTAINER (profile's document title), SEPARATE
      HAS OBS CONTEXT  Observer Type = Device, Device Observer UID/Name/Manufacturer/Model/Serial
      HAS OBS CONTEXT  Subject Class = Patient (who is the Patient module's: see below)
      CONTAINS NUM     one per mapped result: the profile's concept, the value as sent, UCUM unit
        HAS PROPERTIES TEXT  Comment "Device flags: ..." when the device flagged the result
      CONTAINS TEXT    Comment: every unmapped result and comment line, so nothing is dropped

No patient name or ID goes into the content tree: the Patient module carries them, and the
reconciliation of a held object rewrites that module only, so the tree must not repeat them.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence

import highdicom as hd
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence as DicomSequence

from gateway.convert.settings import ConvertSettings
from gateway.ingest.serial.message import Concept, Measurement
from gateway.worklist.item import WorklistItem

COMPREHENSIVE_SR = "1.2.840.10008.5.1.4.1.1.88.33"
SR_MODALITY = "SR"

_OBS = hd.sr.RelationshipTypeValues.HAS_OBS_CONTEXT
_CONTAINS = hd.sr.RelationshipTypeValues.CONTAINS
_PROPERTIES = hd.sr.RelationshipTypeValues.HAS_PROPERTIES

# PS3.16 DCM codes (CID 270, TID 1002/1004, TID 1006).
OBSERVER_TYPE = hd.sr.CodedConcept("121005", "DCM", "Observer Type")
DEVICE = hd.sr.CodedConcept("121007", "DCM", "Device")
SUBJECT_CLASS = hd.sr.CodedConcept("121024", "DCM", "Subject Class")
PATIENT = hd.sr.CodedConcept("121025", "DCM", "Patient")
COMMENT = hd.sr.CodedConcept("121106", "DCM", "Comment")

# PS3.5 6.2: DS is at most 16 bytes of a fixed or floating point decimal.
# ASCII digits only: Python's \d would also accept other scripts' digits, which DS does not.
_DS_RE = re.compile(r"^[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?$")
_DT_RE = re.compile(r"^[0-9]{4}([0-9]{2}){0,5}(\.[0-9]{1,6})?([+-][0-9]{4})?$")
# Characters UT may hold besides printable ones (PS3.5 6.1.3); others become U+FFFD.
_TEXT_CONTROLS = {"\r", "\n", "\t"}

# Attributes build_common writes for images and documents that no SR IOD has.
_NOT_IN_SR = (
    "ConversionType",
    "SecondaryCaptureDeviceManufacturer",
    "SecondaryCaptureDeviceSoftwareVersions",
    "BurnedInAnnotation",
    "RequestAttributesSequence",
)


def coded(concept: Concept) -> hd.sr.CodedConcept:
    """A profile concept as a coded entry."""
    return hd.sr.CodedConcept(concept.value, concept.scheme, concept.meaning)


def ucum(unit: str) -> hd.sr.CodedConcept:
    """A UCUM unit code as a coded entry (scheme "UCUM"; "1" is "no units" per PS3.16)."""
    return hd.sr.CodedConcept(unit, "UCUM", "no units" if unit == "1" else unit)


def is_decimal_string(value: str) -> bool:
    """True when ``value`` is a valid DS value as it stands (so it is kept exact)."""
    return len(value) <= 16 and _DS_RE.fullmatch(value) is not None and math.isfinite(float(value))


def clean_text(text: str) -> str:
    """Text for a UT value: line ends as CR LF; other controls and lone surrogates as U+FFFD."""
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    joined = "\r\n".join(line.rstrip() for line in lines).strip("\r\n")
    return "".join(c if c in _TEXT_CONTROLS or not _is_control(c) else "\ufffd" for c in joined)


def _is_control(char: str) -> bool:
    code = ord(char)
    # Lone surrogates (from a lenient decoder) cannot be encoded in any DICOM character set.
    return code < 0x20 or 0x7F <= code < 0xA0 or 0xD800 <= code <= 0xDFFF


def observation_context(
    settings: ConvertSettings, device_uid: str, device_name: str
) -> list[hd.sr.ContentItem]:
    """Device observer ([modality] identity) and subject class Patient, as HAS OBS CONTEXT."""
    device = hd.sr.DeviceObserverIdentifyingAttributes(
        uid=device_uid,
        name=device_name or None,
        manufacturer_name=settings.manufacturer or None,
        model_name=settings.model_name or None,
        serial_number=settings.device_serial_number or None,
    )
    observer = hd.sr.ObserverContext(observer_type=DEVICE, observer_identifying_attributes=device)
    subject = hd.sr.CodeContentItem(SUBJECT_CLASS, PATIENT, relationship_type=_OBS)
    return [*observer, subject]


def measurement_item(measurement: Measurement) -> hd.sr.ContentItem:
    """A NUM item with the value exactly as sent; a value that is no decimal becomes TEXT."""
    value = measurement.value.strip()
    if not is_decimal_string(value):
        # Kept, not guessed at: the device's text with what the profile says it measures.
        return hd.sr.TextContentItem(
            coded(measurement.concept),
            clean_text(f"{measurement.name}: {measurement.value} {measurement.unit}".strip()),
            relationship_type=_CONTAINS,
        )
    item = hd.sr.NumContentItem(
        coded(measurement.concept),
        float(value),
        ucum(measurement.unit),
        relationship_type=_CONTAINS,
    )
    measured = item.MeasuredValueSequence[0]
    # highdicom writes the float back as DS; the device's own text (e.g. "7.40") is the value.
    measured.NumericValue = value
    if "FloatingPointValue" in measured:
        del measured.FloatingPointValue
    notes = []
    if measurement.observed_at is not None:
        if _DT_RE.fullmatch(measurement.observed_at):
            item.add_new(0x0040A032, "DT", measurement.observed_at)  # Observation DateTime
        else:
            notes.append(f"Observed at: {measurement.observed_at}")
    if measurement.flags:
        notes.append("Device flags: " + " ".join(measurement.flags))
    if notes:
        item.ContentSequence = DicomSequence(
            [
                hd.sr.TextContentItem(COMMENT, clean_text(note), relationship_type=_PROPERTIES)
                for note in notes
            ]
        )
    return item


def text_items(text: str | None) -> list[hd.sr.ContentItem]:
    """One Comment TEXT item per non-blank line (unmapped results, comment records)."""
    if not text:
        return []
    lines = (clean_text(line) for line in text.replace("\r", "\n").split("\n"))
    return [
        hd.sr.TextContentItem(COMMENT, line, relationship_type=_CONTAINS) for line in lines if line
    ]


def add_sr_document(
    ds: Dataset,
    title: Concept,
    children: Iterable[Dataset],
    item: WorklistItem | None,
) -> None:
    """Turn a build_common dataset into an SR: series, document general and content modules.

    ``ds`` carries the patient, study, equipment and SOP common attributes, and Content
    Date/Time of when the device sent the message; ``children`` hang below the root CONTAINER.
    """
    for keyword in _NOT_IN_SR:
        if keyword in ds:
            delattr(ds, keyword)
    # SR Document Series
    ds.ReferencedPerformedProcedureStepSequence = DicomSequence()
    # SR Document General: the device's values are unverified by anyone.
    ds.CompletionFlag = "COMPLETE"
    ds.VerificationFlag = "UNVERIFIED"
    apply_sr_request(ds, item)
    # SR Document Content: the root item has no Relationship Type.
    root = hd.sr.ContainerContentItem(coded(title), is_content_continuous=False)
    ds.ValueType = root.ValueType
    ds.ConceptNameCodeSequence = root.ConceptNameCodeSequence
    ds.ContinuityOfContent = root.ContinuityOfContent
    ds.ContentSequence = DicomSequence(list(children))


def apply_sr_request(ds: Dataset, item: WorklistItem | None) -> None:
    """Referenced Request and Performed Procedure Code Sequences of an SR from the binding.

    IHE SWF: an SR carries the order in Referenced Request Sequence (where images carry
    Request Attributes Sequence). Unbound: no request (the attribute is 1C), no procedure code.
    """
    if "RequestAttributesSequence" in ds:
        del ds.RequestAttributesSequence
    if item is None:
        ds.PerformedProcedureCodeSequence = DicomSequence()
        if "ReferencedRequestSequence" in ds:
            del ds.ReferencedRequestSequence
        return
    request = Dataset()
    request.StudyInstanceUID = item.study_instance_uid or ds.StudyInstanceUID
    request.AccessionNumber = item.accession_number
    request.ReferencedStudySequence = DicomSequence()
    request.PlacerOrderNumberImagingServiceRequest = ""
    request.FillerOrderNumberImagingServiceRequest = ""
    request.RequestedProcedureID = item.requested_procedure_id
    request.RequestedProcedureDescription = item.requested_procedure_description
    request.RequestedProcedureCodeSequence = DicomSequence(_procedure_code(item))
    ds.ReferencedRequestSequence = DicomSequence([request])
    # What was performed is what was requested: the device has no procedure codes of its own.
    ds.PerformedProcedureCodeSequence = DicomSequence(_procedure_code(item))


def _procedure_code(item: WorklistItem) -> Sequence[Dataset]:
    code = item.requested_procedure_code
    if code is None:
        return []
    entry = Dataset()
    entry.CodeValue = code.value
    entry.CodingSchemeDesignator = code.scheme
    entry.CodeMeaning = code.meaning
    return [entry]
