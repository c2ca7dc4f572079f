"""/api/v1/held: list, show, bind (three forms) and discard held objects made by the real
converter; refusals as 404/409/422; the reconciler's audit lines carry local:<user>."""

from __future__ import annotations

import logging
from typing import Any

import pydicom
import pytest

from gateway.spool.entries import DeliveryState
from tests.convert.builders import assert_valid_dicom
from tests.web.conftest import ITEM, ME, OTHER, Box


def _payload(box: Box, object_id: int) -> pydicom.Dataset:
    info = box.spool.show(object_id)
    assert info is not None and info.payload is not None
    return pydicom.dcmread(info.payload)


def test_held_objects_are_listed_with_why(box: Box) -> None:
    first, second = box.held_object(), box.held_object()
    response = box.client.get("/api/v1/held")
    assert response.status_code == 200
    rows = response.json()
    assert [r["object_id"] for r in rows] == [first, second]
    assert rows[0]["held_reason"]
    assert rows[0]["source"] == "export"
    assert rows[0]["deliveries"] == [{"destination": "pacs", "state": "held"}]
    assert [r["object_id"] for r in box.client.get("/api/v1/held?limit=1").json()] == [first]
    assert box.client.get("/api/v1/held?limit=0").status_code == 422
    assert box.client.get("/api/v1/held?limit=100000").status_code == 422


def test_the_held_list_says_how_many_there_are_and_where_the_next_page_starts(box: Box) -> None:
    first, second, third = box.held_object(), box.held_object(), box.held_object()
    page = box.client.get("/api/v1/held?limit=2")
    assert [r["object_id"] for r in page.json()] == [first, second]
    assert page.headers["X-Total-Count"] == "3"
    assert page.headers["X-Next-Offset"] == "2"
    assert page.headers["Link"] == '</api/v1/held?limit=2&offset=2>; rel="next"'
    last = box.client.get("/api/v1/held?limit=2&offset=2")
    assert [r["object_id"] for r in last.json()] == [third]
    assert last.headers["X-Total-Count"] == "3"
    assert "X-Next-Offset" not in last.headers and "Link" not in last.headers
    assert box.client.get("/api/v1/held?offset=-1").status_code == 422


def test_a_held_object_names_its_sources(box: Box) -> None:
    object_id = box.held_object()
    (row,) = box.client.get("/api/v1/held").json()
    (source,) = row["sources"]
    assert source["source"] == "export" and len(source["sha256"]) == 64
    assert source["arrived_at"].endswith("Z") or "+00:00" in source["arrived_at"]
    shown = box.client.get(f"/api/v1/held/{object_id}").json()
    assert shown["sources"] == row["sources"]


def test_showing_a_held_object_gives_its_header_and_candidates(box: Box) -> None:
    object_id = box.held_object()
    response = box.client.get(f"/api/v1/held/{object_id}")
    assert response.status_code == 200
    body = response.json()
    assert body["object_id"] == object_id
    assert body["attributes"]["PatientID"] == ""  # held: nobody bound yet
    assert "Modality" in body["attributes"]
    assert body["candidates"] == []  # no accession number or patient ID to look up


@pytest.mark.parametrize("path", ["/api/v1/held/999", "/api/v1/held/999/discard"])
def test_an_unknown_object_is_404(box: Box, path: str) -> None:
    if path.endswith("discard"):
        response = box.client.post(path, json={"reason": "test"})
    else:
        response = box.client.get(path)
    assert response.status_code == 404
    assert "999" in response.json()["detail"]


def test_an_object_id_that_is_not_a_positive_integer_is_422(box: Box) -> None:
    assert box.client.get("/api/v1/held/0").status_code == 422
    assert box.client.get("/api/v1/held/abc").status_code == 422


@pytest.mark.peers
def test_binding_to_an_item_key_releases_a_valid_object_and_audits_the_local_user(
    box: Box,
) -> None:
    object_id = box.held_object()
    before = _payload(box, object_id)
    response = box.client.post(f"/api/v1/held/{object_id}/bind", json={"item_key": ITEM.key})
    assert response.status_code == 200, response.text
    result = response.json()
    assert result == {
        "object_id": object_id,
        "sop_instance_uid": before.SOPInstanceUID,
        "study_instance_uid": ITEM.study_instance_uid,
        "deliveries": 1,
    }
    ds = _payload(box, object_id)
    assert ds.PatientID == "PID001"
    assert ds.AccessionNumber == "ACC001"
    info = box.spool.show(object_id)
    assert info is not None
    assert [d.state for d in info.deliveries] == [DeliveryState.PENDING]
    assert_valid_dicom(info.payload)  # type: ignore[arg-type]
    assert box.client.get("/api/v1/held").json() == []
    (line,) = box.audit_lines()
    assert line["actor"] == ME
    assert line["action"] == "held.bind_item"
    assert line["target"] == f"object:{object_id}"
    # Bound and released: a second bind finds nothing held.
    again = box.client.post(f"/api/v1/held/{object_id}/bind", json={"item_key": ITEM.key})
    assert again.status_code == 404


def test_binding_by_a_unique_accession_number_binds_that_item(box: Box) -> None:
    object_id = box.held_object()
    response = box.client.post(
        f"/api/v1/held/{object_id}/bind", json={"accession_number": "ACC002"}
    )
    assert response.status_code == 200, response.text
    ds = _payload(box, object_id)
    assert str(ds.PatientName) == OTHER.patient_name
    assert box.audit_lines()[-1]["details"]["item_key"] == OTHER.key  # type: ignore[index]


