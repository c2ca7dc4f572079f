"""Issue 10 A3 through the real daemon: keys that name two patients hold the object.

DCMTK wlmscpfs is the RIS (Müller, PID-LAT, accession ACC1001; Yamada, PID-JP, ACC1002),
storescu the modality sending pydicom's own CT_small.dcm with its keys changed, storescp the
PACS. Dropped files carry their keys in the file name or a sidecar. The serial path is in
tests/test_daemon_serial.py (test_serial_report_naming_two_patients_is_held).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

from gateway.worklist.binding import DETAIL_MARK
from tests.harness import GatewayProcess, wait_until
from tests.peers import StoreSCP, free_port
from tests.test_daemon import drop, jpeg_bytes
from tests.test_daemon_worklist import (
    JAPANESE,
    LATIN,
    cli,
    gateway_config,
    received,
    running_room,
    storescu_send,
)
from tests.worklist.wlmfiles import WlmScp

pytestmark = pytest.mark.peers

BOTH_KEYS = "filename_pattern = '^(?P<accession_number>ACC[0-9]+)_(?P<patient_id>PID-[A-Z]+)_'"
# Every patient ID of the test: none may appear in the gateway's log.
PATIENT_IDS = ("PID-LAT", "PID-JP", "PID-NOBODY")


def ct_object(folder: Path, accession: str, patient_id: str) -> Path:
    """pydicom's CT_small.dcm as a modality would send it for this accession and patient."""
    source = get_testdata_file("CT_small.dcm")
    assert isinstance(source, str)
    ds = pydicom.dcmread(source)
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.AccessionNumber = accession
    ds.PatientID = patient_id
    ds.PatientName = "Typed^Atthe^Console"
    path = folder / f"{accession}-{patient_id}.dcm"
    ds.save_as(path)
    return path


def held_rows(gateway: GatewayProcess) -> list[dict[str, object]]:
    out = cli(gateway.config, "held", "list", "--json")
    if out.returncode != 0 or not out.stdout.startswith("["):
        return []
    rows: list[dict[str, object]] = json.loads(out.stdout)
    return rows


def held_reasons(gateway: GatewayProcess) -> list[str]:
    return sorted(str(row["held_reason"]) for row in held_rows(gateway))


