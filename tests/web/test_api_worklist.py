"""GET /api/v1/worklist and POST /api/v1/worklist/refresh, against DCMTK wlmscpfs as the RIS."""

from __future__ import annotations

import datetime

import pytest

from tests.web.conftest import ITEM, ITEMS, TODAY_DA, Box, MakeBox
from tests.worklist.conftest import MakeRis
from tests.worklist.factory import mwl_dataset


def test_the_worklist_lists_the_cached_items_in_scheduled_order(box: Box) -> None:
    response = box.client.get("/api/v1/worklist")
    assert response.status_code == 200
    body = response.json()
    assert body["configured"] is True
    assert body["last_error"] is None
    fetched = datetime.datetime.fromisoformat(body["fetched_at"])
    assert fetched.tzinfo is not None
    assert fetched.timestamp() == pytest.approx(box.cache.fetched_at, abs=0.001)
    assert [i["key"] for i in body["items"]] == [i.key for i in ITEMS]
    first = body["items"][0]
    assert first == {
        "key": ITEM.key,
        "accession_number": "ACC001",
        "patient_id": "PID001",
        "issuer_of_patient_id": "",
        "patient_name": "Doe^Jane",
        "patient_birth_date": "19800101",
        "patient_sex": "F",
        "study_instance_uid": ITEM.study_instance_uid,
        "referring_physician_name": "Ref^Doctor",
        "requested_procedure_id": "RP001",
        "requested_procedure_description": "Abdomen",
        "requested_procedure_code": None,
        "scheduled_procedure_step_id": "SPS001",
        "scheduled_procedure_step_description": "Abdomen scan",
        "scheduled_start_date": TODAY_DA,
        "scheduled_start_time": "093000",
        "modality": "US",
        "scheduled_station_ae_title": "EDGE_GW",
    }
    assert body["items"][1]["patient_name"] == "Müller^Jörg"  # UTF-8 JSON, not escaped away


def test_without_a_worklist_configured_the_api_says_so(make_box: MakeBox) -> None:
    box = make_box(worklist=False)
    body = box.client.get("/api/v1/worklist").json()
    assert body == {"configured": False, "fetched_at": None, "last_error": None, "items": []}
    refused = box.client.post("/api/v1/worklist/refresh")
    assert refused.status_code == 409
    assert "[worklist]" in refused.json()["detail"]


@pytest.mark.peers
def test_refresh_fetches_from_the_ris_then_reports_an_outage_and_keeps_the_cache(
    make_box: MakeBox, make_ris: MakeRis
) -> None:
    ris = make_ris(ae_title="RIS")
    ris.add(
        mwl_dataset(
            patient_name="Ærø^Åse",
            patient_id="RIS1",
            accession_number="RISACC1",
            step_id="RS1",
            start_date=TODAY_DA,
        ),
        charset="ISO_IR 100",
    )
    ris.add(
        mwl_dataset(patient_id="RIS2", accession_number="RISACC2", start_date=TODAY_DA),
        charset="ISO_IR 192",
    )
    ris.start()
    box = make_box(ris_port=ris.port)

    fetched = box.client.post("/api/v1/worklist/refresh")
    assert fetched.status_code == 200
    outcome = fetched.json()
    assert outcome["ok"] is True
    assert outcome["count"] == 2
    assert outcome["error"] is None
    listed = box.client.get("/api/v1/worklist").json()
    assert sorted(i["accession_number"] for i in listed["items"]) == ["RISACC1", "RISACC2"]
    assert "Ærø^Åse" in [i["patient_name"] for i in listed["items"]]

    ris.stop()  # the RIS goes down
    failed = box.client.post("/api/v1/worklist/refresh")
    assert failed.status_code == 200  # the API worked; the refresh did not
    outcome_down = failed.json()
    assert outcome_down["ok"] is False
    assert outcome_down["error"]
    assert outcome_down["fetched_at"] == outcome["fetched_at"]  # still the last good one
    kept = box.client.get("/api/v1/worklist").json()
    assert kept["items"] == listed["items"]
    assert kept["last_error"] == outcome_down["error"]

    ris.start()  # back: the next refresh clears the error
    recovered = box.client.post("/api/v1/worklist/refresh").json()
    assert recovered["ok"] is True
    assert box.client.get("/api/v1/worklist").json()["last_error"] is None
