"""Who an object belongs to, as far as the gateway knows."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PatientIdentity:
    """Patient and order identity for an ingested item; every field may be unknown (None)."""

    patient_id: str | None = None
    patient_name: str | None = None  # DICOM PN form, e.g. "Doe^Jane"
    accession_number: str | None = None
    birth_date: str | None = None  # DA, YYYYMMDD; typed by an operator when reconciling
    sex: str | None = None  # "M", "F" or "O"

    @property
    def known(self) -> bool:
        """True when the object may be sent: a patient ID is known."""
        return bool(self.patient_id)