@pytest.fixture(params=[True, False], ids=["coerce", "no-coerce"])
def room(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[tuple[GatewayProcess, StoreSCP, int, bool]]:
    coerce: bool = request.param
    ris = WlmScp(tmp_path / "ris")
    ris.add(LATIN, "ISO_IR 100")
    ris.add(JAPANESE, ["ISO 2022 IR 6", "ISO 2022 IR 87"])
    pacs = StoreSCP(tmp_path / "pacs")
    listener_port = free_port()
    config = gateway_config(tmp_path / "gw", pacs.port, ris.port, listener_port)
    text = config.read_text("utf-8")
    text = text.replace("filename_pattern = '^(?P<accession_number>ACC[0-9]+)_'", BOTH_KEYS)
    text = text.replace(
        "coerce_from_worklist = true", f"coerce_from_worklist = {str(coerce).lower()}"
    )
    # [worklist] is the last section: objects no step names go on with their own identity, so
    # only the key rule can hold a contradicting one.
    text += "require_match = false\n"
    config.write_text(text, "utf-8")
    with running_room(ris, pacs, config) as gateway:
        yield gateway, pacs, listener_port, coerce


def test_c_stores_whose_keys_name_two_patients_are_held_with_coercion_and_sent_without(
    room: tuple[GatewayProcess, StoreSCP, int, bool], tmp_path: Path
) -> None:
    gateway, pacs, port, coerce = room
    # Müller's accession with Yamada's patient ID; with a patient ID no step has; then Müller's
    # accession with Müller's ID: the control that must be coerced (or sent as it is).
    storescu_send(port, ct_object(tmp_path, "ACC1001", "PID-JP"))
    storescu_send(port, ct_object(tmp_path, "ACC1001", "PID-NOBODY"))
    storescu_send(port, ct_object(tmp_path, "ACC1001", "PID-LAT"))

    if not coerce:
        # Documented decision (docs/assumptions.md): without coerce_from_worklist the listener
        # is a store-and-forward hop and does not judge the modality's keys.
        assert wait_until(lambda: len(received(pacs.output_dir)) == 3, 30), gateway.log()
        sent = {str(ds.PatientID) for ds in received(pacs.output_dir)}
        assert sent == {"PID-JP", "PID-NOBODY", "PID-LAT"}
        assert held_rows(gateway) == []
        return

    assert wait_until(lambda: len(held_rows(gateway)) == 2, 30), gateway.log()
    summary = "conflict: the received object's accession number is scheduled for another patient"
    assert held_reasons(gateway) == [
        summary + DETAIL_MARK + "accession number ACC1001 is scheduled for patient ID PID-LAT;"
        " the received object says patient ID PID-JP, scheduled for accession number ACC1002",
        summary + DETAIL_MARK + "accession number ACC1001 is scheduled for patient ID PID-LAT;"
        " the received object says patient ID PID-NOBODY, who has no scheduled step",
    ]
    assert wait_until(lambda: len(received(pacs.output_dir)) == 1, 30), gateway.log()
    (coerced,) = received(pacs.output_dir)
    assert (coerced.PatientID, str(coerced.PatientName)) == ("PID-LAT", "Müller^Jürgen")
    # The held ones are the modality's objects as received: the operator binds or discards.
    for row in held_rows(gateway):
        shown = json.loads(cli(gateway.config, "held", "show", str(row["object_id"])).stdout)
        assert shown["attributes"]["PatientName"] == "Typed^Atthe^Console", shown
    # The log says they were held and why, without the IDs the queue's reason names.
    log = gateway.log()
    assert summary in log
    assert not any(pid in log for pid in PATIENT_IDS), log


@pytest.mark.parametrize("room", [True], ids=["coerce"], indirect=True)  # files: no difference
def test_dropped_files_whose_keys_name_two_patients_are_held(
    room: tuple[GatewayProcess, StoreSCP, int, bool],
) -> None:
    gateway, pacs, _port, _coerce = room
    drop_dir = gateway.root / "drop"
    drop(drop_dir, "ACC1001_PID-JP_scan.jpg", jpeg_bytes(1))  # file name: two patients
    sidecar = {"accession_number": "ACC1002", "patient_id": "PID-LAT"}
    drop(drop_dir, "from-the-device.jpg.json", json.dumps(sidecar).encode())
    drop(drop_dir, "from-the-device.jpg", jpeg_bytes(2))  # sidecar: two patients
    drop(drop_dir, "ACC1002_PID-JP_scan.jpg", jpeg_bytes(3))  # agrees: bound and sent

    assert wait_until(lambda: len(held_rows(gateway)) == 2, 30), gateway.log()
    assert held_reasons(gateway) == [
        "conflict: the file name's accession number is scheduled for another patient"
        + DETAIL_MARK
        + "accession number ACC1001 is scheduled for patient ID PID-LAT;"
        " the file name says patient ID PID-JP, scheduled for accession number ACC1002",
        "conflict: the sidecar's accession number is scheduled for another patient"
        + DETAIL_MARK
        + "accession number ACC1002 is scheduled for patient ID PID-JP;"
        " the sidecar says patient ID PID-LAT, scheduled for accession number ACC1001",
    ]
    assert wait_until(lambda: len(received(pacs.output_dir)) == 1, 30), gateway.log()
    (bound,) = received(pacs.output_dir)
    assert (bound.AccessionNumber, bound.PatientID) == ("ACC1002", "PID-JP")
    log = gateway.log()
    assert not any(pid in log for pid in PATIENT_IDS), log
