"""Attributes every created object shares: patient, study, series, equipment, SOP common.

PS3.3 modules C.7.1.1 Patient, C.7.2.1 General Study, C.7.3.1 General Series, C.7.5.1 General
Equipment, C.8.6.1 SC Equipment and C.12.1 SOP Common, filled from the settings, the patient
identity and the study assignment. Dates and times come from the source file's modification time
(local time), never from "now", so converting the same input twice gives the same bytes.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filewriter import dcmwrite
from pydicom.sequence import Sequence
from pydicom.uid import UID

import gateway
from gateway import product
from gateway.convert.bindattrs import apply_demographics, apply_item
from gateway.convert.grouping import StudyAssignment
from gateway.convert.result import ConversionError
from gateway.convert.settings import ConvertSettings
from gateway.identity import PatientIdentity
from gateway.worklist.item import WorklistItem

UTF8_CHARSET = "ISO_IR 192"
_TEXT_VRS = {"AE", "CS", "DA", "DS", "DT", "IS", "LO", "LT", "PN", "SH", "ST", "TM", "UC", "UT"}

# Conversion Type (0008,0064): "DI", digital interface. The device hands the gateway its own
# digital output files, which is neither a capture of a workstation screen (WSD) nor a scan
# (SD/SI); the gateway only re-wraps what the device produced.
CONVERSION_TYPE = "DI"

# Burned In Annotation (0028,0301): "YES". Screens, exports and reports of legacy devices
# routinely carry the patient's name and dates in the pixels or text, and the gateway cannot
# look. Saying "NO" wrongly would mislead de-identification downstream; "YES" is the safe claim.
BURNED_IN_ANNOTATION = "YES"


@dataclass(frozen=True)
class ObjectIds:
    """The identifiers of one created object."""

    sop_class_uid: str
    sop_instance_uid: str
    assignment: StudyAssignment
    source_sha256: str


def dicom_date_time(epoch: float) -> tuple[str, str]:
    """(DA, TM) of an epoch time in local time."""
    local = time.localtime(epoch)
    return time.strftime("%Y%m%d", local), time.strftime("%H%M%S", local)


def check_identity(identity: PatientIdentity) -> None:
    """ConversionError when the identity cannot be written as valid DICOM values.

    The reason never repeats the value: reasons reach logs, patient data must not.
    """
    _check_string("patient ID", identity.patient_id, 64)
    _check_string("accession number", identity.accession_number, 16)
    name = identity.patient_name
    if name is None:
        return
    _check_string("patient name", name, 64 * 3 + 2)
    groups = name.split("=")
    if len(groups) > 3:
        raise ConversionError("patient name has more than three component groups")
    for group in groups:
        if len(group) > 64:
            raise ConversionError("patient name component group longer than 64 characters")
        if group.count("^") > 4:
            raise ConversionError("patient name has more than five components")


def _check_string(label: str, value: str | None, max_chars: int) -> None:
    if value is None:
        return
    if len(value) > max_chars:
        raise ConversionError(f"{label} longer than {max_chars} characters")
    if any(c == "\\" or ord(c) < 0x20 or c == "\x7f" for c in value):
        raise ConversionError(f"{label} contains '\\' or control characters")


def build_common(
    settings: ConvertSettings,
    identity: PatientIdentity,
    ids: ObjectIds,
    modality: str,
    content_time: float,
    item: WorklistItem | None = None,
) -> Dataset:
    """A dataset with the modules shared by every object the gateway creates.

    Bound to a worklist ``item``: the Patient module, study identity, order and Request
    Attributes Sequence come from it (:func:`gateway.convert.bindattrs.apply_item`); else the
    patient module and accession come from ``identity``.
    """
    check_identity(identity)
    ds = Dataset()
    # SOP Common
    ds.SOPClassUID = ids.sop_class_uid
    ds.SOPInstanceUID = ids.sop_instance_uid
    # General Study
    study_date, study_time = dicom_date_time(ids.assignment.study_time)
    ds.StudyInstanceUID = ids.assignment.study_instance_uid  # the item's, when it has one
    ds.StudyDate = study_date
    ds.StudyTime = study_time
    ds.ReferringPhysicianName = ""
    ds.StudyID = ids.assignment.study_id
    # Patient module and order: from the worklist step, else from the identity.
    if item is None:
        apply_demographics(ds, identity)
    else:
        apply_item(ds, item)
    # General Series / Encapsulated Document Series
    ds.Modality = modality
    ds.SeriesInstanceUID = ids.assignment.series_instance_uid
    ds.SeriesNumber = ids.assignment.series_number
    ds.SeriesDate = study_date
    ds.SeriesTime = study_time
    # General Equipment
    ds.Manufacturer = settings.manufacturer
    if settings.institution_name:
        ds.InstitutionName = settings.institution_name
    if settings.station_name:
        ds.StationName = settings.station_name
    if settings.model_name:
        ds.ManufacturerModelName = settings.model_name
    if settings.device_serial_number:
        ds.DeviceSerialNumber = settings.device_serial_number
    if settings.software_versions:
        ds.SoftwareVersions = settings.software_versions
    # SC Equipment
    ds.ConversionType = CONVERSION_TYPE
    ds.SecondaryCaptureDeviceManufacturer = "EDGEGW"
    ds.SecondaryCaptureDeviceSoftwareVersions = gateway.__version__
    # Content (General Image / Encapsulated Document)
    ds.InstanceNumber = ids.assignment.instance_number
    content_date, content_clock = dicom_date_time(content_time)
    ds.ContentDate = content_date
    ds.ContentTime = content_clock
    ds.BurnedInAnnotation = BURNED_IN_ANNOTATION
    return ds


def add_image_basics(ds: Dataset) -> None:
    """General Image attributes of an SC image that do not depend on its pixels."""
    ds.ImageType = ["DERIVED", "SECONDARY"]
    ds.PatientOrientation = ""  # type 2C: an SC image has no patient-relative orientation
    ds.Laterality = ""  # type 2C: unknown whether a paired body part is shown


def apply_character_set(ds: Dataset) -> None:
    """Declare UTF-8 (ISO_IR 192) when any text value is not ASCII; else the default repertoire."""
    if _has_non_ascii(ds):
        ds.SpecificCharacterSet = UTF8_CHARSET
    elif "SpecificCharacterSet" in ds:
        del ds.SpecificCharacterSet


def _has_non_ascii(ds: Dataset) -> bool:
    for elem in ds:
        if elem.VR == "SQ" and isinstance(elem.value, Sequence):
            if any(_has_non_ascii(item) for item in elem.value):
                return True
        elif elem.VR in _TEXT_VRS and not str(elem.value).isascii():
            return True
    return False


def write_part10(
    ds: Dataset,
    out_path: Path,
    transfer_syntax_uid: str,
    settings: ConvertSettings,
) -> None:
    """Write ``ds`` as a Part 10 file with our File Meta Information (gateway.product)."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = UID(transfer_syntax_uid)
    meta.ImplementationClassUID = UID(product.IMPLEMENTATION_CLASS_UID)
    meta.ImplementationVersionName = product.IMPLEMENTATION_VERSION_NAME
    meta.SourceApplicationEntityTitle = settings.ae_title
    ds.file_meta = meta
    apply_character_set(ds)
    # An OSError here (disk full) is not the input's fault; it propagates as it is.
    dcmwrite(out_path, ds, enforce_file_format=True)
