"""Quarantine (/quarantine): the files the gateway could not take, why, and putting one back.

Read-only for what is listed (id, when, how it came, source, size, reason, where it was
dropped); one action, "Put back through ingest" (technologist or engineer), which goes through
the same QuarantineDesk as ``dicom-gateway quarantine requeue`` and is audited as
``web:<user>``. The id in the URL is the quarantine's own (``<UTC time>-<counter>``), never a
file name or patient data.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Request
from fastapi.responses import HTMLResponse, RedirectResponse

from gateway.ingest.requeue import QuarantineDesk, QuarantineEntry, RequeueError
from gateway.paging import Page
from gateway.storagefault import StorageNotReadyError
from gateway.web.deps import User, current_user, require_technologist, web_actor
from gateway.web.pages.params import Offset
from gateway.web.services import WebServices
from gateway.web.templating import NavLink, redirect, render
from gateway.web.views import PageView, ago, local_time, page_view, size_text

PATH = "/quarantine"
NAV = (NavLink(PATH, "Quarantine"),)
MAX_LISTED = 200
CHANNELS = {
    "file": "drop folder",
    "dicom": "DICOM C-STORE",
    "serial": "serial device",
    "unrecorded": "unknown",
}

Ident = Annotated[str, Path(pattern=r"^\d{8}T\d{6}Z-\d{1,12}$", max_length=40)]


@dataclass(frozen=True)
class QuarantineRow:
    """One quarantined file in the list."""

    ident: str
    since: str
    age: str
    channel: str
    source: str
    size: str
    reason: str
    original: str
    requeueable: bool
    not_requeueable: str


@dataclass(frozen=True)
class QuarantinePage:
    """One page of the list, and what it is of the whole."""

    rows: tuple[QuarantineRow, ...]
    page: PageView


def quarantine_row(entry: QuarantineEntry, now: float) -> QuarantineRow:
    """One quarantined file for the list."""
    item = entry.file
    return QuarantineRow(
        ident=entry.ident,
        since=local_time(item.time),
        age=ago(now, item.time),
        channel=CHANNELS.get(str(entry.channel), str(entry.channel)),
        source=item.source,
        size=size_text(item.size),
        reason=item.reason,
        original=item.original,
        requeueable=entry.not_requeueable is None,
        not_requeueable=entry.not_requeueable or "",
    )


def quarantine_rows(desk: QuarantineDesk, now: float, offset: int = 0) -> QuarantinePage:
    """Quarantined files, oldest first: MAX_LISTED of them from ``offset``, and the page line."""
    entries = desk.entries()
    rows = tuple(quarantine_row(e, now) for e in entries[offset : offset + MAX_LISTED])
    return QuarantinePage(rows, page_view(Page(offset, MAX_LISTED, len(rows), len(entries)), PATH))


def routes(services: WebServices) -> APIRouter:
    """/quarantine: view (any user); put back (technologist or engineer)."""
    router = APIRouter()

    def listing(
        request: Request, error: str | None = None, status_code: int = 200, offset: int = 0
    ) -> HTMLResponse:
        desk = services.quarantine
        listed = None if desk is None else quarantine_rows(desk, services.clock.now(), offset)
        return render(
            request,
            "quarantine.html",
            status_code=status_code,
            rows=listed.rows if listed else (),
            page=listed.page if listed else None,
            error=error,
        )

    @router.get(PATH, response_class=HTMLResponse)
    def list_quarantine(
        request: Request, user: Annotated[User, Depends(current_user)], offset: Offset = 0
    ) -> HTMLResponse:
        """Quarantined files, oldest first, each with why; a page from ``offset``."""
        return listing(request, offset=offset)

    @router.post(PATH + "/{ident}/requeue", response_model=None)
    def requeue(
        request: Request, ident: Ident, user: Annotated[User, Depends(require_technologist)]
    ) -> HTMLResponse | RedirectResponse:
        """Put the file back through ingest, as if it arrived again."""
        desk = services.quarantine
        if desk is None:
            return listing(request, "the quarantine is not available", 409)
        try:
            result = desk.requeue(ident, web_actor(user))
        except RequeueError as exc:
            return listing(request, str(exc), 409)
        except (StorageNotReadyError, OSError) as exc:
            return listing(request, f"{ident}: not put back, it stays in quarantine: {exc}", 503)
        return redirect(PATH, f"{ident}: {result.what}")

    return router
