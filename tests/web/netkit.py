"""The appliance's two sides for panel tests: the panel and root's keeper over one fake root.

Root's side runs in the test as dicom-gateway-network-apply.path would run it; the panel at the
box's *new* address (198.51.100.7, which this machine does not have) is the same app and
accounts driven in-process through httpx's ASGI transport, whose ASGI ``server`` is the URL's
host: what uvicorn reports for a connection that arrived at that local address (checked with
real sockets in test_network_page).
"""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

import httpx
from fastapi import FastAPI

from gateway.appliance.netspool import handle_requests
from gateway.appliance.nettrial import NetworkKeeper
from gateway.clock import FakeClock
from gateway.web.app import create_web_app
from tests.appliance.netfakes import FakeRunner
from tests.web.panelkit import ENGINEER, RunningPanel

OLD = '[interface]\nmode = "static"\naddress = "192.0.2.10/24"\ngateway = "192.0.2.1"\n'
NEW_ADDRESS = "198.51.100.7"
STATIC_FORM = {
    "mode": "static",
    "address": f"{NEW_ADDRESS}/24",
    "gateway": "198.51.100.1",
    "dns": "198.51.100.53, 198.51.100.54",
    "domains": "radiology.example.org",
    "ntp": "ntp.example.org 198.51.100.123",
    "hostname": "ct-room-2-gateway",
    "name": "",
}
BOOT_ID = "0f1e2d3c-boot-1"


@dataclasses.dataclass
class Appliance:
    """The panel, root's side and the fake root they share."""

    panel: RunningPanel
    root: Path
    clock: FakeClock
    runner: FakeRunner

    def keeper(self) -> NetworkKeeper:
        return NetworkKeeper(self.root, self.runner, self.clock, lambda: BOOT_ID)

    def path_unit(self) -> list[str]:
        """What dicom-gateway-network-apply.service does when a request is waiting."""
        return [status.state for status in handle_requests(self.keeper())]

    def rendered(self) -> str:
        return (self.root / "run/systemd/network/10-dicom-gateway.network").read_text()

    def requests(self) -> list[Path]:
        return sorted((self.root / "run/dicom-gateway-network/requests").glob("*.json"))

    def at_new_address(self) -> httpx.Client:
        """A browser that reaches the box at its new address, logged in there."""
        app = create_web_app(self.panel.services, self.panel.auth)
        port = self.panel.services.config.web.port
        client = httpx.Client(transport=InProcess(app), base_url=f"https://{NEW_ADDRESS}:{port}")
        self.panel.clients.append(client)
        answer = self.panel.post_login(client, *ENGINEER)
        assert answer.status_code == 303, answer.text
        return client


class InProcess(httpx.BaseTransport):
    """A synchronous httpx transport into an ASGI app (httpx's own ASGITransport is async)."""

    def __init__(self, app: FastAPI) -> None:
        self.inner = httpx.ASGITransport(app=app)

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        # A fresh request with the body in memory: its stream serves the async side too.
        copy = httpx.Request(
            request.method, request.url, headers=request.headers, content=request.read()
        )

        async def send() -> tuple[int, httpx.Headers, bytes]:
            response = await self.inner.handle_async_request(copy)
            return response.status_code, response.headers, await response.aread()

        status, headers, body = asyncio.run(send())
        return httpx.Response(status, headers=headers, content=body, request=request)


def make_root(root: Path, *, appliance: bool) -> None:
    """A fake root: the boot id, a link, and (an appliance) the applied settings."""
    (root / "proc/sys/kernel/random").mkdir(parents=True)
    (root / "proc/sys/kernel/random/boot_id").write_text(BOOT_ID + "\n")
    (root / "sys/class/net/eth0").mkdir(parents=True)
    if appliance:
        (root / "data/system").mkdir(parents=True)
        (root / "data/system/network.toml").write_text(OLD)
