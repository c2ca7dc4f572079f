"""Request and response bodies of the local JSON API (/api/v1); field names are a stable contract.

Every request model forbids unknown keys and bounds every string, so a typo is a 422 rather than
a silently ignored field, and no body is larger than it needs to be. Times are UTC, ISO 8601.
Patient data appears in response bodies only (never in URLs or logs).
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from gateway.spool.entries import ObjectInfo, ObjectSource
from gateway.spool.rebind import MAX_REASON_CHARS
from gateway.worklist.item import WorklistItem
from gateway.worklist.selection import Selection

# Generous against DICOM's own limits (SH 16, LO 64, PN 64 per component group): the service
# classes validate the DICOM form; these only keep bodies small.
_SHORT = 64
_NAME = 324


def utc(epoch: float | None) -> datetime.datetime | None:
    """Epoch seconds as an aware UTC datetime (None stays None)."""
    if epoch is None:
        return None
    return datetime.datetime.fromtimestamp(epoch, datetime.UTC)


class _Out(BaseModel):
    model_config = ConfigDict(frozen=True)


class _In(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", str_strip_whitespace=True)


class Health(_Out):
    """Liveness of the API; carries no patient data."""

    status: Literal["ok"] = "ok"


class Code(_Out):
    """A coded entry (Requested Procedure Code)."""

    value: str
    scheme: str
    meaning: str


class WorklistItemOut(_Out):
    """One scheduled procedure step from the worklist cache."""

    key: str = Field(description="Stable key of the step; use it to bind held objects.")
    accession_number: str
    patient_id: str
    issuer_of_patient_id: str
    patient_name: str = Field(description="DICOM PN form, e.g. Doe^Jane.")
    patient_birth_date: str = Field(description="YYYYMMDD, empty when unknown.")
    patient_sex: str = Field(description="M, F, O, or empty.")
    study_instance_uid: str
    referring_physician_name: str
    requested_procedure_id: str
    requested_procedure_description: str
    requested_procedure_code: Code | None
    scheduled_procedure_step_id: str
    scheduled_procedure_step_description: str
    scheduled_start_date: str = Field(description="YYYYMMDD, empty when the RIS gave none.")
    scheduled_start_time: str = Field(description="HHMMSS, empty when the RIS gave none.")
    modality: str
    scheduled_station_ae_title: str

    @classmethod
    def of(cls, item: WorklistItem) -> WorklistItemOut:
        """From a cached item (its raw RIS response is left out)."""
        code = item.requested_procedure_code
        return cls(
            key=item.key,
            accession_number=item.accession_number,
            patient_id=item.patient_id,
            issuer_of_patient_id=item.issuer_of_patient_id,
            patient_name=item.patient_name,
            patient_birth_date=item.patient_birth_date,
            patient_sex=item.patient_sex,
            study_instance_uid=item.study_instance_uid,
            referring_physician_name=item.referring_physician_name,
            requested_procedure_id=item.requested_procedure_id,
            requested_procedure_description=item.requested_procedure_description,
            requested_procedure_code=(
                None
                if code is None
                else Code(value=code.value, scheme=code.scheme, meaning=code.meaning)
            ),
            scheduled_procedure_step_id=item.scheduled_procedure_step_id,
            scheduled_procedure_step_description=item.scheduled_procedure_step_description,
            scheduled_start_date=item.scheduled_start_date,
            scheduled_start_time=item.scheduled_start_time,
            modality=item.modality,
            scheduled_station_ae_title=item.scheduled_station_ae_title,
        )


class WorklistOut(_Out):
    """The cached worklist: items not expired, in scheduled order, and the refresh state."""

    configured: bool = Field(description="False: no [worklist] in the configuration.")
    fetched_at: datetime.datetime | None = Field(description="Last successful refresh.")
    last_error: str | None = Field(description="Why the last refresh failed; null when it worked.")
    items: list[WorklistItemOut]


class RefreshOut(_Out):
    """Outcome of a refresh asked for through the API; a failure keeps the cache as it was."""

    ok: bool
    count: int | None = Field(description="Items the RIS returned (last successful refresh).")
    error: str | None = Field(description="Why the refresh failed; null when it worked.")
    fetched_at: datetime.datetime | None


class SelectionOut(_Out):
    """A recorded room selection."""

    item_key: str
    accession_number: str
    selected_at: datetime.datetime
    selected_by: str = Field(description='Who selected it, e.g. "local:alice" or "cli:bob".')
    expires_at: datetime.datetime

    @classmethod
    def of(cls, selection: Selection, lifetime_seconds: float) -> SelectionOut:
        """From the selection file's record."""
        selected_at = utc(selection.selected_at)
        expires_at = utc(selection.selected_at + lifetime_seconds)
        assert selected_at is not None and expires_at is not None
        return cls(
            item_key=selection.item_key,
            accession_number=selection.accession_number,
            selected_at=selected_at,
            selected_by=selection.by,
            expires_at=expires_at,
        )


