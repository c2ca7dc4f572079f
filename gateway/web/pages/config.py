"""Configuration (/config): section forms, the raw TOML editor, history with diffs, download.

Every save validates first (problems name the key and the line of the file that would be
written), then applies through gateway.configstore: the old file becomes a version, the new one
is written durably, and the gateway restarts on it, rolling back by itself if it does not come
back ready. Upload is the raw editor filled from a local file (static/config.js), so nothing but
an urlencoded form is ever posted. Engineers only.
"""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response
from starlette.datastructures import FormData

from gateway.web.auth.users import Role
from gateway.web.deps import User, read_form, require_engineer, web_actor
from gateway.web.pages.configedit import (
    applied_message,
    apply_data,
    apply_text,
    config_store,
    file_data,
)
from gateway.web.pages.configforms import SECTIONS, section_values, table_from_form
from gateway.web.services import WebServices
from gateway.web.templating import NavLink, redirect, render
from gateway.web.views import local_time

PATH = "/config"
NAV = (NavLink(PATH, "Configuration", Role.ENGINEER),)
MAX_COMMENT = 200


def routes(services: WebServices) -> APIRouter:
    """/config: forms, raw editor, history, diff, restore, download (engineer)."""
    router = APIRouter()

    def page(
        request: Request,
        *,
        raw: str | None = None,
        problems: tuple[str, ...] = (),
        problems_for: str = "",
        notice: str = "",
        status: int = 200,
    ) -> HTMLResponse:
        store = config_store(services)
        data = file_data(services)
        sections = [
            {
                "name": name,
                "fields": section_values(name, data.get(name) or {}),
                "present": name in data or name in ("gateway", "modality", "web"),
            }
            for name in SECTIONS
        ]
        history = [
            {
                "id": v.version_id,
                "saved": local_time(v.saved_at),
                "actor": v.actor,
                "comment": v.comment,
            }
            for v in store.versions()
        ]
        return render(
            request,
            "config.html",
            status_code=status,
            sections=sections,
            raw=store.current_text() if raw is None else raw,
            history=history,
            problems=problems,
            problems_for=problems_for,
            notice=notice,
            path=str(services.config_path),
        )

    @router.get(PATH, response_class=HTMLResponse)
    def show(request: Request, user: Annotated[User, Depends(require_engineer)]) -> HTMLResponse:
        """The configuration as forms and as TOML, with its history."""
        return page(request)

    @router.post(PATH + "/section/{section}", response_model=None)
    def save_section(
        request: Request,
        section: str,
        user: Annotated[User, Depends(require_engineer)],
        form: Annotated[FormData, Depends(read_form)],
    ) -> HTMLResponse | RedirectResponse:
        """Apply one section's form."""
        if section not in SECTIONS:
            return page(request, problems=(f"no section {section!r}",), status=404)
        data: dict[str, Any] = file_data(services)
        data[section] = table_from_form(section, form, data.get(section) or {})
        comment = _comment(form) or f"[{section}] edited"
        result = apply_data(services, data, web_actor(user), comment, "config form")
        if not result.ok:
            return page(request, problems=result.problems, problems_for=section, status=422)
        return redirect(PATH, applied_message(result))

    @router.post(PATH + "/raw", response_model=None)
    def save_raw(
        request: Request,
        user: Annotated[User, Depends(require_engineer)],
        form: Annotated[FormData, Depends(read_form)],
    ) -> HTMLResponse | RedirectResponse:
        """Validate the TOML text, or validate and apply it."""
        text = str(form.get("toml", "")).replace("\r\n", "\n")
        if form.get("action") == "validate":
            problems = config_store(services).validate(text)
            if problems:
                return page(
                    request, raw=text, problems=tuple(problems), problems_for="raw", status=422
                )
            return page(request, raw=text, notice="Valid: nothing was saved yet.")
        comment = _comment(form) or "edited as TOML"
        result = apply_text(services, text, web_actor(user), comment, "config raw")
        if not result.ok:
            return page(request, raw=text, problems=result.problems, problems_for="raw", status=422)
        return redirect(PATH, applied_message(result))

    @router.get(PATH + "/history/{version_id}", response_class=HTMLResponse)
    def show_version(
        request: Request, version_id: str, user: Annotated[User, Depends(require_engineer)]
    ) -> HTMLResponse:
        """One version: what changed from the version before it, and against the file now."""
        store = config_store(services)
        version = store.version(version_id)
        if version is None:
            return page(request, problems=(f"no version {version_id}",), status=404)
        older = [v for v in store.versions() if int(v.version_id) < int(version.version_id)]
        return render(
            request,
            "config_version.html",
            version={
                "id": version.version_id,
                "saved": local_time(version.saved_at),
                "actor": version.actor,
                "comment": version.comment,
            },
            previous=older[0].version_id if older else None,
            from_previous=store.diff(older[0].version_id, version.version_id) if older else None,
            to_current=store.diff(version.version_id),
            text=store.read_version(version),
        )

    @router.post(PATH + "/history/{version_id}/restore", response_model=None)
    def restore(
        request: Request, version_id: str, user: Annotated[User, Depends(require_engineer)]
    ) -> HTMLResponse | RedirectResponse:
        """Apply a saved version again (validated, with rollback)."""
        store = config_store(services)
        version = store.version(version_id)
        if version is None:
            return page(request, problems=(f"no version {version_id}",), status=404)
        result = apply_text(
            services,
            store.read_version(version),
            web_actor(user),
            f"restore of version {version_id}",
            "config history",
        )
        if not result.ok:
            return page(request, problems=result.problems, problems_for="raw", status=422)
        return redirect(PATH, applied_message(result))

    @router.get(PATH + "/download")
    def download(user: Annotated[User, Depends(require_engineer)]) -> Response:
        """The config file as it is on disk."""
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(services.clock.now()))
        return PlainTextResponse(
            config_store(services).current_text(),
            media_type="application/toml",
            headers={"content-disposition": f'attachment; filename="gateway-{stamp}.toml"'},
        )

    return router


def _comment(form: FormData) -> str:
    return " ".join(str(form.get("comment", "")).split())[:MAX_COMMENT]
