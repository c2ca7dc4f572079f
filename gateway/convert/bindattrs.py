"""Writes a worklist binding (or operator-typed demographics) into a dataset.

One place decides which attributes a bound object carries, so created objects, coerced inbound
objects and reconciled held objects all look the same to the PACS (IHE SWF: the modality copies
patient, order and step identifiers from the worklist into every instance it makes).
"""

from __future__ import annotations

from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from gateway.identity import PatientIdentity
from gateway.worklist.item import WorklistItem

SR_CLASS_PREFIX = "1.2.840.10008.5.1.4.1.1.88."


def apply_item(ds: Dataset, item: WorklistItem) -> None:
    """Patient module, study identity and Request Attributes Sequence from the worklist item."""
    ds.PatientName = item.patient_name
    ds.PatientID = item.patient_id
    if item.issuer_of_patient_id:
        ds.IssuerOfPatientID = item.issuer_of_patient_id
    elif "IssuerOfPatientID" in ds:
        del ds.IssuerOfPatientID
    ds.PatientBirthDate = item.patient_birth_date
    ds.PatientSex = item.patient_sex
    if item.study_instance_uid:
        ds.StudyInstanceUID = item.study_instance_uid
    ds.AccessionNumber = item.accession_number
    ds.ReferringPhysicianName = item.referring_physician_name
    if item.requested_procedure_id:
        ds.StudyID = item.requested_procedure_id[:16]
    if item.requested_procedure_description:
        ds.StudyDescription = item.requested_procedure_description[:64]
    if item.requested_procedure_code is not None:
        ds.ProcedureCodeSequence = Sequence([_code(item)])
    request = Dataset()
    if item.accession_number:
        request.AccessionNumber = item.accession_number
    if item.study_instance_uid:
        request.StudyInstanceUID = item.study_instance_uid
    request.RequestedProcedureID = item.requested_procedure_id
    if item.requested_procedure_description:
        request.RequestedProcedureDescription = item.requested_procedure_description
    if item.requested_procedure_code is not None:
        request.RequestedProcedureCodeSequence = Sequence([_code(item)])
    request.ScheduledProcedureStepID = item.scheduled_procedure_step_id
    if item.scheduled_procedure_step_description:
        request.ScheduledProcedureStepDescription = item.scheduled_procedure_step_description
    ds.RequestAttributesSequence = Sequence([request])
    if _is_sr(ds):
        _sr_request(ds, item)


def apply_demographics(ds: Dataset, identity: PatientIdentity) -> None:
    """Operator-typed demographics: patient module and accession only; no order is invented."""
    ds.PatientName = identity.patient_name or ""
    ds.PatientID = identity.patient_id or ""
    ds.PatientBirthDate = identity.birth_date or ""
    ds.PatientSex = identity.sex or ""
    ds.AccessionNumber = identity.accession_number or ""
    for keyword in ("IssuerOfPatientID", "RequestAttributesSequence", "ProcedureCodeSequence"):
        if keyword in ds:
            delattr(ds, keyword)
    if _is_sr(ds):
        _sr_request(ds, None)


def _is_sr(ds: Dataset) -> bool:
    # Structured Reports carry the order in Referenced Request Sequence (SR Document General),
    # not in the General Series module's Request Attributes Sequence.
    return str(ds.get("SOPClassUID", "")).startswith(SR_CLASS_PREFIX)


def _sr_request(ds: Dataset, item: WorklistItem | None) -> None:
    from gateway.convert.sr import apply_sr_request  # highdicom is heavy; only SRs need it

    apply_sr_request(ds, item)


def _code(item: WorklistItem) -> Dataset:
    code = item.requested_procedure_code
    assert code is not None
    ds = Dataset()
    ds.CodeValue = code.value
    ds.CodingSchemeDesignator = code.scheme
    ds.CodeMeaning = code.meaning
    return ds
