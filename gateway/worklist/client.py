"""WorklistClient: Modality Worklist C-FIND SCU to the RIS (pynetdicom), plain or TLS.

Every timeout is set: TCP connect and TLS handshake (``connect_timeout``), association
negotiation (``acse_timeout``), each C-FIND response (``dimse_timeout``) and socket silence
(``network_timeout``, put back on the socket after connect as the forwarder does). A query may
also carry an overall deadline: a timer aborts the association when it passes.

A query accepts at most ``max_responses`` matches (default 50,000): more is treated as a failed
query, since a truncated worklist must not replace a complete one in the cache.
"""

from __future__ import annotations

import datetime
import socket
import ssl
import threading
import time
from collections.abc import Iterable
from typing import Any

from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import _config, evt

from gateway.config import WorklistSection

# GatewayAE closes the socket of a failed connect (pynetdicom 3.0.4 leaves it to the GC);
# shared with the forwarder rather than copied.
from gateway.forward.link import GatewayAE, tune_socket
from gateway.worklist.charset import UndecodableError, decode_identifier
from gateway.worklist.item import WorklistItem

MAX_RESPONSES = 50_000
# Modality Worklist Information Model - FIND (pynetdicom's sop_class names are not typed).
MODALITY_WORKLIST_FIND = UID("1.2.840.10008.5.1.4.31")

# pynetdicom logs every request and response identifier (names, IDs) at INFO; never.
_config.LOG_REQUEST_IDENTIFIERS = False
_config.LOG_RESPONSE_IDENTIFIERS = False

# Return keys asked of the RIS: what the gateway binds objects to, plus what modalities commonly
# ask the gateway's MWL SCP for (answered from the cache during an outage).
_PATIENT_STUDY_KEYS = (
    "PatientName",
    "PatientID",
    "IssuerOfPatientID",
    "PatientBirthDate",
    "PatientSex",
    "PatientWeight",
    "PatientSize",
    "MedicalAlerts",
    "Allergies",
    "PregnancyStatus",
    "AdditionalPatientHistory",
    "PatientComments",
    "StudyInstanceUID",
    "AccessionNumber",
    "ReferringPhysicianName",
    "RequestingPhysician",
    "RequestedProcedureID",
    "RequestedProcedureDescription",
    "RequestedProcedurePriority",
    "PatientTransportArrangements",
    "AdmissionID",
)
_STEP_KEYS = (
    "ScheduledStationAETitle",
    "ScheduledProcedureStepStartDate",
    "ScheduledProcedureStepStartTime",
    "Modality",
    "ScheduledPerformingPhysicianName",
    "ScheduledProcedureStepDescription",
    "ScheduledStationName",
    "ScheduledProcedureStepLocation",
    "ScheduledProcedureStepID",
    "PreMedication",
    "RequestedContrastAgent",
)
_CODE_SEQUENCES = ("RequestedProcedureCodeSequence",)
_STEP_CODE_SEQUENCES = ("ScheduledProtocolCodeSequence",)


