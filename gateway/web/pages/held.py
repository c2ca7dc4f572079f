"""Held objects (/held): the images no patient could be bound to, and putting each one right.

A technologist opens a held object (/held/{id}: the queue id, never patient data, in the URL),
sees what its header says and the worklist steps that may be its own, and binds it to a step,
binds it to demographics typed in, or discards it with a reason. Every action goes through the
Reconciler, which refuses rather than guesses and writes the audit line (actor ``web:<user>``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from starlette.datastructures import FormData

from gateway.identity import PatientIdentity
from gateway.paging import Page
from gateway.spool.entries import ObjectInfo
from gateway.web.deps import User, current_user, read_form, require_technologist, web_actor
from gateway.web.pages.params import Offset
from gateway.web.services import WebServices
from gateway.web.templating import NavLink, redirect, render
from gateway.web.views import (
    ItemView,
    PageView,
    SourceView,
    ago,
    dicom_date,
    form_text,
    item_view,
    local_time,
    page_view,
    person_name,
    size_text,
    source_view,
)
from gateway.worklist.reconcile import BindResult, HeldView, ObjectNotHeldError, ReconcileError

PATH = "/held"
NAV = (NavLink(PATH, "Held objects"),)
MAX_LISTED = 200
SEVERAL_STEPS = (
    'Several worklist steps have this accession number: choose one with "Bind to this step".'
)
MAX_OTHERS = 300  # a page a tablet still renders; the usual room worklist is far shorter
TYPED_FIELDS = ("patient_id", "patient_name", "birth_date", "sex", "accession_number")

ObjectId = Annotated[int, Path(ge=1, le=2**63 - 1)]


@dataclass(frozen=True)
class HeldRow:
    """One held object in the list."""

    object_id: int
    held_since: str
    held_for: str
    reason: str
    source: str
    kind: str
    size: str
    destinations: str
    sources: tuple[SourceView, ...]  # every file, port or peer it came from


@dataclass(frozen=True)
class HeldPage:
    """One page of the held list, and what it is of the whole."""

    rows: tuple[HeldRow, ...]
    page: PageView


@dataclass(frozen=True)
class HeldDetail:
    """One held object with its header values and the steps it could be bound to."""

    row: HeldRow
    sop_instance_uid: str
    study_instance_uid: str
    attributes: tuple[tuple[str, str], ...]  # (label, value) from the object's header
    candidates: tuple[ItemView, ...]  # steps sharing its accession number or patient ID
    others: tuple[ItemView, ...]  # other cached steps, in scheduled order (MAX_OTHERS at most)
    others_total: int
    worklist: bool  # False: no [worklist]; only typed demographics can bind it


_LABELS = {
    "PatientName": "Patient name",
    "PatientID": "Patient ID",
    "PatientBirthDate": "Birth date",
    "PatientSex": "Sex",
    "AccessionNumber": "Accession number",
    "StudyDate": "Study date",
    "StudyTime": "Study time",
    "StudyDescription": "Study description",
    "Modality": "Modality",
    "SeriesDescription": "Series description",
    "ContentDate": "Content date",
    "ContentTime": "Content time",
}


def held_row(info: ObjectInfo, now: float) -> HeldRow:
    """One held object for the list."""
    return HeldRow(
        object_id=info.object_id,
        held_since=local_time(info.enqueued_at),
        held_for=ago(now, info.enqueued_at),
        reason=info.held_reason or "",
        source=info.source,
        kind=info.kind,
        size=size_text(info.size),
        destinations=", ".join(d.destination for d in info.deliveries) or "(none configured)",
        sources=tuple(source_view(src) for src in info.sources),
    )


def held_rows(services: WebServices, offset: int = 0) -> HeldPage:
    """Held objects, oldest first: MAX_LISTED of them from ``offset``, and the page line."""
    now = services.clock.now()
    reconciler = services.reconciler
    rows = tuple(held_row(info, now) for info in reconciler.list_held(MAX_LISTED, offset))
    page = Page(offset, MAX_LISTED, len(rows), reconciler.count_held())
    return HeldPage(rows, page_view(page, PATH))


def held_detail(services: WebServices, held: HeldView) -> HeldDetail:
    """The detail screen of one held object."""
    now = services.clock.now()
    selected = None
    if services.selection is not None:
        current = services.selection.current()
        selected = None if current is None else current.item_key
    candidates = tuple(item_view(item, now, selected) for item in held.candidates)
    taken = {c.key for c in candidates}
    cache = services.worklist
    rest = [] if cache is None else [i for i in cache.items() if i.key not in taken]
    others = tuple(item_view(item, now, selected) for item in rest[:MAX_OTHERS])
    attributes = []
    for keyword, value in held.attributes.items():
        if keyword == "PatientName":
            value = person_name(value)
        elif keyword.endswith("Date"):
            value = dicom_date(value)
        attributes.append((_LABELS.get(keyword, keyword), value))
    return HeldDetail(
        row=held_row(held.info, now),
        sop_instance_uid=held.info.sop_instance_uid,
        study_instance_uid=held.info.study_instance_uid,
        attributes=tuple(attributes),
        candidates=candidates,
        others=others,
        others_total=len(rest),
        worklist=cache is not None,
    )


def bound_message(result: BindResult) -> str:
    """What the operator is told after a binding."""
    sent = "destination" if result.deliveries == 1 else "destinations"
    return f"Object {result.object_id} bound and released to {result.deliveries} {sent}."


def routes(services: WebServices) -> APIRouter:
    """/held and /held/{id}: view (any user); bind and discard (technologist or engineer)."""
    router = APIRouter()
    reconciler = services.reconciler

    def listing(
        request: Request, error: str | None = None, status_code: int = 200, offset: int = 0
    ) -> HTMLResponse:
        held = held_rows(services, offset)
        return render(
            request,
            "held.html",
            status_code=status_code,
            rows=held.rows,
            page=held.page,
            error=error,
        )

    def detail(
        request: Request,
        object_id: int,
        error: str | None = None,
        status_code: int = 200,
        typed: dict[str, str] | None = None,
    ) -> HTMLResponse:
        try:
            held = reconciler.show(object_id)
        except ReconcileError as exc:
            # Unknown, or no longer held (another operator acted): say so above the list.
            return listing(request, str(exc), 404)
        return render(
            request,
            "held_detail.html",
            status_code=status_code,
            view=held_detail(services, held),
            error=error,
            typed=typed or dict.fromkeys(TYPED_FIELDS, ""),
        )

    @router.get(PATH, response_class=HTMLResponse)
    def list_held(
        request: Request, user: Annotated[User, Depends(current_user)], offset: Offset = 0
    ) -> HTMLResponse:
        """Held objects, oldest first, each with why it is held; a page from ``offset``."""
        return listing(request, offset=offset)

    @router.get(PATH + "/{object_id}", response_class=HTMLResponse)
    def show(
        request: Request, object_id: ObjectId, user: Annotated[User, Depends(current_user)]
    ) -> HTMLResponse:
        """One held object: its header, candidate steps, and the actions."""
        return detail(request, object_id)

    @router.post(PATH + "/{object_id}/bind", response_model=None)
    def bind_item(
        request: Request,
        object_id: ObjectId,
        user: Annotated[User, Depends(require_technologist)],
        form: Annotated[FormData, Depends(read_form)],
    ) -> HTMLResponse | RedirectResponse:
        """Bind to the worklist step with this key (or the one step with this accession number)
        and release it to its destinations."""
        key, accession = form_text(form, "item_key"), form_text(form, "accession_number")
        try:
            if key or not accession:
                result = reconciler.bind_to_item(object_id, key, web_actor(user))
            else:
                result = reconciler.bind_to_accession(object_id, accession, web_actor(user))
        except ObjectNotHeldError as exc:
            return listing(request, str(exc), 404)
        except ReconcileError as exc:
            message = str(exc)
            if (
                not key
                and services.worklist
                and len(services.worklist.find(accession_number=accession)) > 1
            ):
                # The reconciler's hint names the CLI's option; on the page the list is the way.
                message = SEVERAL_STEPS
            return detail(request, object_id, message, 409)
        return redirect(PATH, bound_message(result))

    @router.post(PATH + "/{object_id}/demographics", response_model=None)
    def bind_typed(
        request: Request,
        object_id: ObjectId,
        user: Annotated[User, Depends(require_technologist)],
        form: Annotated[FormData, Depends(read_form)],
    ) -> HTMLResponse | RedirectResponse:
        """Bind to demographics the operator typed, and release it."""
        typed = {name: form_text(form, name) for name in TYPED_FIELDS}
        if not typed["patient_name"]:
            return detail(request, object_id, "a patient name is required", 422, typed)
        identity = PatientIdentity(
            patient_id=typed["patient_id"],
            patient_name=typed["patient_name"],
            birth_date=typed["birth_date"] or None,
            sex=typed["sex"] or None,
            accession_number=typed["accession_number"] or None,
        )
        try:
            result = reconciler.bind_to_demographics(object_id, identity, web_actor(user))
        except ObjectNotHeldError as exc:
            return listing(request, str(exc), 404)
        except ReconcileError as exc:
            # What was typed comes back in the form, so one wrong field is one correction.
            return detail(request, object_id, str(exc), 422, typed)
        return redirect(PATH, bound_message(result))

    @router.post(PATH + "/{object_id}/discard", response_model=None)
    def discard(
        request: Request,
        object_id: ObjectId,
        user: Annotated[User, Depends(require_technologist)],
        form: Annotated[FormData, Depends(read_form)],
    ) -> HTMLResponse | RedirectResponse:
        """Take it out of the queue with a reason; its file is kept on the box."""
        try:
            reconciler.discard(object_id, form_text(form, "reason"), web_actor(user))
        except ObjectNotHeldError as exc:
            return listing(request, str(exc), 404)
        except ReconcileError as exc:
            return detail(request, object_id, str(exc), 422)
        return redirect(PATH, f"Object {object_id} discarded; its file is kept on the box.")

    return router
