"""Formatting shared by the operator screens: times, ages, sizes and DICOM statuses as text.

Pure functions of their arguments (``now`` is passed in, never read here), so a page's view model
is built and tested without a clock or a server. Times are shown in the box's local time zone:
the technologist reads them against the room's wall clock.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from urllib.parse import urlencode

from starlette.datastructures import FormData

from gateway.forward.condition import Condition, LaneStatus
from gateway.paging import Page
from gateway.spool.entries import DeliveryState, DestinationStats, ObjectSource
from gateway.worklist.item import WorklistItem

NEVER = "never"
WAITING = (DeliveryState.HELD, DeliveryState.PENDING, DeliveryState.SENDING)


def local_time(epoch: float | None) -> str:
    """Epoch seconds as local ``YYYY-MM-DD HH:MM:SS``; ``never`` for None."""
    if epoch is None:
        return NEVER
    return datetime.datetime.fromtimestamp(epoch).strftime("%Y-%m-%d %H:%M:%S")


def duration(seconds: float) -> str:
    """A length of time for a person: ``45 s``, ``12 min``, ``3 h 05 min``, ``2 d 4 h``."""
    whole = max(0, int(seconds))
    if whole < 60:
        return f"{whole} s"
    minutes = whole // 60
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes:02d} min"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h"


def ago(now: float, then: float | None) -> str:
    """How long before ``now`` ``then`` was: ``5 min ago``; ``in 5 min`` ahead; ``never``."""
    if then is None:
        return NEVER
    delta = now - then
    if delta < -1:
        return f"in {duration(-delta)}"
    return f"{duration(delta)} ago"


def size_text(n: int) -> str:
    """Bytes as ``812 B``, ``3.4 MiB``, ``1.2 GiB`` (powers of 1024, as df -h shows them)."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{int(value)} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def status_text(status: int | None) -> str:
    """A DIMSE status as DICOM writes it (``0xA700``), or an empty string when none came."""
    if status is None:
        return ""
    return f"0x{status:04X}"


def dicom_date(da: str) -> str:
    """A DA value ``YYYYMMDD`` as ``YYYY-MM-DD``; anything else unchanged."""
    if len(da) == 8 and da.isdigit():
        return f"{da[:4]}-{da[4:6]}-{da[6:]}"
    return da


def dicom_time(tm: str) -> str:
    """A TM value ``HHMMSS[.f]`` (or ``HHMM``) as ``HH:MM``; anything else unchanged."""
    if len(tm) >= 4 and tm[:4].isdigit():
        return f"{tm[:2]}:{tm[2:4]}"
    return tm


def scheduled_at(da: str, tm: str) -> float | None:
    """Local epoch seconds of a scheduled step's start date and time, or None when unknown."""
    if len(da) != 8 or not da.isdigit():
        return None
    hour = minute = 0
    if len(tm) >= 4 and tm[:4].isdigit():
        hour, minute = int(tm[:2]), int(tm[2:4])
    try:
        day = datetime.date(int(da[:4]), int(da[4:6]), int(da[6:]))
        start = datetime.datetime.combine(day, datetime.time(hour, minute))
    except ValueError:
        return None
    return start.timestamp()


def person_name(pn: str) -> str:
    """A PN value for reading: ``Doe^Jane`` as ``Doe, Jane``; the alphabetic group only."""
    alphabetic = pn.split("=", 1)[0]
    parts = [p for p in alphabetic.split("^") if p]
    if len(parts) < 2:
        return alphabetic.replace("^", " ")
    family, given, *rest = parts
    return " ".join([f"{family}, {given}", *rest])


@dataclass(frozen=True)
class DestinationView:
    """The queue towards one destination."""

    name: str
    configured: bool
    depth: int  # held, pending and sending deliveries
    failed: int
    counts: tuple[tuple[str, int], ...]  # every state, in the queue's order
    oldest_waiting: str  # age of the oldest pending or sending delivery, "" when none
    bytes_pending: str
    last_success: str
    last_error: str | None
    last_error_at: str
    # ok, unreachable, out_of_resources, paused, rejected; "" when no lane runs for it (removed)
    condition: str = ""
    condition_text: str = ""  # e.g. "paused for 5 min: the PACS accepted none of ..."
    next_attempt: str = ""  # while not ok: when the lane tries (or probes) again


CONDITION_WORDS = {
    Condition.OK: "delivering",
    Condition.UNREACHABLE: "unreachable",
    Condition.OUT_OF_RESOURCES: "out of resources (the PACS refuses for now)",
    Condition.PAUSED: "paused (the PACS refuses what it must take)",
    Condition.REJECTED: "rejected by the PACS (a configuration must change)",
}


