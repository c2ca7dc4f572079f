"""Sidecar files: what they may say, what makes them malformed; the watcher never takes them."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pytest

from gateway.clock import FakeClock
from gateway.identity import PatientIdentity
from gateway.ingest.folder import FolderWatcher, is_candidate_name
from gateway.ingest.sidecar import (
    MAX_SIDECAR_BYTES,
    main_file_of,
    parse_sidecar,
    read_sidecar,
    sidecar_candidates,
)
from tests.ingest.support import Taker, folder_config

FULL = PatientIdentity(
    patient_id="12345",
    patient_name="Müller^Jörg",
    accession_number="A778",
    birth_date="19800229",
    sex="M",
)


def test_json_sidecar_gives_every_field() -> None:
    raw = json.dumps(
        {
            "patient_id": "12345",
            "patient_name": "Müller^Jörg",
            "accession_number": "A778",
            "birth_date": "19800229",
            "sex": "M",
        }
    ).encode()
    assert parse_sidecar(".json", raw) == FULL


def test_meta_sidecar_gives_every_field_with_comments_and_a_bom() -> None:
    text = (
        "\ufeff# written by the device\n\npatient_id = 12345\npatient_name=Müller^Jörg\n"
        "  accession_number = A778\nbirth_date = 19800229\nsex = M\n"
    )
    assert parse_sidecar(".meta", text.encode()) == FULL


def test_empty_and_null_values_are_unknown() -> None:
    assert parse_sidecar(".json", b'{"patient_id": "", "sex": null}') == PatientIdentity()
    assert parse_sidecar(".meta", b"accession_number =\n") == PatientIdentity()


def test_names_are_normalised_like_file_names() -> None:
    decomposed = "Mu\u0308ller^Jo\u0308rg"  # as typed on a Mac
    identity = parse_sidecar(".json", json.dumps({"patient_name": decomposed}).encode())
    assert identity.patient_name == "Müller^Jörg"


@pytest.mark.parametrize(
    ("suffix", "raw", "problem"),
    [
        (".json", b"[1, 2]", "sidecar JSON is not an object"),
        (".json", b"{nope", "sidecar is not valid JSON (line 1)"),
        (".json", b'{"patient_id": 12345}', "sidecar value of 'patient_id' is not a string"),
        (".json", b'{"patientid": "1"}', "unknown sidecar key 'patientid'"),
        (".json", b'{"sex": "M", "sex": "F"}', "sidecar key 'sex' repeated"),
        (".meta", b"patient_id 12345", "sidecar line 1 is not key = value"),
        (".meta", b"sex = M\nsex = F", "sidecar key 'sex' repeated"),
        (".meta", b"\xff\xfe", "sidecar is not UTF-8"),
        (".meta", b"patient_id = " + b"9" * 65, "sidecar patient_id is not a valid DICOM LO value"),
        (".meta", b"patient_id = 12\\34", "sidecar patient_id is not a valid DICOM LO value"),
        (".meta", b"patient_name = a=b=c=d", "sidecar patient_name is not a valid DICOM PN value"),
        (".meta", b"accession_number = " + b"7" * 17, "sidecar accession_number is not a valid"),
        (".meta", b"birth_date = 19800230", "sidecar birth_date is not a date YYYYMMDD"),
        (".meta", b"birth_date = 1980-02-01", "sidecar birth_date is not a date YYYYMMDD"),
        (".meta", b"sex = male", "sidecar sex is not M, F or O"),
        (".meta", b"#" * (MAX_SIDECAR_BYTES + 1), "sidecar larger than 65536 bytes"),
    ],
)
def test_malformed_sidecars_say_why_without_their_values(
    tmp_path: Path, suffix: str, raw: bytes, problem: str
) -> None:
    path = tmp_path / f"scan.jpg{suffix}"
    path.write_bytes(raw)
    sidecar = read_sidecar([path])
    assert sidecar.identity == PatientIdentity()
    assert sidecar.problem is not None
    assert sidecar.problem.startswith(problem), sidecar.problem
    assert "12345" not in sidecar.problem
    assert "male" not in sidecar.problem


def test_a_json_and_a_meta_for_one_file_are_malformed(tmp_path: Path) -> None:
    paths = sidecar_candidates(tmp_path / "scan.jpg")
    for path in paths:
        path.write_text("", "utf-8")
    assert read_sidecar(paths).problem == "both a .json and a .meta sidecar"


def test_sidecar_names_belong_to_the_whole_file_name(tmp_path: Path) -> None:
    assert [p.name for p in sidecar_candidates(tmp_path / "IMG_1.jpg")] == [
        "IMG_1.jpg.json",
        "IMG_1.jpg.meta",
    ]
    assert main_file_of(tmp_path / "IMG_1.jpg.META") == tmp_path / "IMG_1.jpg"


@pytest.mark.parametrize("name", ["scan.jpg.json", "scan.jpg.meta", "SCAN.JPG.JSON", "x.meta"])
def test_sidecar_names_are_never_candidates(name: str) -> None:
    assert not is_candidate_name(name)


def test_the_watcher_hands_on_the_file_and_never_the_sidecar(tmp_path: Path) -> None:
    drop = tmp_path / "drop"
    drop.mkdir()
    (drop / "scan.jpg.json").write_text('{"patient_id": "1"}', "utf-8")
    (drop / "scan.jpg").write_bytes(b"jpeg")
    taker, clock = Taker(), FakeClock()
    watcher = FolderWatcher(folder_config(drop), taker, clock, logging.getLogger("t"))
    watcher.scan_once()
    clock.advance(5)
    watcher.scan_once()
    assert taker.calls == [drop / "scan.jpg"]


def test_a_stray_sidecar_is_reported_once_and_left_in_place(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    drop = tmp_path / "drop"
    drop.mkdir()
    clock = FakeClock()
    stray = drop / "gone.jpg.meta"
    stray.write_text("patient_id = 1\n", "utf-8")
    old = clock.now() - 3600
    os.utime(stray, (old, old))
    recent = drop / "coming.jpg.json"
    recent.write_text("{}", "utf-8")
    os.utime(recent, (clock.now(), clock.now()))  # its file may still be on its way
    watcher = FolderWatcher(folder_config(drop), Taker(), clock, logging.getLogger("t"))
    with caplog.at_level(logging.INFO):
        watcher.scan_once()
        watcher.scan_once()
        warnings = [r for r in caplog.records if r.getMessage().startswith("sidecar files")]
        assert len(warnings) == 1
        assert warnings[0].__dict__["count"] == 1
        assert stray.exists()
        stray.unlink()
        watcher.scan_once()
        assert any(r.getMessage() == "no stray sidecar files left" for r in caplog.records)
