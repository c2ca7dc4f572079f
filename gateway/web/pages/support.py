"""Support (/support): the recent log (journal, scrubbed like the bundle) and the bundle download.

Downloading the bundle is audited (``support.bundle``): it leaves the box. Engineers only.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, Response

from gateway.support import JournalReader, build_bundle, known_identities, read_journal, scrub
from gateway.web.auth.users import Role
from gateway.web.deps import User, require_engineer, web_actor
from gateway.web.services import WebServices
from gateway.web.templating import NavLink, render

PATH = "/support"
NAV = (NavLink(PATH, "Support", Role.ENGINEER),)
LOG_LINES_SHOWN = 300


def routes(services: WebServices, journal: JournalReader = read_journal) -> APIRouter:
    """/support and /support/bundle (engineer); ``journal`` is injectable for tests."""
    router = APIRouter()

    @router.get(PATH, response_class=HTMLResponse)
    def show(request: Request, user: Annotated[User, Depends(require_engineer)]) -> HTMLResponse:
        """The newest log lines, newest last, and the bundle button."""
        text, note = journal()
        lines: list[str] = []
        if text:
            lines = scrub(text, known_identities(services)).splitlines()[-LOG_LINES_SHOWN:]
        return render(request, "support.html", lines=lines, note=note, version=services.version)

    @router.post(PATH + "/bundle")
    def bundle(user: Annotated[User, Depends(require_engineer)]) -> Response:
        """The support bundle as a zip download (a POST: it is audited, and leaves the box)."""
        made = build_bundle(services, journal)
        services.audit.append(
            web_actor(user), "support.bundle", "support", {"bytes": len(made.data)}
        )
        return Response(
            made.data,
            media_type="application/zip",
            headers={"content-disposition": f'attachment; filename="{made.filename}"'},
        )

    return router