@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        ({"accession_number": "ACC003"}, 409, "matches 2 worklist items"),
        ({"accession_number": "NOPE"}, 404, "no worklist item"),
        ({"item_key": "0" * 32}, 404, "no worklist item"),
    ],
)
def test_a_binding_that_names_no_single_item_is_refused_and_the_object_stays_held(
    box: Box, body: dict[str, str], status: int, words: str
) -> None:
    object_id = box.held_object()
    response = box.client.post(f"/api/v1/held/{object_id}/bind", json=body)
    assert response.status_code == status
    assert words in response.json()["detail"]
    assert [r["object_id"] for r in box.client.get("/api/v1/held").json()] == [object_id]
    assert box.audit_lines() == []


def test_binding_to_typed_demographics_writes_them_and_audits_only_the_field_names(
    box: Box,
) -> None:
    object_id = box.held_object()
    body = {
        "patient_id": "TYPED1",
        "patient_name": "Ödön^Zsófia",
        "birth_date": "19700203",
        "sex": "F",
        "accession_number": "WALKIN1",
    }
    response = box.client.post(f"/api/v1/held/{object_id}/bind", json=body)
    assert response.status_code == 200, response.text
    ds = _payload(box, object_id)
    assert (ds.PatientID, str(ds.PatientName), ds.PatientBirthDate, ds.PatientSex) == (
        "TYPED1",
        "Ödön^Zsófia",
        "19700203",
        "F",
    )
    assert ds.AccessionNumber == "WALKIN1"
    (line,) = box.audit_lines()
    assert line["actor"] == ME
    assert line["action"] == "held.bind_demographics"
    text = str(line)
    assert "TYPED1" not in text and "Zsófia" not in text  # no patient data in the audit log


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({}, "exactly one"),
        ({"item_key": ITEM.key, "accession_number": "ACC001"}, "exactly one"),
        ({"item_key": ITEM.key, "patient_id": "X", "patient_name": "Y^Z"}, "not both"),
        ({"patient_id": "X"}, "need patient_id and patient_name"),
        ({"accession_number": "ACC001", "sex": "F"}, "go with patient_id"),
        ({"patient_id": "X", "patient_name": "Y^Z", "sex": "Q"}, "sex"),
        ({"item_key": ITEM.key, "note": "typo"}, "note"),
    ],
)
def test_a_bind_request_that_is_not_exactly_one_form_is_422(
    box: Box, body: dict[str, Any], words: str
) -> None:
    object_id = box.held_object()
    response = box.client.post(f"/api/v1/held/{object_id}/bind", json=body)
    assert response.status_code == 422
    assert words in str(response.json()["detail"])
    assert box.audit_lines() == []


def test_demographics_that_cannot_be_written_as_dicom_are_422(box: Box) -> None:
    object_id = box.held_object()
    body = {"patient_id": "X1", "patient_name": "Doe^Jane", "birth_date": "19701340"}
    response = box.client.post(f"/api/v1/held/{object_id}/bind", json=body)
    assert response.status_code == 422
    assert response.json()["detail"] == "birth date must be a date written YYYYMMDD"
    assert [r["object_id"] for r in box.client.get("/api/v1/held").json()] == [object_id]


def test_discarding_takes_the_object_out_keeps_its_file_and_audits(box: Box) -> None:
    object_id = box.held_object()
    response = box.client.post(
        f"/api/v1/held/{object_id}/discard", json={"reason": "test shot, wrong room"}
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["object_id"] == object_id
    assert pydicom.dcmread(body["kept_at"]).SOPInstanceUID  # the file is kept, readable
    assert box.client.get("/api/v1/held").json() == []
    (line,) = box.audit_lines()
    assert (line["actor"], line["action"], line["target"]) == (
        ME,
        "held.discard",
        f"object:{object_id}",
    )
    assert line["details"]["reason"] == "test shot, wrong room"  # type: ignore[index]


@pytest.mark.parametrize("reason", ["", "   ", "x" * 201, "line\nbreak"])
def test_a_discard_without_a_usable_reason_is_422_and_changes_nothing(
    box: Box, reason: str
) -> None:
    object_id = box.held_object()
    response = box.client.post(f"/api/v1/held/{object_id}/discard", json={"reason": reason})
    assert response.status_code == 422
    assert [r["object_id"] for r in box.client.get("/api/v1/held").json()] == [object_id]


def test_no_patient_data_reaches_the_log(box: Box, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    object_id, other_id = box.held_object(), box.held_object()
    box.client.put("/api/v1/procedure", json={"accession_number": "ACC001"})
    box.client.get("/api/v1/worklist")
    box.client.get(f"/api/v1/held/{object_id}")
    typed = {"patient_id": "TYPED9", "patient_name": "Secret^Name", "birth_date": "19700203"}
    assert box.client.post(f"/api/v1/held/{object_id}/bind", json=typed).status_code == 200
    bound = box.client.post(f"/api/v1/held/{other_id}/bind", json={"item_key": ITEM.key})
    assert bound.status_code == 200
    assert caplog.records  # the actions were logged...
    for secret in ("TYPED9", "Secret", "Doe^Jane", "PID001", "19800101", "Müller"):
        assert secret not in caplog.text  # ...without the patient
