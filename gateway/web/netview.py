"""The "Network & time" screen's logic, without I/O where it can be: form <-> settings, the trial
as the dialog shows it, and the clock banner every page carries.

The panel never changes the network itself (it has neither the rights nor netlink): it writes a
request into root's spool (gateway.appliance.netspool) and shows the status root writes back.
Rules of the dialog (:func:`trial_view`, pure):

1. the time left is the trial's deadline on this boot's monotonic clock less the clock now (a
   trial of another boot shows 0: the boot render rolls it back);
2. a confirmation is offered only on a page that reached the box at an address the new
   settings gave it (:func:`gateway.appliance.nettrial.confirm_verdict`, the same rule root
   applies); elsewhere the page names the address(es) to open instead;
3. a revert is offered from any address.

Form rules (:func:`form_data`): lists are split at commas and white space; an empty input is an
absent key (its default applies); with DHCP the address and gateway inputs are ignored (a
field engineer switching to DHCP need not clear them). :func:`validate_form` returns the
settings or, per input, what is wrong with it, in the schema's own words.
"""

from __future__ import annotations

import ipaddress
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from starlette.datastructures import FormData

from gateway.appliance.netlive import ClockSync, read_clock_sync
from gateway.appliance.nettrial import (
    REQUESTS_DIR,
    SPOOL_DIR,
    STATUS_FILE,
    NetworkStatus,
    confirm_addresses,
    confirm_verdict,
)
from gateway.appliance.network import NetworkSettings, mode_problems, parse_network
from gateway.config import ConfigError
from gateway.web.services import WebServices

# The inputs of the form, in page order; each error is shown under one of them.
FIELDS = ("mode", "address", "gateway", "dns", "domains", "ntp", "hostname", "name", "ipv6_slaac")
LIST_FIELDS = ("dns", "domains", "ntp", "name")
_SPLIT = re.compile(r"[\s,]+")


def spool_dir(services: WebServices) -> Path:
    """Root's request spool as this process sees it."""
    return services.system_root / SPOOL_DIR.relative_to("/")


def is_appliance(services: WebServices) -> bool:
    """Whether root's network side runs on this box (its boot render wrote a status)."""
    return (spool_dir(services) / STATUS_FILE).is_file()


def clock_state(services: WebServices) -> ClockSync:
    """The clock banner's state for every page and the status API."""
    return read_clock_sync(services.system_root, appliance=is_appliance(services))


def waiting_requests(services: WebServices) -> int:
    """Requests written and not yet taken by root (the path unit has not run yet)."""
    try:
        return sum(
            1
            for p in (spool_dir(services) / REQUESTS_DIR).iterdir()
            if p.name.endswith(".json") and not p.name.startswith(".")
        )
    except OSError:
        return 0


# --- the form -------------------------------------------------------------------------------


@dataclass(frozen=True)
class NetworkForm:
    """The inputs as the page shows them (text, lists joined by spaces)."""

    mode: str = "dhcp"
    address: str = ""
    gateway: str = ""
    dns: str = ""
    domains: str = ""
    ntp: str = ""
    hostname: str = ""
    name: str = ""
    ipv6_slaac: bool = False


def form_of(settings: NetworkSettings) -> NetworkForm:
    """The form filled from settings."""
    iface = settings.interface
    return NetworkForm(
        mode=iface.mode,
        address=iface.address or "",
        gateway=iface.gateway or "",
        dns=" ".join(iface.dns),
        domains=" ".join(iface.domains),
        ntp=" ".join(settings.time.ntp),
        hostname=settings.hostname or "",
        name=" ".join(iface.name),
        ipv6_slaac=iface.ipv6_slaac,
    )


def posted_form(form: FormData) -> NetworkForm:
    """The form as it was posted (shown again with the errors)."""

    def text(name: str) -> str:
        value = form.get(name)
        return value.strip() if isinstance(value, str) else ""

    return NetworkForm(
        mode=text("mode") or "dhcp",
        address=text("address"),
        gateway=text("gateway"),
        dns=text("dns"),
        domains=text("domains"),
        ntp=text("ntp"),
        hostname=text("hostname"),
        name=text("name"),
        ipv6_slaac=text("ipv6_slaac") in ("on", "yes", "1", "true"),
    )


