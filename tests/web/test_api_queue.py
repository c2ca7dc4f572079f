"""The panel's JSON API for what the dashboard and queue screens do (issue 5 item 4): status,
queue list and object, retry and purge, over the panel's real HTTPS server with a session."""

from __future__ import annotations

import httpx
import pytest

from gateway.web.api import API_PREFIX
from gateway.web.auth import Role
from tests.web.test_pages_operator import MakePanel, Panel, make_panel, token

__all__ = ["make_panel"]  # the fixture, shared with the operator screen tests


@pytest.fixture
def panel(make_panel: MakePanel) -> Panel:
    return make_panel()


def csrf(client: httpx.Client) -> dict[str, str]:
    """The session's CSRF header, read from a page as a script on it would."""
    return {"X-CSRF-Token": token(client.get("/queue").text)}


def test_status_is_what_the_dashboard_shows(panel: Panel) -> None:
    panel.held_object()
    panel.failed_object()
    status = panel.client(Role.TECHNOLOGIST).get(API_PREFIX + "/status")
    assert status.status_code == 200, status.text
    body = status.json()
    assert body["held"] == "1"
    (pacs,) = body["destinations"]
    assert pacs["name"] == "pacs" and pacs["failed"] == 1
    assert pacs["last_error"] == "Refused: Out of Resources"
    assert {"sources", "worklist", "disk", "version", "uptime"} <= set(body)


def test_the_queue_lists_failures_with_their_dicom_status_and_shows_an_object(
    panel: Panel,
) -> None:
    object_id = panel.failed_object(status=0xA700)
    client = panel.client(Role.TECHNOLOGIST)
    queue = client.get(API_PREFIX + "/queue").json()
    (failure,) = queue["destinations"][0]["failures"]
    assert (failure["object_id"], failure["status"]) == (object_id, "0xA700")
    assert queue["failed_total"] == 1
    shown = client.get(f"{API_PREFIX}/queue/{object_id}")
    assert shown.status_code == 200 and shown.json()["has_failed"] is True
    assert client.get(f"{API_PREFIX}/queue/{object_id + 100}").status_code == 404


def test_the_queue_says_how_many_failures_there_are_and_pages_through_them(
    panel: Panel, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = panel.failures_two_a_page(monkeypatch)
    client = panel.client(Role.TECHNOLOGIST)
    (pacs,) = client.get(API_PREFIX + "/queue").json()["destinations"]
    assert [f["object_id"] for f in pacs["failures"]] == ids[:2]
    assert (pacs["failures_total"], pacs["failures_offset"], pacs["failures_next_offset"]) == (
        3,
        0,
        2,
    )
    assert pacs["more_failures"] is True
    (rest,) = client.get(API_PREFIX + "/queue?destination=pacs&offset=2").json()["destinations"]
    assert [f["object_id"] for f in rest["failures"]] == ids[2:]
    assert rest["failures_next_offset"] is None
    shown = client.get(f"{API_PREFIX}/queue/{ids[0]}").json()
    assert [s["where"] for s in shown["sources"]] == ["export (file)"]


def test_an_engineer_retries_and_purges_failed_deliveries_and_each_is_audited(
    panel: Panel,
) -> None:
    first = panel.failed_object()
    second = panel.failed_object()
    client = panel.client(Role.ENGINEER)
    headers = csrf(client)
    retried = client.post(f"{API_PREFIX}/queue/{first}/retry", headers=headers)
    assert retried.json() == {"deliveries": 1}
    assert (
        client.post(
            f"{API_PREFIX}/queue/retry", json={"destination": "nowhere"}, headers=headers
        ).status_code
        == 404
    )

    refused = client.post(
        f"{API_PREFIX}/queue/{second}/purge", json={"confirm": False}, headers=headers
    )
    assert refused.status_code == 422
    purged = client.post(API_PREFIX + "/queue/purge", json={"confirm": True}, headers=headers)
    assert purged.json() == {"deliveries": 1}
    actions = [(line["action"], line["actor"], line["target"]) for line in panel.audit_lines()]
    assert [a for a in actions if a[0].startswith("queue")] == [
        ("queue retry", "api:engi1", f"object:{first}"),
        ("queue purge", "api:engi1", "queue"),
    ]


def test_queue_changes_need_the_engineer_a_session_and_its_csrf_token(panel: Panel) -> None:
    object_id = panel.failed_object()
    technologist = panel.client(Role.TECHNOLOGIST)
    answer = technologist.post(f"{API_PREFIX}/queue/{object_id}/retry", headers=csrf(technologist))
    assert answer.status_code == 403
    engineer = panel.client(Role.ENGINEER)
    forged = engineer.post(f"{API_PREFIX}/queue/{object_id}/retry", headers={"X-CSRF-Token": "x"})
    assert forged.status_code == 403
    assert engineer.post(f"{API_PREFIX}/queue/{object_id}/retry").status_code == 403
    nobody = panel.client(None)
    assert nobody.get(API_PREFIX + "/status").status_code == 401
    assert nobody.get(API_PREFIX + "/queue").status_code == 401
    assert panel.spool.show(object_id) is not None
    assert [line for line in panel.audit_lines() if line["action"].startswith("queue")] == []