def condition_text(status: LaneStatus, now: float) -> str:
    """A destination's condition for a person: ``unreachable for 12 min: connection refused``."""
    words = CONDITION_WORDS[status.condition]
    if status.condition is Condition.OK:
        return words
    since = "" if status.since is None else f" for {duration(now - status.since)}"
    return f"{words}{since}, {status.attempts} attempts: {status.reason}"


def destination_view(
    stats: DestinationStats, now: float, lane: LaneStatus | None = None
) -> DestinationView:
    """One destination's queue for the dashboard and the queue screen (with its lane's status)."""
    oldest = stats.oldest_pending_at
    return DestinationView(
        name=stats.destination,
        configured=stats.configured,
        depth=sum(stats.counts.get(state, 0) for state in WAITING),
        failed=stats.counts.get(DeliveryState.FAILED, 0),
        counts=tuple((str(state), stats.counts.get(state, 0)) for state in DeliveryState),
        oldest_waiting="" if oldest is None else duration(now - oldest),
        bytes_pending=size_text(stats.bytes_pending),
        last_success=ago(now, stats.last_success_at),
        last_error=stats.last_error,
        last_error_at=ago(now, stats.last_error_at) if stats.last_error else "",
        condition="" if lane is None else str(lane.condition),
        condition_text="" if lane is None else condition_text(lane, now),
        next_attempt=""
        if lane is None or lane.next_attempt_at is None
        else ago(now, lane.next_attempt_at),
    )


@dataclass(frozen=True)
class ItemView:
    """One scheduled step as the worklist screen lists it."""

    key: str
    patient_name: str
    patient_id: str
    birth_date: str
    sex: str
    accession_number: str
    procedure: str  # requested procedure description, else the step's
    step_id: str
    modality: str
    station: str
    scheduled: str  # "2024-05-01 14:30", or "" when the RIS gave no date
    starts: str  # "in 20 min" / "2 h 05 min ago": the step's age relative to now
    selected: bool


def item_view(item: WorklistItem, now: float, selected_key: str | None) -> ItemView:
    """One cached step for display."""
    start = scheduled_at(item.scheduled_start_date, item.scheduled_start_time)
    when = dicom_date(item.scheduled_start_date)
    if item.scheduled_start_time:
        when = f"{when} {dicom_time(item.scheduled_start_time)}"
    return ItemView(
        key=item.key,
        patient_name=person_name(item.patient_name),
        patient_id=item.patient_id,
        birth_date=dicom_date(item.patient_birth_date),
        sex=item.patient_sex,
        accession_number=item.accession_number,
        procedure=(
            item.requested_procedure_description or item.scheduled_procedure_step_description
        ),
        step_id=item.scheduled_procedure_step_id,
        modality=item.modality,
        station=item.scheduled_station_ae_title,
        scheduled=when,
        starts="" if start is None else ago(now, start),
        selected=item.key == selected_key,
    )


def form_text(form: FormData, name: str) -> str:
    """A posted form field as stripped text; "" when absent (the services check its form)."""
    value = form.get(name)
    return value.strip() if isinstance(value, str) else ""


@dataclass(frozen=True)
class SourceView:
    """One source of an object as the screens show it (see ObjectSource)."""

    channel: str  # file, serial, dicom, unrecorded
    where: str  # "export: day1/P501_a.bmp", "bga (serial /dev/ttyUSB0)", "C-STORE by CT1 ..."
    arrived: str
    size: str  # "" when not recorded
    sha256: str
    identity_note: str  # what was wrong in the file name's identity, "" when nothing
    hint: str  # valid values of that identity, for the operator only; "" when none


def source_view(src: ObjectSource, *, with_names: bool = True) -> SourceView:
    """One source for display; ``with_names`` False leaves out what may name the patient.

    A file name can carry the patient's name and ID (the filename_pattern reads them from
    there), so screens that promise no patient data show only the folder.
    """
    hints = [f"{label} {value}" for label, value in src.hints]
    where = src.label if with_names else f"{src.source} ({src.channel})"
    return SourceView(
        channel=str(src.channel),
        where=where,
        arrived=local_time(src.arrived_at),
        size="" if src.size is None else size_text(src.size),
        sha256=src.sha256,
        identity_note=src.identity_note or "",
        hint=", ".join(hints) if with_names else "",
    )


@dataclass(frozen=True)
class PageView:
    """A listing's page line: "showing 1-200 of 340", with links to the pages around it."""

    summary: str
    complete: bool  # every row is on this page: the screen need not say anything
    next_url: str  # "" on the last page
    previous_url: str  # "" on the first page


def page_view(page: Page, path: str, **params: str) -> PageView:
    """The page line for ``path``; ``params`` are kept in the links beside ``offset``."""

    def url(offset: int | None) -> str:
        if offset is None:
            return ""
        return f"{path}?{urlencode({**params, 'offset': str(offset)})}"

    return PageView(
        summary=page.summary,
        complete=page.complete,
        next_url=url(page.next_offset),
        previous_url=url(page.previous_offset),
    )
