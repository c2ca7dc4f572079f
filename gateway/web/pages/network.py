"""Network & time (/network): the box's address (DHCP or static), gateway, DNS, NTP servers and
host name, applied like a display-settings dialog. Engineers only; every request is audited.

*Apply* validates the form (gateway.web.netview), then writes an ``apply`` request into root's
spool; root (dicom-gateway-network-apply) validates it again, puts the settings on trial and
starts the rollback timer. The page then counts down: the change must be confirmed from the
box's *new* address (log in there: the session cookie belongs to the old one) within
``[web] network_confirm_seconds``, else root brings the previous settings back. *Revert* asks
for that at once. On a box where root's side does not run (no status file: not an appliance)
the page shows the network as it is and changes nothing. Rules: docs/network.md.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from starlette.datastructures import FormData

from gateway.appliance.netlive import dhcp_addresses, read_live
from gateway.appliance.netspool import submit
from gateway.appliance.nettrial import NetworkStatus, read_boot_id, read_status
from gateway.appliance.network import default_network, parse_network, to_toml
from gateway.config import ConfigError
from gateway.netaddr import host_address
from gateway.web.auth.users import Role
from gateway.web.deps import User, read_form, require_engineer, web_actor
from gateway.web.netview import (
    FieldErrors,
    NetworkForm,
    TrialView,
    form_of,
    posted_form,
    spool_dir,
    trial_view,
    validate_form,
    waiting_requests,
)
from gateway.web.services import WebServices
from gateway.web.templating import NavLink, redirect, render
from gateway.web.views import local_time

PATH = "/network"
NAV = (NavLink(PATH, "Network & time", Role.ENGINEER),)


def local_address(request: Request) -> str:
    """The box's address this request reached (the socket's, never the Host header)."""
    server = request.scope.get("server")
    return host_address(str(server[0])) if server else ""


def routes(services: WebServices) -> APIRouter:
    """/network: the settings, the trial dialog, apply / confirm / revert (engineer)."""
    router = APIRouter()
    web = services.config.web

    def status() -> NetworkStatus | None:
        return read_status(spool_dir(services))

    def trial_of(request: Request, current: NetworkStatus | None) -> TrialView | None:
        if current is None:
            return None
        return trial_view(
            current,
            boot_id=read_boot_id(services.system_root),
            monotonic=services.clock.monotonic(),
            local_address=local_address(request),
            leased=dhcp_addresses(services.system_root),
            port=web.port,
        )

    def page(
        request: Request,
        *,
        form: NetworkForm | None = None,
        errors: FieldErrors | None = None,
        status_code: int = 200,
    ) -> HTMLResponse:
        current = status()
        trial = trial_of(request, current)
        if form is None:
            form = trial.pending if trial is not None else applied_form(current)
        return render(
            request,
            "network.html",
            status_code=status_code,
            appliance=current is not None,
            current=current,
            outcome_at=local_time(current.at) if current is not None else "",
            trial=trial,
            waiting=waiting_requests(services),
            live=read_live(services.system_root),
            here=local_address(request),
            form=form,
            errors=errors or {},
            confirm_seconds=web.network_confirm_seconds,
        )

    @router.get(PATH, response_class=HTMLResponse)
    def show(request: Request, user: Annotated[User, Depends(require_engineer)]) -> HTMLResponse:
        """The network now, the settings, and the change on trial, if any."""
        return page(request)

    def refuse_unless_appliance() -> NetworkStatus:
        current = status()
        if current is None:
            raise HTTPException(409, "this box's network is managed by its operating system")
        return current

    @router.post(PATH, response_model=None)
    def apply(
        request: Request,
        user: Annotated[User, Depends(require_engineer)],
        form: Annotated[FormData, Depends(read_form)],
    ) -> HTMLResponse | RedirectResponse:
        """Validate the form and ask root to put it on trial."""
        current = refuse_unless_appliance()
        if current.state == "pending" and current.trial is not None:
            raise HTTPException(409, "a network change is on trial: confirm or revert it first")
        posted = posted_form(form)
        checked = validate_form(posted)
        if isinstance(checked, dict):
            return page(request, form=posted, errors=checked, status_code=422)
        actor = web_actor(user)
        submit(
            spool_dir(services),
            "apply",
            {"actor": actor, "toml": to_toml(checked), "seconds": web.network_confirm_seconds},
        )
        services.audit.append(
            actor, "network.apply", "network", checked.model_dump(exclude_none=True)
        )
        return redirect(
            PATH,
            f"Network change sent. Confirm it from the box's new address within "
            f"{web.network_confirm_seconds} s, or the previous settings come back.",
        )

    def trial_request(kind: str, user: User, form: FormData, request: Request) -> str:
        refuse_unless_appliance()
        trial_id = form.get("trial")
        if not isinstance(trial_id, str) or not 0 < len(trial_id) <= 64:
            raise HTTPException(400, "no trial named")
        actor = web_actor(user)
        fields = {"actor": actor, "trial": trial_id}
        if kind == "confirm":
            fields["via"] = local_address(request)
        submit(spool_dir(services), kind, fields)
        services.audit.append(actor, f"network.{kind}", "network", fields)
        return actor

    @router.post(PATH + "/confirm", response_model=None)
    def confirm(
        request: Request,
        user: Annotated[User, Depends(require_engineer)],
        form: Annotated[FormData, Depends(read_form)],
    ) -> RedirectResponse:
        """Keep the settings on trial (counts only at the new address: root checks)."""
        trial_request("confirm", user, form, request)
        return redirect(PATH, "Confirmation sent.")

    @router.post(PATH + "/revert", response_model=None)
    def revert(
        request: Request,
        user: Annotated[User, Depends(require_engineer)],
        form: Annotated[FormData, Depends(read_form)],
    ) -> RedirectResponse:
        """Bring the previous settings back now."""
        trial_request("revert", user, form, request)
        return redirect(PATH, "Revert sent: the previous settings come back.")

    return router


def applied_form(current: NetworkStatus | None) -> NetworkForm:
    """The form filled with the applied settings (the DHCP default when there are none)."""
    if current is not None and current.applied_toml:
        try:
            return form_of(parse_network(current.applied_toml))
        except ConfigError:
            pass
    return form_of(default_network())
