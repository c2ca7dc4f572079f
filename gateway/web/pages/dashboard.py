"""The dashboard (/): is the box taking images in, sending them out, and bound to the worklist?

One screen a technologist or engineer reads at a glance: each ingest source with its last
activity, each destination's queue (depth, age of the oldest waiting object, last success and
last error), how many objects are held, how fresh the worklist is, disk use, version, uptime.
Read-only; it carries no patient data (counts, names of sources and destinations, reasons).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse

from gateway.appliance.fatimport import read_panel_report
from gateway.appliance.netlive import ClockSync
from gateway.spool.space import describe as describe_storage
from gateway.spool.space import free_for_ingest, used_percent
from gateway.storagefault import StorageNotReadyError
from gateway.update.status import read_status
from gateway.web.deps import User, current_user
from gateway.web.netview import clock_state
from gateway.web.services import WebServices
from gateway.web.templating import NavLink, render
from gateway.web.views import (
    DestinationView,
    ago,
    destination_view,
    duration,
    local_time,
    size_text,
)

NAV = (NavLink("/", "Dashboard"),)


@dataclass(frozen=True)
class SourceView:
    """One ingest source: a drop folder, a serial port or the DICOM listener."""

    kind: str  # "folder", "serial" or "listener"
    name: str
    where: str  # the folder's path, the serial device, or the listener's port
    state: str  # e.g. "watching", "port open", "port closed"
    last_activity: str  # when it last handed an object over ("" when it cannot tell)
    counters: tuple[tuple[str, int], ...]  # name, value (serial and listener counters)


@dataclass(frozen=True)
class WorklistFreshness:
    """How old the cached worklist is and whether the last refresh worked."""

    configured: bool
    fetched: str  # "3 min ago" / "never"
    fetched_at: str
    items: int
    last_error: str | None


@dataclass(frozen=True)
class DiskView:
    """The state folder's filesystem, and the spool's share of it."""

    path: str
    total: str
    used: str
    free: str  # as the queue counts it (gateway.spool.space.free_for_ingest)
    used_percent: int  # as df prints it: used / (used + available)
    spool_used: str
    spool_limit: str
    low_water: str  # ingest pauses below this much free space
    ingest_room: str  # what the queue may still take before ingest pauses (disk or limit)
    storage_problem: str  # what is wrong with the state storage and what it stops ("" if ok)


@dataclass(frozen=True)
class DashboardView:
    """Everything the dashboard shows."""

    sources: tuple[SourceView, ...]
    destinations: tuple[DestinationView, ...]
    held: str  # "3", or "500+" past the cap
    worklist: WorklistFreshness
    disk: DiskView
    version: str
    uptime: str
    started_at: str
    update: str  # the updater's last install and its result, or "" when it never installed
    # synced, unsynced or unknown (gateway.appliance.netlive.clock_sync), with the banner's text
    clock: ClockSync
    firstboot: tuple[str, ...] = ()  # what the appliance's first boot could not do (this boot)


def update_line(services: WebServices) -> str:
    """The last software update as one line: version, result, reason; blacklisted versions."""
    status = read_status(services.state_dir)
    parts = []
    if status.version:
        result = status.result or status.state or ""
        parts.append(f"last update {status.version}: {result.replace('_', ' ')}")
        if status.reason:
            parts.append(status.reason)
    if status.blacklist:
        parts.append("refused for good: " + ", ".join(sorted(status.blacklist)))
    return "; ".join(parts)


def dashboard_view(services: WebServices) -> DashboardView:
    """The dashboard as of now, read from the running parts."""
    now = services.clock.now()
    # Counted, not listed: the exact number costs one COUNT, however many are held.
    try:
        held = str(services.reconciler.count_held())
        stats = services.spool.stats()
    except StorageNotReadyError:  # the queue waits for the state storage (the Box card says why)
        held, stats = "unknown", {}
    return DashboardView(
        sources=source_views(services, now),
        destinations=tuple(
            destination_view(s, now, services.lane_status(s.destination)) for s in stats.values()
        ),
        held=held,
        worklist=worklist_freshness(services, now),
        disk=disk_view(services),
        version=services.version,
        uptime=duration(now - services.started_at),
        started_at=local_time(services.started_at),
        update=update_line(services),
        # Written by `dicom-gateway appliance firstboot` at every boot, removed when all is well:
        # a refused dicom-gateway.toml from the card (key and line), a card that did not grow.
        firstboot=tuple(read_panel_report(services.state_dir)),
        clock=clock_state(services),
    )


def source_views(services: WebServices, now: float) -> tuple[SourceView, ...]:
    """Folders, serial ports and the listener, in configuration order."""
    out: list[SourceView] = []
    for folder in services.config.ingest.folder:
        watcher = services.watchers.get(folder.name)
        seen = None if watcher is None else watcher.last_activity
        out.append(
            SourceView(
                kind="folder",
                name=folder.name,
                where=str(folder.path),
                state="not running" if watcher is None else "watching",
                last_activity=ago(now, seen),
                counters=(),
            )
        )
    for port in services.config.ingest.serial:
        reader = services.serial_readers.get(port.name)
        counters: tuple[tuple[str, int], ...] = ()
        if reader is None:
            state = "not running"
        else:
            state = "port open" if reader.port.is_open else "port closed"
            counters = tuple(sorted(reader.stats().items()))
        out.append(
            SourceView(
                kind="serial",
                name=port.name,
                where=port.port,
                state=state,
                last_activity="",  # the reader keeps counters, not a time of the last message
                counters=counters,
            )
        )
    listener = services.config.dicom_listener
    if listener is not None:
        running = services.listener
        out.append(
            SourceView(
                kind="listener",
                name="DICOM listener",
                where=f"port {listener.port}",
                state="not running" if running is None else "listening",
                last_activity="",
                counters=() if running is None else tuple(sorted(running.stats().items())),
            )
        )
    return tuple(out)


def worklist_freshness(services: WebServices, now: float) -> WorklistFreshness:
    """Age of the worklist cache and the refresher's last error."""
    cache = services.worklist
    if cache is None:
        return WorklistFreshness(False, "", "", 0, None)
    fetched_at = cache.fetched_at
    refresher = services.refresher
    return WorklistFreshness(
        configured=True,
        fetched=ago(now, fetched_at),
        fetched_at=local_time(fetched_at),
        items=len(cache.items()),
        last_error=None if refresher is None else refresher.last_error,
    )


