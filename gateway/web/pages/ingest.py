"""Ingest (/ingest): drop folders and serial ports with their counters, and a live serial monitor.

The monitor polls ``/ingest/serial/{name}/events?after=N`` (JSON) every second from
static/engineer.js; the events are the port's framing (gateway.ingest.serial.monitor: control
bytes, frame numbers, lengths, checksum verdicts), never what a frame said. Engineers only.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse

from gateway.web.auth.users import Role
from gateway.web.deps import User, require_engineer
from gateway.web.services import WebServices
from gateway.web.templating import NavLink, render
from gateway.web.views import ago, local_time

PATH = "/ingest"
NAV = (NavLink(PATH, "Ingest", Role.ENGINEER),)
EVENTS_PER_POLL = 200


def routes(services: WebServices) -> APIRouter:
    """/ingest and the serial monitor's event feed (engineer)."""
    router = APIRouter()

    @router.get(PATH, response_class=HTMLResponse)
    def show(request: Request, user: Annotated[User, Depends(require_engineer)]) -> HTMLResponse:
        """Folders and serial ports with what they did."""
        now = services.clock.now()
        folders = [
            {
                "name": f.name,
                "path": str(f.path),
                "last": ago(now, services.watchers[f.name].last_activity)
                if f.name in services.watchers
                else "not running",
            }
            for f in services.config.ingest.folder
        ]
        ports = []
        for line in services.config.ingest.serial:
            reader = services.serial_readers.get(line.name)
            ports.append(
                {
                    "name": line.name,
                    "port": line.port,
                    "profile": line.profile,
                    "settings": f"{line.baudrate} {line.bytesize}{line.parity[0].upper()}"
                    f"{line.stopbits:g}, flow {line.flow_control}",
                    "running": reader is not None,
                    "open": reader is not None and reader.port.is_open,
                    "stats": sorted(reader.stats().items()) if reader else [],
                }
            )
        return render(request, "ingest.html", folders=folders, ports=ports, monitor=None)

    @router.get(PATH + "/serial/{name}", response_class=HTMLResponse)
    def monitor(
        request: Request, name: str, user: Annotated[User, Depends(require_engineer)]
    ) -> HTMLResponse:
        """The live monitor of one port."""
        if name not in services.serial_readers:
            raise HTTPException(404, f"no serial port {name!r} is running")
        return render(request, "ingest_monitor.html", name=name)

    @router.get(PATH + "/serial/{name}/events")
    def events(
        name: str,
        user: Annotated[User, Depends(require_engineer)],
        after: Annotated[int, Query(ge=0)] = 0,
    ) -> JSONResponse:
        """Framing events newer than ``after`` (oldest first) and whether the port is open."""
        reader = services.serial_readers.get(name)
        if reader is None:
            raise HTTPException(404, f"no serial port {name!r} is running")
        out: list[dict[str, Any]] = [
            {
                "seq": e.seq,
                "time": local_time(e.at),
                "direction": e.direction,
                "kind": e.kind,
                "length": e.length,
                "frame_number": e.frame_number,
                "final": e.final,
                "checksum_ok": e.checksum_ok,
                "problem": e.problem,
            }
            for e in reader.monitor.events(after, EVENTS_PER_POLL)
        ]
        return JSONResponse(
            {
                "port": name,
                "open": reader.port.is_open,
                "last_seq": reader.monitor.last_seq,
                "events": out,
            }
        )

    return router