class ProcedureOut(_Out):
    """The procedure selected for the room: files dropped now are bound to it first."""

    current: SelectionOut | None = Field(description="null: nothing selected (or it expired).")
    item: WorklistItemOut | None = Field(
        description="The selected step as the cache has it now; null when it left the cache "
        "(files are then not bound to it)."
    )
    expired: SelectionOut | None = Field(
        description="With no current selection: the last one recorded, now expired."
    )


class SelectProcedure(_In):
    """Select the scheduled step with this accession number (and step ID, when several)."""

    accession_number: str = Field(min_length=1, max_length=_SHORT)
    step_id: str | None = Field(
        None, min_length=1, max_length=_SHORT, description="Scheduled Procedure Step ID."
    )


class DeliveryOut(_Out):
    """One destination of a queued object."""

    destination: str
    state: str


class SourceOut(_Out):
    """One arrival an object came from: a file in a drop folder, a serial message, a C-STORE.

    An object with several sources is one DICOM instance that arrived more than once (same SOP
    Instance UID, same bytes); each arrival is listed, so none disappears unseen.
    """

    channel: Literal["file", "serial", "dicom", "unrecorded"] = Field(
        description="unrecorded: queued by firmware that did not record sources yet."
    )
    source: str = Field(description='The configured source: folder, serial line, "dicom:<AE>".')
    label: str = Field(description="One line naming the source for people.")
    file_name: str | None = Field(
        description="file: its path in the drop folder; bytes that are not UTF-8 and "
        "unprintable characters as \\xNN."
    )
    port: str | None = Field(description="serial: the port (device path or pyserial URL).")
    calling_ae: str | None = Field(description="dicom: the calling AE title.")
    peer_address: str | None = Field(description="dicom: the peer's IP address.")
    size: int | None = Field(description="Bytes as they arrived; null when not recorded.")
    sha256: str = Field(description="SHA-256 of the bytes as they arrived, hex.")
    arrived_at: datetime.datetime
    identity_note: str | None = Field(
        description="What was wrong in the identity the file name gave (why it was not used)."
    )
    hint_patient_id: str | None = Field(
        description="A valid patient ID from that unusable identity: a hint for the operator, "
        "never bound by itself."
    )
    hint_accession_number: str | None = Field(description="Likewise, a valid accession number.")

    @classmethod
    def of(cls, src: ObjectSource) -> SourceOut:
        """From the queue's record of the source."""
        arrived = utc(src.arrived_at)
        assert arrived is not None
        return cls(
            channel=src.channel.value,
            source=src.source,
            label=src.label,
            file_name=src.file_name,
            port=src.port,
            calling_ae=src.calling_ae,
            peer_address=src.peer_address,
            size=src.size,
            sha256=src.sha256,
            arrived_at=arrived,
            identity_note=src.identity_note,
            hint_patient_id=src.hint_patient_id,
            hint_accession_number=src.hint_accession_number,
        )


