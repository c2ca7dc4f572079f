"""The worklist screen (/worklist): the cached steps, "Refresh now", and the room's procedure.

A technologist picks the step the next exam is for ("Select for this room"); files dropped from
then on are bound to it first, until it is cleared or expires. Selecting names the step by its
item key in the POST body (never the URL): the key is a hash, the form carries no patient data.
The same rules and audit lines as ``dicom-gateway procedure select`` and PUT /api/v1/procedure.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from starlette.datastructures import FormData

from gateway.web.deps import User, current_user, read_form, require_technologist, web_actor
from gateway.web.services import WebServices
from gateway.web.templating import NavLink, redirect, render
from gateway.web.views import ItemView, ago, form_text, item_view, local_time

PATH = "/worklist"
NAV = (NavLink(PATH, "Worklist"),)
NO_WORKLIST = "This gateway has no [worklist] configured: there is no worklist to show."


@dataclass(frozen=True)
class SelectionView:
    """The room's selection as the screen shows it."""

    item: ItemView | None  # None: the selected step left the cache (files are not bound to it)
    accession_number: str
    selected_by: str
    selected: str  # "12 min ago"
    expired: bool


@dataclass(frozen=True)
class WorklistView:
    """Everything the worklist screen shows."""

    configured: bool
    fetched: str  # "3 min ago" / "never"
    fetched_at: str
    last_error: str | None
    can_refresh: bool
    items: tuple[ItemView, ...]
    selection: SelectionView | None


def worklist_view(services: WebServices) -> WorklistView:
    """The worklist screen as of now."""
    cache, selection = services.worklist, services.selection
    if cache is None:
        return WorklistView(False, "", "", None, False, (), None)
    now = services.clock.now()
    current = None if selection is None else selection.current()
    recorded = current
    if recorded is None and selection is not None:
        recorded = selection.recorded()  # expired: shown as such, files are not bound to it
    selected_key = None if current is None else current.item_key
    chosen: SelectionView | None = None
    if recorded is not None:
        item = cache.get(recorded.item_key)
        chosen = SelectionView(
            item=None if item is None else item_view(item, now, selected_key),
            accession_number=recorded.accession_number,
            selected_by=recorded.by,
            selected=ago(now, recorded.selected_at),
            expired=current is None,
        )
    fetched_at = cache.fetched_at
    refresher = services.refresher
    return WorklistView(
        configured=True,
        fetched=ago(now, fetched_at),
        fetched_at=local_time(fetched_at),
        last_error=None if refresher is None else refresher.last_error,
        can_refresh=refresher is not None,
        items=tuple(item_view(item, now, selected_key) for item in cache.items()),
        selection=chosen,
    )


def routes(services: WebServices) -> APIRouter:
    """/worklist: view (any user); refresh, select and clear (technologist or engineer)."""
    router = APIRouter()

    def page(request: Request, error: str | None = None, status_code: int = 200) -> HTMLResponse:
        view = worklist_view(services)
        return render(request, "worklist.html", status_code=status_code, view=view, error=error)

    @router.get(PATH, response_class=HTMLResponse)
    def show(request: Request, user: Annotated[User, Depends(current_user)]) -> HTMLResponse:
        """The cached worklist and the room's selection."""
        return page(request)

    @router.post(f"{PATH}/refresh", response_model=None)
    def refresh(
        request: Request, user: Annotated[User, Depends(require_technologist)]
    ) -> HTMLResponse | RedirectResponse:
        """Ask the RIS now; a failure keeps the cache and is shown on the page."""
        refresher = services.refresher
        if services.worklist is None or refresher is None:
            return page(request, NO_WORKLIST, 409)
        refresher.refresh_now()  # serialised with the refresher's loop; never raises
        error = refresher.last_error
        services.audit.append(
            web_actor(user),
            "worklist refresh",
            "worklist",
            {"ok": error is None, "items": refresher.last_count},
        )
        if error is not None:
            return page(request, f"The refresh failed; the cache was kept: {error}", 502)
        return redirect(PATH, f"Worklist refreshed: {refresher.last_count} step(s).")

    @router.post(f"{PATH}/select", response_model=None)
    def select(
        request: Request,
        user: Annotated[User, Depends(require_technologist)],
        form: Annotated[FormData, Depends(read_form)],
    ) -> HTMLResponse | RedirectResponse:
        """Make this step the room's procedure."""
        cache, selection = services.worklist, services.selection
        if cache is None or selection is None:
            return page(request, NO_WORKLIST, 409)
        item = cache.get(form_text(form, "item_key"))
        if item is None:
            return page(
                request, "That step is no longer in the worklist: refresh and pick again.", 404
            )
        chosen = selection.select(item, web_actor(user))
        # The same audit line as `dicom-gateway procedure select` and the API.
        services.audit.append(
            chosen.by,
            "procedure select",
            f"accession {item.accession_number}",
            {"item_key": item.key, "step": item.scheduled_procedure_step_id},
        )
        return redirect(PATH, "Selected for this room: files dropped now are bound to it.")

    @router.post(f"{PATH}/clear", response_model=None)
    def clear(
        request: Request, user: Annotated[User, Depends(require_technologist)]
    ) -> HTMLResponse | RedirectResponse:
        """Select nothing: files are bound by file name or sidecar again."""
        if services.selection is None:
            return page(request, NO_WORKLIST, 409)
        services.selection.clear(web_actor(user))
        services.audit.append(web_actor(user), "procedure clear", "room selection", {})
        return redirect(PATH, "Selection cleared: files are bound by file name or sidecar.")

    return router