class WorklistUnavailable(Exception):  # noqa: N818 - the name is the shared contract
    """The RIS did not deliver a usable worklist this time; keep the cache and retry later."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _code_item() -> Dataset:
    code = Dataset()
    code.CodeValue = ""
    code.CodingSchemeDesignator = ""
    code.CodeMeaning = ""
    return code


def scheduled_query(
    settings: WorklistSection, today: datetime.date, keys: Iterable[str] = _PATIENT_STUDY_KEYS
) -> Dataset:
    """The refresh query: the configured modality, station and date window, our return keys."""
    identifier = Dataset()
    for keyword in keys:
        setattr(identifier, keyword, None)  # empty: a return key
    for keyword in _CODE_SEQUENCES:
        setattr(identifier, keyword, Sequence([_code_item()]))
    step = Dataset()
    for keyword in _STEP_KEYS:
        setattr(step, keyword, None)
    for keyword in _STEP_CODE_SEQUENCES:
        setattr(step, keyword, Sequence([_code_item()]))
    first = today - datetime.timedelta(days=settings.days_before)
    last = today + datetime.timedelta(days=settings.days_after)
    step.ScheduledProcedureStepStartDate = f"{first:%Y%m%d}-{last:%Y%m%d}"
    if settings.modality:
        step.Modality = settings.modality
    if settings.scheduled_station_ae_title:
        step.ScheduledStationAETitle = settings.scheduled_station_ae_title
    identifier.ScheduledProcedureStepSequence = Sequence([step])
    return identifier


def split_steps(ds: Dataset) -> list[Dataset]:
    """One dataset per Scheduled Procedure Step item (a response may carry several)."""
    steps = ds.get("ScheduledProcedureStepSequence")
    if not steps or len(steps) < 2:
        return [ds]
    out = []
    for step in steps:
        single = Dataset()
        single.update(ds)
        single.ScheduledProcedureStepSequence = Sequence([step])
        out.append(single)
    return out


class WorklistClient:
    """Queries the RIS's MWL SCP; one association per query, safe to use from several threads."""

    def __init__(
        self,
        settings: WorklistSection,
        calling_ae_title: str,
        ssl_context: ssl.SSLContext | None,
        max_responses: int = MAX_RESPONSES,
    ) -> None:
        self._settings = settings
        self._calling = calling_ae_title
        self._ssl_context = ssl_context
        self._max_responses = max_responses

    @property
    def where(self) -> str:
        """AE@host:port of the RIS, for messages."""
        s = self._settings
        return f"{s.ae_title}@{s.host}:{s.port}"

    def _ae(self, deadline: float | None) -> Any:
        s = self._settings
        left = None if deadline is None else max(deadline - time.monotonic(), 0.05)

        def cap(value: float) -> float:
            return value if left is None else min(value, left)

        # A new AE per query: its timeouts are per query, and AEs are not shared across threads.
        ae = GatewayAE(ae_title=self._calling)
        ae.add_requested_context(
            MODALITY_WORKLIST_FIND, [ExplicitVRLittleEndian, ImplicitVRLittleEndian]
        )
        ae.connection_timeout = cap(s.connect_timeout)
        ae.acse_timeout = cap(s.acse_timeout)
        ae.dimse_timeout = cap(s.dimse_timeout)
        ae.network_timeout = cap(s.network_timeout)
        return ae

    def query(self, identifier: Dataset, deadline: float | None = None) -> list[Dataset]:
        """C-FIND ``identifier``; the decoded matches (Unicode, no Specific Character Set).

        ``deadline`` is a ``time.monotonic()`` instant. Raises WorklistUnavailable when the RIS
        cannot be reached, refuses, times out, answers with a failure or cancel status, or sends
        a response that does not decode.
        """
        s = self._settings
        if deadline is not None and deadline <= time.monotonic():
            raise WorklistUnavailable("no time left for a query")
        ae = self._ae(deadline)
        network_timeout = ae.network_timeout

        def on_open(event: Any) -> None:
            tune_socket(event.assoc.dul.socket.socket, network_timeout)

        tls_args = (self._ssl_context, s.host) if self._ssl_context else None
        try:
            assoc = ae.associate(
                s.host,
                s.port,
                ae_title=s.ae_title,
                tls_args=tls_args,
                evt_handlers=[(evt.EVT_CONN_OPEN, on_open)],
            )
        except (OSError, socket.gaierror) as exc:
            raise WorklistUnavailable(f"cannot connect to {self.where}: {exc}") from None
        if not assoc.is_established:
            raise WorklistUnavailable(self._why_not(assoc))
        timer = None
        if deadline is not None:
            timer = threading.Timer(max(deadline - time.monotonic(), 0.0), assoc.abort)
            timer.daemon = True
            timer.start()
        try:
            return self._collect(assoc, identifier, deadline)
        finally:
            if timer is not None:
                timer.cancel()
            if assoc.is_established:
                assoc.release()
            elif not assoc.is_released:
                assoc.abort()

    def _collect(self, assoc: Any, identifier: Dataset, deadline: float | None) -> list[Dataset]:
        results: list[Dataset] = []
        final: int | None = None
        for status, response in assoc.send_c_find(identifier, MODALITY_WORKLIST_FIND):
            code = status.get("Status") if status is not None else None
            if code is None:
                if deadline is not None and time.monotonic() >= deadline:
                    raise WorklistUnavailable(f"{self.where} did not answer before the deadline")
                raise WorklistUnavailable(
                    f"no C-FIND response from {self.where} (timeout or association aborted)"
                )
            code = int(code)
            if code in (0xFF00, 0xFF01):
                if response is None:
                    assoc.abort()
                    raise WorklistUnavailable(f"undecodable C-FIND response from {self.where}")
                if len(results) >= self._max_responses:
                    assoc.abort()
                    raise WorklistUnavailable(
                        f"{self.where} sent more than {self._max_responses} matches"
                    )
                try:
                    results.append(decode_identifier(response, self._settings.character_set))
                except UndecodableError as exc:
                    assoc.abort()
                    raise WorklistUnavailable(
                        f"C-FIND response from {self.where} cannot be decoded: {exc}"
                    ) from None
                continue
            final = code
            break
        if final is None:
            raise WorklistUnavailable(f"{self.where} ended the C-FIND without a final status")
        if final != 0x0000 and final & 0xF000 != 0xB000:
            raise WorklistUnavailable(f"{self.where} answered C-FIND with status 0x{final:04X}")
        return results

    def _why_not(self, assoc: Any) -> str:
        response = assoc.acceptor.primitive
        if assoc.is_rejected and response is not None:
            return (
                f"{self.where} rejected the association (result {response.result}, "
                f"source {response.result_source}, reason {response.diagnostic})"
            )
        if response is not None and response.result == 0:
            return f"{self.where} does not accept Modality Worklist C-FIND"
        return f"no association with {self.where} (connection refused, timed out or aborted)"

    def fetch_scheduled(self, today: datetime.date) -> list[WorklistItem]:
        """The configured query (modality, station, date window); one item per step."""
        results = self.query(scheduled_query(self._settings, today))
        items: list[WorklistItem] = []
        for ds in results:
            items.extend(WorklistItem.from_dataset(single) for single in split_steps(ds))
        return items
