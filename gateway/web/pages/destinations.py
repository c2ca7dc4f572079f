"""Destinations (/destinations): the PACS links; add, edit, remove, and test with C-ECHO.

Changes go through the config file (gateway.configstore: validated, versioned, applied with a
restart and automatic rollback). "Test" runs a C-ECHO (gateway.forward.echo) towards a
configured destination or the unsaved values of the form, and shows the TLS version, cipher,
the PACS certificate's subject and expiry, or the exact reason it failed. Engineers only.
"""

from __future__ import annotations

import copy
import ssl
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from starlette.datastructures import FormData

from gateway.config import ConfigError, Destination, parse_config
from gateway.configtoml import dumps
from gateway.forward.condition import Condition, LaneStatus
from gateway.forward.echo import EchoReport, echo
from gateway.forward.tlsctx import client_context
from gateway.web.auth.users import Role
from gateway.web.deps import User, read_form, require_engineer, web_actor
from gateway.web.pages.configedit import applied_message, apply_data, file_data
from gateway.web.services import WebServices
from gateway.web.templating import NavLink, redirect, render
from gateway.web.views import ago, condition_text, local_time

PATH = "/destinations"
NAV = (NavLink(PATH, "Destinations", Role.ENGINEER),)
FIELDS = ("name", "ae_title", "host", "port", "connect_timeout")
TLS_FIELDS = ("ca", "cert", "key")


@dataclass(frozen=True)
class EchoView:
    """A C-ECHO result for display."""

    destination: str
    ok: bool
    reason: str
    tls_version: str
    cipher: str
    peer_subject: str
    peer_expires: str
    round_trip: str
    association: str


def echo_view(name: str, report: EchoReport) -> EchoView:
    """An EchoReport as text."""
    return EchoView(
        destination=name,
        ok=report.ok,
        reason=report.reason,
        tls_version=report.tls_version or "",
        cipher=report.cipher or "",
        peer_subject=report.peer_subject or "",
        peer_expires=local_time(report.peer_not_after.timestamp()) if report.peer_not_after else "",
        round_trip=f"{report.round_trip_ms:.1f} ms" if report.round_trip_ms is not None else "",
        association=f"{report.calling_ae_title} → {report.called_ae_title}",
    )


def run_echo(services: WebServices, destination: Destination) -> EchoReport:
    """C-ECHO towards ``destination`` with our AE title; a TLS file problem is a failed test."""
    try:
        ctx = client_context(destination.tls, services.credentials_dir) if destination.tls else None
    except (OSError, ssl.SSLError, ValueError) as exc:
        return EchoReport(
            ok=False,
            reason=f"TLS files cannot be used: {exc}",
            called_ae_title=destination.ae_title,
            calling_ae_title=services.config.gateway.ae_title,
        )
    return echo(destination, services.config.gateway.ae_title, ctx)


def form_values(entry: dict[str, Any] | None) -> dict[str, Any]:
    """What the edit form shows for a destination of the file (or a new one)."""
    entry = entry or {}
    tls = entry.get("tls") or {}
    return {
        "name": entry.get("name", ""),
        "ae_title": entry.get("ae_title", ""),
        "host": entry.get("host", ""),
        "port": entry.get("port", 104),
        "connect_timeout": entry.get("connect_timeout", 10.0),
        "use_tls": bool(tls),
        "ca": tls.get("ca", ""),
        "cert": tls.get("cert", ""),
        "key": tls.get("key", ""),
        "verify_hostname": tls.get("verify_hostname", True),
        "min_version": tls.get("min_version", "1.2"),
    }


def entry_from_form(form: FormData, base: dict[str, Any] | None) -> dict[str, Any]:
    """The [[destination]] table from the form, keeping keys the form does not show."""
    entry = copy.deepcopy(base) if base else {}
    for key in FIELDS:
        raw = str(form.get(key, "")).strip()
        entry[key] = (
            _number(raw, int if key == "port" else float)
            if key
            in (
                "port",
                "connect_timeout",
            )
            else raw
        )
    if form.get("use_tls"):
        tls = dict(entry.get("tls") or {})
        for key in TLS_FIELDS:
            tls[key] = str(form.get(key, "")).strip()
        tls["verify_hostname"] = bool(form.get("verify_hostname"))
        tls["min_version"] = "1.3" if form.get("min_version") == "1.3" else "1.2"
        entry["tls"] = tls
    else:
        entry.pop("tls", None)
    return entry


def _state_text(status: LaneStatus | None, now: float) -> str:
    """What the lane is doing: delivering, or why not (paused with the reason)."""
    if status is None:
        return "not running (restart pending)"
    text = condition_text(status, now)
    if status.next_attempt_at is not None and status.condition is not Condition.OK:
        text += f" (next try {ago(now, status.next_attempt_at)})"
    return text


def _in_trouble(status: LaneStatus | None) -> bool:
    return status is not None and status.condition is not Condition.OK


def _number(raw: str, kind: type[int] | type[float]) -> int | float | str:
    try:
        return kind(raw)
    except ValueError:
        return raw  # left as text: validation names the key and the line


def with_destination(
    data: dict[str, Any], original: str | None, entry: dict[str, Any] | None
) -> dict[str, Any]:
    """``data`` with destination ``original`` replaced by ``entry`` (added; None: removed)."""
    out = copy.deepcopy(data)
    dests: list[dict[str, Any]] = list(out.get("destination") or [])
    index = next((i for i, d in enumerate(dests) if d.get("name") == original), None)
    if entry is None:
        if index is not None:
            del dests[index]
    elif index is None:
        dests.append(entry)
    else:
        dests[index] = entry
    out["destination"] = dests
    return out