class HeldOut(_Out):
    """A held object: queued but not sent, because no patient could be bound to it."""

    object_id: int
    held_reason: str | None
    held_since: datetime.datetime = Field(description="When it was queued.")
    source: str
    kind: str
    size: int
    sop_class_uid: str
    sop_instance_uid: str
    study_instance_uid: str
    deliveries: list[DeliveryOut]
    sources: list[SourceOut] = Field(
        description="Every file, serial message or C-STORE it came from, first one first."
    )

    @classmethod
    def of(cls, info: ObjectInfo) -> HeldOut:
        """From the queue's view of the object."""
        since = utc(info.enqueued_at)
        assert since is not None
        return cls(
            object_id=info.object_id,
            held_reason=info.held_reason,
            held_since=since,
            source=info.source,
            kind=info.kind,
            size=info.size,
            sop_class_uid=info.sop_class_uid,
            sop_instance_uid=info.sop_instance_uid,
            study_instance_uid=info.study_instance_uid,
            deliveries=[
                DeliveryOut(destination=d.destination, state=d.state.value) for d in info.deliveries
            ],
            sources=[SourceOut.of(src) for src in info.sources],
        )


class HeldDetailOut(HeldOut):
    """A held object with what its header says and the worklist items that may be its own."""

    attributes: dict[str, str] = Field(description="Header values by DICOM keyword.")
    candidates: list[WorklistItemOut] = Field(
        description="Items sharing its accession number or patient ID, or a hint of its sources."
    )

    @classmethod
    def with_view(
        cls, info: ObjectInfo, attributes: Mapping[str, str], candidates: list[WorklistItemOut]
    ) -> HeldDetailOut:
        """From the reconciler's view of the object."""
        base = HeldOut.of(info).model_dump()
        return cls(**base, attributes=dict(attributes), candidates=candidates)


class BindRequest(_In):
    """Exactly one form: {"item_key"}, {"accession_number"}, or typed demographics
    {"patient_id", "patient_name", "birth_date"?, "sex"?, "accession_number"?}."""

    item_key: str | None = Field(None, min_length=1, max_length=_SHORT)
    accession_number: str | None = Field(None, min_length=1, max_length=_SHORT)
    patient_id: str | None = Field(None, min_length=1, max_length=_SHORT)
    patient_name: str | None = Field(None, min_length=1, max_length=_NAME)
    birth_date: str | None = Field(None, min_length=1, max_length=8, description="YYYYMMDD.")
    sex: Literal["M", "F", "O"] | None = None

    @model_validator(mode="after")
    def _one_form(self) -> Self:
        typed = self.patient_id is not None or self.patient_name is not None
        if typed:
            if self.item_key is not None:
                raise ValueError("give either item_key or typed demographics, not both")
            if self.patient_id is None or self.patient_name is None:
                raise ValueError("typed demographics need patient_id and patient_name")
            return self
        if self.birth_date is not None or self.sex is not None:
            raise ValueError("birth_date and sex go with patient_id and patient_name")
        if (self.item_key is None) == (self.accession_number is None):
            raise ValueError(
                "name the worklist item: item_key or accession_number (exactly one),"
                " or type demographics with patient_id and patient_name"
            )
        return self


class BindOut(_Out):
    """A held object bound to a patient and released to its destinations."""

    object_id: int
    sop_instance_uid: str = Field(description="Unchanged: the instance was never sent.")
    study_instance_uid: str
    deliveries: int = Field(description="Deliveries moved from held to pending.")


class DiscardRequest(_In):
    """Why the object is discarded (kept in the audit log; no patient names, please)."""

    reason: str = Field(min_length=1, max_length=MAX_REASON_CHARS)


class DiscardOut(_Out):
    """A held object taken out of the queue; its file is kept on the box."""

    object_id: int
    kept_at: str = Field(description="Where the file is kept on the box.")
