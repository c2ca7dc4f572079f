"""GET/PUT/DELETE /api/v1/procedure: the room's selection, the CLI's rules, audited."""

from __future__ import annotations

import datetime

import pytest

from gateway.clock import FakeClock
from gateway.worklist.selection import RoomSelection
from tests.web.conftest import ITEM, ME, TWIN_B, Box, MakeBox


def test_nothing_selected_at_first(box: Box) -> None:
    response = box.client.get("/api/v1/procedure")
    assert response.status_code == 200
    assert response.json() == {"current": None, "item": None, "expired": None}


def test_selecting_an_accession_makes_its_step_the_rooms_procedure_and_is_audited(
    box: Box,
) -> None:
    response = box.client.put("/api/v1/procedure", json={"accession_number": "ACC001"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["current"]["item_key"] == ITEM.key
    assert body["current"]["accession_number"] == "ACC001"
    assert body["current"]["selected_by"] == ME
    selected = datetime.datetime.fromisoformat(body["current"]["selected_at"])
    expires = datetime.datetime.fromisoformat(body["current"]["expires_at"])
    assert expires - selected == datetime.timedelta(minutes=240)
    assert body["item"]["patient_name"] == "Doe^Jane"
    assert body["expired"] is None
    # What the binder reads for the next dropped file:
    current = box.selection.current()
    assert current is not None and current.item_key == ITEM.key and current.by == ME
    assert box.client.get("/api/v1/procedure").json() == body
    (line,) = box.audit_lines()
    assert line["actor"] == ME
    assert line["action"] == "procedure select"
    assert line["target"] == "accession ACC001"
    assert line["details"] == {"item_key": ITEM.key, "step": "SPS001"}


def test_an_accession_with_two_steps_needs_the_step_id(box: Box) -> None:
    ambiguous = box.client.put("/api/v1/procedure", json={"accession_number": "ACC003"})
    assert ambiguous.status_code == 409
    assert "SPS003A, SPS003B" in ambiguous.json()["detail"]
    assert box.selection.current() is None
    chosen = box.client.put(
        "/api/v1/procedure", json={"accession_number": "ACC003", "step_id": "SPS003B"}
    )
    assert chosen.status_code == 200
    assert chosen.json()["current"]["item_key"] == TWIN_B.key


@pytest.mark.parametrize(
    "body",
    [{"accession_number": "NOPE"}, {"accession_number": "ACC001", "step_id": "SPS999"}],
)
def test_no_matching_step_is_404_and_changes_nothing(box: Box, body: dict[str, str]) -> None:
    response = box.client.put("/api/v1/procedure", json=body)
    assert response.status_code == 404
    assert "no scheduled step" in response.json()["detail"]
    assert box.selection.recorded() is None
    assert box.audit_lines() == []


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"accession_number": ""},
        {"accession_number": "ACC001", "patient_id": "PID001"},  # unknown key: a typo, refused
        {"accession_number": "A" * 65},
    ],
)
def test_an_invalid_selection_request_is_422(box: Box, body: dict[str, str]) -> None:
    response = box.client.put("/api/v1/procedure", json=body)
    assert response.status_code == 422
    assert box.selection.recorded() is None


def test_clearing_selects_nothing_and_is_audited(box: Box) -> None:
    box.client.put("/api/v1/procedure", json={"accession_number": "ACC001"})
    response = box.client.delete("/api/v1/procedure")
    assert response.status_code == 200
    assert response.json() == {"current": None, "item": None, "expired": None}
    assert box.selection.current() is None
    last = box.audit_lines()[-1]
    assert (last["actor"], last["action"], last["target"]) == (
        ME,
        "procedure clear",
        "room selection",
    )


def test_an_expired_selection_is_shown_as_expired_not_current(box: Box) -> None:
    # Selected (by the CLI, say) five hours ago; the lifetime is four.
    past = RoomSelection(box.selection.path, FakeClock(box_now() - 5 * 3600), 240.0)
    past.select(ITEM, "cli:someone")
    body = box.client.get("/api/v1/procedure").json()
    assert body["current"] is None
    assert body["item"] is None
    assert body["expired"]["item_key"] == ITEM.key
    assert body["expired"]["selected_by"] == "cli:someone"


def test_a_selected_step_that_left_the_cache_is_shown_without_its_item(box: Box) -> None:
    box.client.put("/api/v1/procedure", json={"accession_number": "ACC001"})
    box.cache.replace([], box_now())  # the RIS no longer lists it
    body = box.client.get("/api/v1/procedure").json()
    assert body["current"]["item_key"] == ITEM.key
    assert body["item"] is None


def test_without_a_worklist_selecting_is_refused(make_box: MakeBox) -> None:
    box = make_box(worklist=False)
    assert box.client.get("/api/v1/procedure").json()["current"] is None
    response = box.client.put("/api/v1/procedure", json={"accession_number": "ACC001"})
    assert response.status_code == 409
    assert box.client.delete("/api/v1/procedure").status_code == 409


def box_now() -> float:
    return datetime.datetime.now(datetime.UTC).timestamp()