def routes(services: WebServices) -> APIRouter:
    """/destinations: list, add, edit, remove, test (engineer)."""
    router = APIRouter()

    def file_entry(name: str) -> dict[str, Any] | None:
        for entry in file_data(services).get("destination") or []:
            if entry.get("name") == name:
                return dict(entry)
        return None

    def listing(
        request: Request, *, result: EchoView | None = None, error: str = "", status: int = 200
    ) -> HTMLResponse:
        stats = services.spool.stats()
        now = services.clock.now()
        rows = [
            {
                "name": d.name,
                "address": f"{d.ae_title}@{d.host}:{d.port}",
                "tls": "TLS " + d.tls.min_version + "+" if d.tls else "plain TCP",
                "queued": sum(
                    n for s, n in stats[d.name].counts.items() if s in ("pending", "sending")
                )
                if d.name in stats
                else 0,
                "state": _state_text(services.lane_status(d.name), now),
                "trouble": _in_trouble(services.lane_status(d.name)),
            }
            for d in services.config.destination
        ]
        running = {d.name for d in services.config.destination}
        in_file = [e.get("name", "") for e in file_data(services).get("destination") or []]
        return render(
            request,
            "destinations.html",
            status_code=status,
            rows=rows,
            pending=sorted(set(in_file) - running),
            result=result,
            error=error,
        )

    def editor(
        request: Request,
        values: dict[str, Any],
        original: str,
        *,
        problems: tuple[str, ...] = (),
        result: EchoView | None = None,
        status: int = 200,
    ) -> HTMLResponse:
        return render(
            request,
            "destination_edit.html",
            status_code=status,
            v=values,
            original=original,
            problems=problems,
            result=result,
        )

    @router.get(PATH, response_class=HTMLResponse)
    def show(request: Request, user: Annotated[User, Depends(require_engineer)]) -> HTMLResponse:
        """The destinations of the running configuration."""
        return listing(request)

    @router.get(PATH + "/new", response_class=HTMLResponse)
    def new(request: Request, user: Annotated[User, Depends(require_engineer)]) -> HTMLResponse:
        """An empty destination form."""
        return editor(request, form_values(None), "")

    @router.get(PATH + "/{name}/edit", response_class=HTMLResponse)
    def edit(
        request: Request, name: str, user: Annotated[User, Depends(require_engineer)]
    ) -> HTMLResponse:
        """The form for one destination of the config file."""
        entry = file_entry(name)
        if entry is None:
            return listing(
                request, error=f"No destination {name!r} in the config file.", status=404
            )
        return editor(request, form_values(entry), name)

    @router.post(PATH + "/save", response_model=None)
    def save(
        request: Request,
        user: Annotated[User, Depends(require_engineer)],
        form: Annotated[FormData, Depends(read_form)],
    ) -> HTMLResponse | RedirectResponse:
        """Save (validated, applied with rollback) or test the form's values."""
        original = str(form.get("original", "")).strip()
        base = file_entry(original) if original else None
        entry = entry_from_form(form, base)
        data = with_destination(file_data(services), original or None, entry)
        values = form_values(entry)
        if form.get("action") == "test":
            return test_unsaved(request, data, entry, values, original)
        comment = f"destination {entry['name']} " + ("edited" if original else "added")
        result = apply_data(services, data, web_actor(user), comment, "destinations")
        if not result.ok:
            return editor(request, values, original, problems=result.problems, status=422)
        return redirect(PATH, applied_message(result))

    def test_unsaved(
        request: Request,
        data: dict[str, Any],
        entry: dict[str, Any],
        values: dict[str, Any],
        original: str,
    ) -> HTMLResponse:
        try:
            config = parse_config(
                data,
                text=dumps(data),
                source=services.config_path,
                credentials_dir=services.credentials_dir,
            )
        except ConfigError as exc:
            return editor(request, values, original, problems=tuple(exc.problems), status=422)
        destination = next(d for d in config.destination if d.name == entry["name"])
        view = echo_view(destination.name, run_echo(services, destination))
        return editor(request, values, original, result=view)

    @router.post(PATH + "/{name}/test", response_class=HTMLResponse)
    def test(
        request: Request, name: str, user: Annotated[User, Depends(require_engineer)]
    ) -> HTMLResponse:
        """C-ECHO towards a destination of the running configuration."""
        destination = next((d for d in services.config.destination if d.name == name), None)
        if destination is None:
            return listing(request, error=f"No destination {name!r} is running.", status=404)
        return listing(request, result=echo_view(name, run_echo(services, destination)))

    @router.post(PATH + "/{name}/remove", response_model=None)
    def remove(
        request: Request,
        name: str,
        user: Annotated[User, Depends(require_engineer)],
        form: Annotated[FormData, Depends(read_form)],
    ) -> HTMLResponse | RedirectResponse:
        """Remove a destination from the config (its queued deliveries stay, unclaimed)."""
        if form.get("confirm") != "yes":
            return listing(request, error="Tick the box to confirm the removal.", status=422)
        if file_entry(name) is None:
            return listing(
                request, error=f"No destination {name!r} in the config file.", status=404
            )
        data = with_destination(file_data(services), name, None)
        result = apply_data(
            services, data, web_actor(user), f"destination {name} removed", "destinations"
        )
        if not result.ok:
            return listing(request, error="; ".join(result.problems), status=422)
        return redirect(PATH, applied_message(result))

    return router
