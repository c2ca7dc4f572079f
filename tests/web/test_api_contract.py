"""The API's contract: the OpenAPI document lists every endpoint, and the routers run under
another actor dependency (what the web panel of issue 5 plugs in) without the Unix socket's."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import httpx
import pytest
from fastapi import FastAPI, Header, HTTPException

from gateway.audit import AUDIT_FILE, AuditLog
from gateway.clock import SystemClock
from gateway.web.api import API_PREFIX, ApiServices, api_router, create_api
from gateway.web.localapi import LocalApiServer
from gateway.worklist.reconcile import Reconciler
from tests.web.conftest import Box

EXPECTED = {
    "/healthz": {"get"},
    "/api/v1/worklist": {"get"},
    "/api/v1/worklist/refresh": {"post"},
    "/api/v1/procedure": {"get", "put", "delete"},
    "/api/v1/held": {"get"},
    "/api/v1/held/{object_id}": {"get"},
    "/api/v1/held/{object_id}/bind": {"post"},
    "/api/v1/held/{object_id}/discard": {"post"},
}


def test_the_openapi_document_lists_every_endpoint(box: Box) -> None:
    response = box.client.get("/api/v1/openapi.json")
    assert response.status_code == 200
    document = response.json()
    paths = {path: set(ops) for path, ops in document["paths"].items()}
    assert paths == EXPECTED
    bind = document["paths"]["/api/v1/held/{object_id}/bind"]["post"]
    assert {"200", "404", "409", "422"} <= set(bind["responses"])
    # No interactive pages: they would load scripts from a CDN the box cannot reach.
    assert box.client.get("/docs").status_code == 404


def _session_actor(x_panel_user: Annotated[str | None, Header()] = None) -> str:
    """Stands in for issue 5's session dependency: a user from a (here: trusted) header."""
    if not x_panel_user:
        raise HTTPException(401, "log in first")
    return f"panel:{x_panel_user}"


def _services(box: Box) -> ApiServices:
    clock = SystemClock()
    audit = AuditLog(box.state / AUDIT_FILE, clock)
    return ApiServices(
        reconciler=Reconciler(box.spool, box.cache, audit, box.spool.staging_dir, clock),
        audit=audit,
        worklist=box.cache,
        selection=box.selection,
    )


@pytest.fixture
def panel(box: Box, tmp_path: Path) -> Iterator[httpx.Client]:
    """The routers mounted in another app with the session dependency (served for the test)."""
    app = FastAPI()
    app.include_router(api_router(_services(box), _session_actor), prefix=API_PREFIX)
    server = LocalApiServer(app, tmp_path / "panel.sock", logging.getLogger("t.panel"))
    server.start()
    client = httpx.Client(
        transport=httpx.HTTPTransport(uds=str(server.path)), base_url="http://panel"
    )
    yield client
    client.close()
    server.stop()


def test_the_routers_audit_whoever_another_actor_dependency_names(
    box: Box, panel: httpx.Client
) -> None:
    object_id = box.held_object()
    selected = panel.put(
        "/api/v1/procedure",
        json={"accession_number": "ACC001"},
        headers={"X-Panel-User": "alice"},
    )
    assert selected.status_code == 200
    assert selected.json()["current"]["selected_by"] == "panel:alice"
    discarded = panel.post(
        f"/api/v1/held/{object_id}/discard",
        json={"reason": "duplicate"},
        headers={"X-Panel-User": "bob"},
    )
    assert discarded.status_code == 200
    assert [(r["actor"], r["action"]) for r in box.audit_lines()] == [
        ("panel:alice", "procedure select"),
        ("panel:bob", "held.discard"),
    ]


def test_when_the_actor_dependency_refuses_nothing_changes(box: Box, panel: httpx.Client) -> None:
    object_id = box.held_object()
    refused = panel.post(f"/api/v1/held/{object_id}/discard", json={"reason": "duplicate"})
    assert refused.status_code == 401
    assert panel.put("/api/v1/procedure", json={"accession_number": "ACC001"}).status_code == 401
    assert box.audit_lines() == []
    assert box.selection.recorded() is None
    # Reads too: no patient data for a caller the dependency does not name.
    assert panel.get("/api/v1/held").status_code == 401
    assert panel.get("/api/v1/worklist").status_code == 401
    reading = panel.get("/api/v1/held", headers={"X-Panel-User": "alice"})
    assert [r["object_id"] for r in reading.json()] == [object_id]


def test_create_api_accepts_any_actor_dependency(box: Box, tmp_path: Path) -> None:
    app = create_api(_services(box), lambda: "script:nightly")
    server = LocalApiServer(app, tmp_path / "other.sock", logging.getLogger("t.other"))
    server.start()
    try:
        with httpx.Client(
            transport=httpx.HTTPTransport(uds=str(server.path)), base_url="http://x"
        ) as client:
            assert client.delete("/api/v1/procedure").json()["current"] is None
    finally:
        server.stop()
    assert box.audit_lines()[-1]["actor"] == "script:nightly"
