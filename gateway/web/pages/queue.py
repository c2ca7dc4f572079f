"""The queue (/queue): per destination, what waits, what was sent, what failed and why.

Failed deliveries are the PACS's permanent refusals (or objects that cannot be read): each shows
its DICOM status and reason, and /queue/{id} shows one object's every delivery (``queue show``).
An engineer may send failed ones again (one object, or every failed one of a destination) or
purge them; a technologist may look. Every action is audited with actor ``web:<user>``.
The screen carries no patient data: queue ids, SOP Instance UIDs, sources and reasons only
(an object's sources by folder, port or peer, not by file name: a file name can carry the
patient's name; the held screens and ``queue show`` show it). Each destination lists its
failures a page at a time: ``/queue?destination=NAME&offset=N``, with a line saying how many
there are.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from starlette.datastructures import FormData

from gateway.paging import Page
from gateway.spool.entries import DeliveryInfo, DeliveryState, ObjectInfo
from gateway.web.deps import User, current_user, read_form, require_engineer, web_actor
from gateway.web.services import WebServices
from gateway.web.templating import NavLink, redirect, render
from gateway.web.views import (
    DestinationView,
    PageView,
    SourceView,
    ago,
    destination_view,
    form_text,
    local_time,
    page_view,
    size_text,
    source_view,
    status_text,
)

PATH = "/queue"
NAV = (NavLink(PATH, "Queue"),)
CONFIRM = "Tick the box to confirm the purge."
FAILURES_LISTED = 100  # per destination and page

ObjectId = Annotated[int, Path(ge=1, le=2**63 - 1)]
Offset = Annotated[int, Query(ge=0, le=2**62, description="Failures to skip: the page to show.")]
Destination = Annotated[
    str | None, Query(max_length=64, description="The destination whose failures page through.")
]


@dataclass(frozen=True)
class DeliveryRow:
    """One delivery: to which destination, in which state, and the last failure if any."""

    object_id: int
    destination: str
    state: str
    attempts: int
    sop_instance_uid: str
    source: str
    size: str
    enqueued: str
    sent: str
    next_attempt: str
    status: str  # "0xA700", "" when no DIMSE response came
    failure_class: str
    reason: str
    failed: str  # "5 min ago", "" when it never failed


@dataclass(frozen=True)
class DestinationQueue:
    """One destination's queue with its failed deliveries."""

    summary: DestinationView
    failures: tuple[DeliveryRow, ...]
    more_failures: bool  # more failed than listed
    failures_total: int  # failed deliveries in all
    failures_offset: int  # where ``failures`` starts among them
    failures_next_offset: int | None  # where the next page starts; None on the last page
    failures_page: PageView


@dataclass(frozen=True)
class QueueView:
    """Everything the queue screen shows."""

    destinations: tuple[DestinationQueue, ...]
    failed_total: int


@dataclass(frozen=True)
class ObjectView:
    """One queued object and each of its deliveries (``queue show``)."""

    object_id: int
    sop_class_uid: str
    sop_instance_uid: str
    study_instance_uid: str
    transfer_syntax_uid: str
    source: str
    kind: str
    size: str
    enqueued: str
    held_reason: str
    payload_kept: bool  # False once sent everywhere (or purged): it cannot be retried
    deliveries: tuple[DeliveryRow, ...]
    retryable: bool  # some delivery is failed or pending and the payload is still there
    has_failed: bool
    sources: tuple[SourceView, ...] = ()  # by folder, port or peer (no file names, see above)


def delivery_row(d: DeliveryInfo, now: float) -> DeliveryRow:
    """One delivery for display."""
    waiting = d.state in (DeliveryState.PENDING, DeliveryState.SENDING)
    return DeliveryRow(
        object_id=d.object_id,
        destination=d.destination,
        state=str(d.state),
        attempts=d.attempts,
        sop_instance_uid=d.sop_instance_uid,
        source=d.source,
        size=size_text(d.size),
        enqueued=local_time(d.enqueued_at),
        sent="" if d.sent_at is None else local_time(d.sent_at),
        next_attempt=ago(now, d.next_attempt_at) if waiting else "",
        status=status_text(d.status),
        failure_class=d.failure_class or "",
        reason=d.last_error or "",
        failed="" if d.last_error_at is None else ago(now, d.last_error_at),
    )


def queue_view(services: WebServices, destination: str | None = None, offset: int = 0) -> QueueView:
    """The queue screen as of now; ``destination``'s failures from ``offset``, others' first."""
    now = services.clock.now()
    spool = services.spool
    out: list[DestinationQueue] = []
    total = 0
    for stats in spool.stats().values():
        name = stats.destination
        failed = stats.counts.get(DeliveryState.FAILED, 0)
        total += failed
        start = offset if name == destination else 0
        rows: list[DeliveryInfo] = []
        if failed:
            rows = spool.list_deliveries(DeliveryState.FAILED, name, FAILURES_LISTED, start)
        page = Page(start, FAILURES_LISTED, len(rows), failed)
        out.append(
            DestinationQueue(
                summary=destination_view(stats, now),
                failures=tuple(delivery_row(d, now) for d in rows),
                more_failures=not page.complete,
                failures_total=failed,
                failures_offset=start,
                failures_next_offset=page.next_offset,
                failures_page=page_view(page, PATH, destination=name),
            )
        )
    return QueueView(tuple(out), total)


