"""The HTTPS panel as the daemon runs it, on a loopback port, over a real spool and audit log.

``panel_factory`` (each test module wraps it in a ``make_panel`` fixture) starts a WebPanel
(self-signed certificate, setup token, metrics token) and returns a :class:`RunningPanel`;
``browser()`` gives an httpx client that trusts the panel's certificate and keeps cookies like a
browser; ``setup()`` / ``login()`` go through the real forms, CSRF token included. Everything
is stopped when the test ends.
"""

from __future__ import annotations

import json
import logging
import re
import ssl
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from argon2 import PasswordHasher

from gateway.audit import AUDIT_FILE, AuditLog
from gateway.clock import SystemClock
from gateway.config import GatewayConfig
from gateway.spool.store import Spool
from gateway.web.auth import PanelAuth, Role
from gateway.web.auth.setup import read_token
from gateway.web.panel import WebPanel
from gateway.web.services import WebServices
from gateway.worklist.lookup import EmptyWorklist
from gateway.worklist.reconcile import Reconciler
from tests.peers import free_port

CSRF_RE = re.compile(r'name="csrf_token" value="([^"]+)"')
ENGINEER = ("eng", "engineer-pass-1")
TECHNOLOGIST = ("tech", "technologist-pass-1")
# Cheap argon2id parameters: the panel's own defaults are checked in test_auth.py.
FAST_HASHER = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)


def csrf_of(html: str) -> str:
    """The CSRF token of the first form on a page."""
    found = CSRF_RE.search(html)
    assert found, "no csrf_token field on the page"
    return found.group(1)


@dataclass
class RunningPanel:
    """A started panel and what a test needs to look at."""

    state: Path
    panel: WebPanel
    services: WebServices
    clients: list[httpx.Client] = field(default_factory=list)

    @property
    def auth(self) -> PanelAuth:
        assert self.panel.auth is not None
        return self.panel.auth

    @property
    def url(self) -> str:
        assert self.panel.url is not None
        return self.panel.url

    def trust(self) -> ssl.SSLContext:
        """A client context trusting the panel's (self-signed) certificate."""
        assert self.panel.certificate is not None
        return ssl.create_default_context(cafile=str(self.panel.certificate.cert))

    def browser(self, source: str | None = None) -> httpx.Client:
        """A cookie-keeping client that does not follow redirects; ``source``: connect from
        this loopback address (127.0.0.2...) as another machine would."""
        transport = httpx.HTTPTransport(verify=self.trust(), local_address=source)
        client = httpx.Client(base_url=self.url.rstrip("/"), transport=transport, timeout=10)
        self.clients.append(client)
        return client

    def setup(self, username: str = ENGINEER[0], password: str = ENGINEER[1]) -> httpx.Client:
        """First-run setup through /setup with the token from its file: a signed-in engineer."""
        client = self.browser()
        token = read_token(self.state)
        assert token is not None
        page = client.get("/setup")
        answer = client.post(
            "/setup",
            data={
                "csrf_token": csrf_of(page.text),
                "token": token,
                "username": username,
                "password": password,
                "password2": password,
            },
        )
        assert answer.status_code == 303, answer.text
        return client

    def add_user(self, username: str, password: str, role: Role) -> None:
        """An account made directly in the store (the forms are tested on their own)."""
        self.auth.users.create(username, password, role)

    def login(self, username: str, password: str) -> httpx.Client:
        """A browser signed in through /login."""
        client = self.browser()
        answer = self.post_login(client, username, password)
        assert answer.status_code == 303, answer.text
        return client

    def post_login(self, client: httpx.Client, username: str, password: str) -> httpx.Response:
        """Submit the login form once."""
        page = client.get("/login")
        return client.post(
            "/login",
            data={"csrf_token": csrf_of(page.text), "username": username, "password": password},
        )

    def audit_lines(self) -> list[dict[str, Any]]:
        """Every audit record written so far."""
        path = self.state / AUDIT_FILE
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines()]


MakePanel = Callable[..., RunningPanel]


def services_for(
    tmp_path: Path, *, ingest: dict[str, Any] | None = None, **web: Any
) -> tuple[WebServices, list[Callable[[], None]]]:
    """WebServices over a real spool (destination "pacs") and audit log; no worklist; the
    ``[ingest]`` table ``ingest`` (none by default)."""
    clock = SystemClock()
    state = tmp_path / "state"
    config = GatewayConfig.model_validate(
        {
            "gateway": {"state_dir": str(state), "ae_title": "EDGE_GW"},
            "destination": [{"name": "pacs", "ae_title": "PACS", "host": "127.0.0.1", "port": 104}],
            "web": {"bind": "127.0.0.1", "port": free_port(), **web},
            "ingest": ingest or {},
        }
    )
    spool = Spool(state, ["pacs"], 1 << 30, clock)
    spool.open()
    audit = AuditLog(state / AUDIT_FILE, clock)
    services = WebServices(
        config_path=tmp_path / "gateway.toml",
        config=config,
        credentials_dir=None,
        clock=clock,
        started_at=clock.now(),
        version="9.8.7",
        spool=spool,
        reconciler=Reconciler(spool, EmptyWorklist(), audit, spool.staging_dir, clock),
        audit=audit,
    )
    return services, [spool.close]


def panel_factory(tmp_path: Path) -> Iterator[MakePanel]:
    """Body of a test module's ``make_panel`` fixture: start panels (port chosen at run time);
    all are stopped when the test ends."""
    closers: list[Callable[[], None]] = []
    running: list[RunningPanel] = []

    def make(services: WebServices | None = None, **web: Any) -> RunningPanel:
        if services is None:
            services, close = services_for(tmp_path, **web)
            closers.extend(close)
        panel = WebPanel(services, logging.getLogger("t.web"), hasher=FAST_HASHER)
        panel.start()
        closers.append(panel.stop)
        made = RunningPanel(services.state_dir, panel, services)
        running.append(made)
        return made

    yield make
    for made in running:
        for client in made.clients:
            client.close()
    for close in reversed(closers):
        close()
