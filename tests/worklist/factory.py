"""Worklist test data: MWL response identifiers and WorklistItems built from them."""

from __future__ import annotations

from typing import Any

from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from gateway.worklist.item import WorklistItem


def mwl_dataset(
    *,
    patient_name: str = "Doe^Jane",
    patient_id: str = "PID001",
    accession_number: str = "ACC001",
    study_instance_uid: str = "1.2.826.0.1.3680043.10.1.1",
    requested_procedure_id: str = "RP001",
    step_id: str = "SPS001",
    start_date: str = "20240105",
    start_time: str = "093000",
    modality: str = "US",
    station_ae: str = "EDGE_GW",
    birth_date: str = "19800101",
    sex: str = "F",
    **extra: Any,
) -> Dataset:
    """A Modality Worklist response identifier with one Scheduled Procedure Step."""
    ds = Dataset()
    ds.PatientName = patient_name
    ds.PatientID = patient_id
    ds.PatientBirthDate = birth_date
    ds.PatientSex = sex
    ds.StudyInstanceUID = study_instance_uid
    ds.AccessionNumber = accession_number
    ds.ReferringPhysicianName = "Ref^Doctor"
    ds.RequestedProcedureID = requested_procedure_id
    ds.RequestedProcedureDescription = "Abdomen"
    step = Dataset()
    step.ScheduledStationAETitle = station_ae
    step.ScheduledProcedureStepStartDate = start_date
    step.ScheduledProcedureStepStartTime = start_time
    step.Modality = modality
    step.ScheduledPerformingPhysicianName = "Perf^Doctor"
    step.ScheduledProcedureStepDescription = "Abdomen scan"
    step.ScheduledProcedureStepID = step_id
    ds.ScheduledProcedureStepSequence = Sequence([step])
    for keyword, value in extra.items():
        setattr(ds, keyword, value)
    return ds


def make_item(**kwargs: Any) -> WorklistItem:
    """A WorklistItem built from :func:`mwl_dataset` with the same keyword arguments."""
    return WorklistItem.from_dataset(mwl_dataset(**kwargs))