def _items(text: str) -> list[str]:
    return [part for part in _SPLIT.split(text) if part]


def form_data(form: NetworkForm) -> dict[str, Any]:
    """The network.toml table the form stands for (module docstring's rules)."""
    interface: dict[str, Any] = {"mode": form.mode, "ipv6_slaac": form.ipv6_slaac}
    if form.mode != "dhcp":
        if form.address:
            interface["address"] = form.address
        if form.gateway:
            interface["gateway"] = form.gateway
    for key in ("dns", "domains", "name"):
        values = _items(getattr(form, key))
        if values:
            interface[key] = values
    data: dict[str, Any] = {"interface": interface}
    ntp = _items(form.ntp)
    if ntp:
        data["time"] = {"ntp": ntp}
    if form.hostname:
        data["hostname"] = form.hostname
    return data


FieldErrors = dict[str, list[str]]


def validate_form(form: NetworkForm) -> NetworkSettings | FieldErrors:
    """The settings, or what is wrong, by input (every input of FIELDS may have some)."""
    data = form_data(form)
    try:
        return NetworkSettings.model_validate(data)
    except ValidationError as exc:
        errors: FieldErrors = {}
        for err in exc.errors():
            loc = tuple(str(part) for part in err["loc"])
            message = str(err["msg"]).removeprefix("Value error, ")
            for field in _fields_of(loc, data):
                errors.setdefault(field, []).append(message)
        return errors


def _fields_of(loc: tuple[str, ...], data: dict[str, Any]) -> list[str]:
    """The input(s) an error at ``loc`` belongs to."""
    keys = [part for part in loc if part in FIELDS]
    if keys:
        return keys[:1]
    if loc == ("interface",):  # a rule across mode, address and gateway
        iface = data["interface"]
        found = mode_problems(iface["mode"], iface.get("address"), iface.get("gateway"))
        return [key for key, _ in found[:1]] or ["mode"]
    return ["mode"]


# --- the trial, as the dialog shows it -------------------------------------------------------


@dataclass(frozen=True)
class TrialView:
    """A change on trial as the page shows it."""

    trial_id: str
    actor: str
    seconds: int
    seconds_left: int
    confirm_here: bool  # this page reached the box at an address the new settings gave it
    confirm_urls: tuple[str, ...]  # where to open the panel to confirm
    pending: NetworkForm


def url_for(address: str, port: int, path: str = "/network") -> str:
    """The panel's URL at ``address`` (IPv6 in brackets; port 443 left out)."""
    try:
        host = f"[{address}]" if ipaddress.ip_address(address).version == 6 else address
    except ValueError:
        host = address
    return f"https://{host}{'' if port == 443 else f':{port}'}{path}"


def trial_view(
    status: NetworkStatus,
    *,
    boot_id: str,
    monotonic: float,
    local_address: str,
    leased: frozenset[str],
    port: int,
) -> TrialView | None:
    """The trial of ``status`` for this page (module docstring), or None when none runs."""
    trial = status.trial
    if status.state != "pending" or trial is None or not status.pending_toml:
        return None
    try:
        settings = parse_network(status.pending_toml)
    except ConfigError:
        return None
    left = trial.deadline - monotonic if trial.boot_id == boot_id else 0.0
    verdict = confirm_verdict(settings, local_address, leased)
    addresses = confirm_addresses(settings) or tuple(sorted(leased))
    urls = [url_for(a, port) for a in addresses]
    name = settings.hostname
    if name and settings.interface.mode == "dhcp":
        urls.append(url_for(f"{name}.local", port))
    return TrialView(
        trial_id=trial.trial_id,
        actor=trial.actor,
        seconds=trial.seconds,
        seconds_left=max(0, math.ceil(left)),
        confirm_here=verdict.counts,
        confirm_urls=tuple(urls),
        pending=form_of(settings),
    )