def object_view(info: ObjectInfo, now: float) -> ObjectView:
    """One object's detail."""
    kept = info.payload is not None
    deliveries = tuple(delivery_row(d, now) for d in info.deliveries)
    return ObjectView(
        object_id=info.object_id,
        sop_class_uid=info.sop_class_uid,
        sop_instance_uid=info.sop_instance_uid,
        study_instance_uid=info.study_instance_uid,
        transfer_syntax_uid=info.transfer_syntax_uid,
        source=info.source,
        kind=info.kind,
        size=size_text(info.size),
        enqueued=local_time(info.enqueued_at),
        held_reason=info.held_reason or "",
        payload_kept=kept,
        deliveries=deliveries,
        retryable=kept and any(r.state in ("failed", "pending") for r in deliveries),
        has_failed=any(r.state == "failed" for r in deliveries),
        sources=tuple(source_view(src, with_names=False) for src in info.sources),
    )


def routes(services: WebServices) -> APIRouter:
    """/queue and /queue/{id}: view (any user); retry and purge (engineer)."""
    router = APIRouter()
    spool = services.spool

    def overview(
        request: Request,
        error: str | None = None,
        status_code: int = 200,
        destination: str | None = None,
        offset: int = 0,
    ) -> HTMLResponse:
        view = queue_view(services, destination, offset)
        return render(request, "queue.html", status_code=status_code, view=view, error=error)

    @router.get(PATH, response_class=HTMLResponse)
    def show_queue(
        request: Request,
        user: Annotated[User, Depends(current_user)],
        destination: Destination = None,
        offset: Offset = 0,
    ) -> HTMLResponse:
        """Every destination's queue with its failed deliveries (a page of ``destination``'s
        from ``offset``)."""
        return overview(request, destination=destination, offset=offset)

    @router.get(PATH + "/{object_id}", response_class=HTMLResponse)
    def show_object(
        request: Request, object_id: ObjectId, user: Annotated[User, Depends(current_user)]
    ) -> HTMLResponse:
        """One queued object and each of its deliveries."""
        info = spool.show(object_id)
        if info is None:
            return overview(request, f"No object {object_id} in the queue.", 404)
        view = object_view(info, services.clock.now())
        return render(request, "queue_object.html", view=view, error=None)

    @router.post(PATH + "/retry", response_model=None)
    def retry_failed(
        request: Request,
        user: Annotated[User, Depends(require_engineer)],
        form: Annotated[FormData, Depends(read_form)],
    ) -> HTMLResponse | RedirectResponse:
        """Every failed delivery (of one destination, when named) goes back to pending now."""
        name = form_text(form, "destination") or None
        if name is not None and name not in spool.stats():
            return overview(request, f"No destination {name!r} in the queue.", 404)
        count = spool.retry(None, name)
        services.audit.append(
            web_actor(user),
            "queue retry",
            f"destination:{name}" if name else "queue",
            {"deliveries": count},
        )
        return redirect(PATH, f"{count} failed deliveries set to be sent again now.")

    @router.post(PATH + "/purge", response_model=None)
    def purge_failed(
        request: Request,
        user: Annotated[User, Depends(require_engineer)],
        form: Annotated[FormData, Depends(read_form)],
    ) -> HTMLResponse | RedirectResponse:
        """Remove every failed delivery for good (an object left with none is deleted)."""
        if form_text(form, "confirm") != "yes":
            return overview(request, CONFIRM, 422)
        count = spool.purge(None, states=(DeliveryState.FAILED,))
        services.audit.append(web_actor(user), "queue purge", "queue", {"deliveries": count})
        return redirect(PATH, f"{count} failed deliveries purged.")

    @router.post(PATH + "/{object_id}/retry", response_model=None)
    def retry_object(
        request: Request, object_id: ObjectId, user: Annotated[User, Depends(require_engineer)]
    ) -> HTMLResponse | RedirectResponse:
        """This object's failed and waiting deliveries are sent again now."""
        if spool.show(object_id) is None:
            return overview(request, f"No object {object_id} in the queue.", 404)
        count = spool.retry([object_id])
        services.audit.append(
            web_actor(user),
            "queue retry",
            f"object:{object_id}",
            {"deliveries": count},
        )
        return redirect(PATH, f"Object {object_id}: {count} deliveries set to be sent again now.")

    @router.post(PATH + "/{object_id}/purge", response_model=None)
    def purge_object(
        request: Request,
        object_id: ObjectId,
        user: Annotated[User, Depends(require_engineer)],
        form: Annotated[FormData, Depends(read_form)],
    ) -> HTMLResponse | RedirectResponse:
        """Remove this object's failed deliveries for good."""
        info = spool.show(object_id)
        if info is None:
            return overview(request, f"No object {object_id} in the queue.", 404)
        if form_text(form, "confirm") != "yes":
            view = object_view(info, services.clock.now())
            return render(request, "queue_object.html", status_code=422, view=view, error=CONFIRM)
        count = spool.purge([object_id], states=(DeliveryState.FAILED,))
        services.audit.append(
            web_actor(user),
            "queue purge",
            f"object:{object_id}",
            {"deliveries": count},
        )
        return redirect(PATH, f"Object {object_id}: {count} failed deliveries purged.")

    return router