def disk_view(services: WebServices) -> DiskView:
    """The filesystem holding state_dir as the queue sees it (the spool's own probe), and the
    queue within its limit: the same figures that decide when ingest pauses."""
    spool = services.spool
    status = spool.storage_status()
    free = free_for_ingest(status)
    room = max(free - status.low_water, 0)
    try:
        used = spool.used_bytes()
    except StorageNotReadyError:
        spool_used = "unknown"
    else:
        spool_used = size_text(used)
        room = min(room, max(spool.max_bytes - used, 0))
    return DiskView(
        path=str(services.state_dir),
        total=size_text(status.space.total),
        used=size_text(status.space.used),
        free=size_text(free),
        used_percent=used_percent(status.space),
        spool_used=spool_used,
        spool_limit=size_text(spool.max_bytes),
        low_water=size_text(status.low_water),
        ingest_room=size_text(room),
        storage_problem=describe_storage(status),
    )


def routes(services: WebServices) -> APIRouter:
    """GET /: the dashboard (any signed-in user)."""
    router = APIRouter()

    @router.get("/", response_class=HTMLResponse)
    def dashboard(request: Request, user: Annotated[User, Depends(current_user)]) -> HTMLResponse:
        """The dashboard."""
        return render(request, "dashboard.html", view=dashboard_view(services))

    return router
