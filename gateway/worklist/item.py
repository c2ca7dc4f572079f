"""One scheduled procedure step from the Modality Worklist, as the gateway keeps and uses it."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from pydicom.dataset import Dataset

# The attributes IHE SWF asks a modality to copy from the worklist into what it produces.
# Everything else the RIS sent stays in ``dataset_json`` for answering MWL queries from the cache.


@dataclass(frozen=True)
class CodeItem:
    """A coded entry (code value, coding scheme designator, code meaning)."""

    value: str
    scheme: str
    meaning: str


@dataclass(frozen=True)
class WorklistItem:
    """A scheduled procedure step with its patient and order; text is decoded Unicode."""

    patient_name: str  # PN as text, e.g. "Doe^Jane"
    patient_id: str
    issuer_of_patient_id: str
    patient_birth_date: str  # DA, "" when unknown
    patient_sex: str  # "M", "F", "O" or ""
    study_instance_uid: str
    accession_number: str
    referring_physician_name: str
    requested_procedure_id: str
    requested_procedure_description: str
    requested_procedure_code: CodeItem | None
    scheduled_procedure_step_id: str
    scheduled_procedure_step_description: str
    scheduled_start_date: str  # DA of the step, "" when the RIS gave none
    scheduled_start_time: str  # TM, "" when the RIS gave none
    modality: str
    scheduled_station_ae_title: str
    dataset_json: str  # the whole C-FIND response identifier, pydicom JSON (decoded, UTF-8)

    @property
    def key(self) -> str:
        """Stable identity of the step across refreshes: hash of order and step identifiers."""
        parts = (
            self.study_instance_uid,
            self.accession_number,
            self.requested_procedure_id,
            self.scheduled_procedure_step_id,
        )
        return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:32]

    def dataset(self) -> Dataset:
        """The full identifier as the RIS sent it (values decoded; no Specific Character Set)."""
        return Dataset.from_json(self.dataset_json)

    @classmethod
    def from_dataset(cls, ds: Dataset) -> WorklistItem:
        """Build from a decoded MWL response identifier (values already Unicode)."""
        step = _first(ds, "ScheduledProcedureStepSequence")
        code = _first(ds, "RequestedProcedureCodeSequence")
        requested_code = None
        if code is not None and code.get("CodeValue"):
            requested_code = CodeItem(
                _text(code, "CodeValue"),
                _text(code, "CodingSchemeDesignator"),
                _text(code, "CodeMeaning"),
            )
        step_ds = step if step is not None else Dataset()
        clean = Dataset()
        clean.update(ds)
        if "SpecificCharacterSet" in clean:
            del clean.SpecificCharacterSet
        return cls(
            patient_name=_text(ds, "PatientName"),
            patient_id=_text(ds, "PatientID"),
            issuer_of_patient_id=_text(ds, "IssuerOfPatientID"),
            patient_birth_date=_text(ds, "PatientBirthDate"),
            patient_sex=_text(ds, "PatientSex"),
            study_instance_uid=_text(ds, "StudyInstanceUID"),
            accession_number=_text(ds, "AccessionNumber"),
            referring_physician_name=_text(ds, "ReferringPhysicianName"),
            requested_procedure_id=_text(ds, "RequestedProcedureID"),
            requested_procedure_description=_text(ds, "RequestedProcedureDescription"),
            requested_procedure_code=requested_code,
            scheduled_procedure_step_id=_text(step_ds, "ScheduledProcedureStepID"),
            scheduled_procedure_step_description=_text(
                step_ds, "ScheduledProcedureStepDescription"
            ),
            scheduled_start_date=_text(step_ds, "ScheduledProcedureStepStartDate"),
            scheduled_start_time=_text(step_ds, "ScheduledProcedureStepStartTime"),
            modality=_text(step_ds, "Modality"),
            scheduled_station_ae_title=_text(step_ds, "ScheduledStationAETitle"),
            dataset_json=json.dumps(clean.to_json_dict(), sort_keys=True),
        )


def _first(ds: Dataset, keyword: str) -> Dataset | None:
    seq: Any = ds.get(keyword)
    if not seq:
        return None
    item: Dataset = seq[0]
    return item


def _text(ds: Dataset, keyword: str) -> str:
    value = ds.get(keyword)
    if value is None:
        return ""
    return str(value).strip()
