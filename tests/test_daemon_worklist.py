"""Issue 3 end to end through the real daemon: DCMTK wlmscpfs as the RIS, findscu and storescu as
the modality, storescp as the PACS; files bound by accession, by the room's selection, held and
reconciled; MWL answered through an RIS outage; received objects coerced from the worklist."""

from __future__ import annotations

import contextlib
import datetime
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from tests.harness import GatewayProcess, wait_until, write_config
from tests.peers import StoreSCP, dciodvfy, free_port, require_tool
from tests.test_daemon import drop, jpeg_bytes, png_bytes
from tests.worklist.factory import mwl_dataset
from tests.worklist.mwlpeers import findscu
from tests.worklist.wlmfiles import WlmScp

pytestmark = pytest.mark.peers

TODAY = datetime.date.today().strftime("%Y%m%d")
LATIN = mwl_dataset(
    patient_name="Müller^Jürgen",
    patient_id="PID-LAT",
    accession_number="ACC1001",
    study_instance_uid="1.2.826.0.1.3680043.10.1.9001",
    step_id="SPS1001",
    start_date=TODAY,
)
JAPANESE = mwl_dataset(
    patient_name="Yamada^Tarou=山田^太郎=やまだ^たろう",
    patient_id="PID-JP",
    accession_number="ACC1002",
    study_instance_uid="1.2.826.0.1.3680043.10.1.9002",
    step_id="SPS1002",
    start_date=TODAY,
)


def gateway_config(root: Path, pacs_port: int, ris_port: int, listener_port: int) -> Path:
    path = write_config(root, pacs_port)
    text = path.read_text().replace(
        "filename_pattern = '^(?P<patient_id>[^_]+)_(?P<patient_name>[^_]+)_'",
        "filename_pattern = '^(?P<accession_number>ACC[0-9]+)_'",
    )
    text += f"""
[dicom_listener]
port = {listener_port}
bind = "127.0.0.1"
coerce_from_worklist = true

[worklist]
ae_title = "RIS"
host = "127.0.0.1"
port = {ris_port}
refresh_seconds = 5
live_query_timeout = 2
connect_timeout = 2
"""
    path.write_text(text, "utf-8")
    return path


def cli(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args, "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def cached_accessions(config: Path) -> list[str]:
    out = cli(config, "worklist", "list", "--json")
    if out.returncode != 0 or not out.stdout.startswith("{"):
        return []
    return sorted(row["accession_number"] for row in json.loads(out.stdout)["items"])


def received(pacs_dir: Path) -> list[Dataset]:
    out = []
    for path in sorted(pacs_dir.rglob("*")):
        if path.is_file():
            try:
                out.append(pydicom.dcmread(path))
            except Exception:  # storescp may still be writing this one
                continue
    return out


@pytest.fixture
def room(tmp_path: Path) -> Iterator[tuple[GatewayProcess, WlmScp, StoreSCP, int]]:
    ris = WlmScp(tmp_path / "ris")
    ris.add(LATIN, "ISO_IR 100")
    ris.add(JAPANESE, ["ISO 2022 IR 6", "ISO 2022 IR 87"])
    pacs = StoreSCP(tmp_path / "pacs")
    listener_port = free_port()
    config = gateway_config(tmp_path / "gw", pacs.port, ris.port, listener_port)
    with running_room(ris, pacs, config) as gateway:
        yield gateway, ris, pacs, listener_port


@contextlib.contextmanager
def running_room(ris: WlmScp, pacs: StoreSCP, config: Path) -> Iterator[GatewayProcess]:
    """The RIS, the PACS and the gateway started; yields once both steps are cached; then all
    stopped, the gateway first."""
    gateway = GatewayProcess(config)
    try:
        ris.start()
        pacs.start()
        gateway.start()
        assert wait_until(lambda: cached_accessions(config) == ["ACC1001", "ACC1002"], 30), (
            gateway.log()
        )
        yield gateway
    finally:
        gateway.stop()
        pacs.stop()
        ris.stop()


def test_files_bind_by_accession_or_selection_and_unmatched_ones_wait_for_reconciliation(
    room: tuple[GatewayProcess, WlmScp, StoreSCP, int],
) -> None:
    gateway, _ris, pacs, _port = room
    config, drop_dir = gateway.config, gateway.root / "drop"

    drop(drop_dir, "ACC1001_scan.jpg", jpeg_bytes(1))
    drop(drop_dir, "ACC9999_unknown.jpg", jpeg_bytes(2))
    assert wait_until(lambda: len(received(pacs.output_dir)) == 1, 30), gateway.log()
    (bound,) = received(pacs.output_dir)
    assert str(bound.PatientName) == "Müller^Jürgen"
    assert bound.PatientID == "PID-LAT"
    assert bound.StudyInstanceUID == LATIN.StudyInstanceUID
    assert bound.AccessionNumber == "ACC1001"
    assert bound.RequestAttributesSequence[0].ScheduledProcedureStepID == "SPS1001"
    assert bound.SpecificCharacterSet == "ISO_IR 192"
    errors, _warnings = dciodvfy(next(p for p in pacs.output_dir.rglob("*") if p.is_file()))
    assert errors == []

    held = json.loads(cli(config, "queue", "list", "--state", "held", "--json").stdout)
    assert len(held) == 1, held
    held_id = str(held[0]["object_id"])
    listing = cli(config, "held", "list").stdout
    assert "no worklist match: no scheduled step matches the file name" in listing, listing

    bind = cli(config, "held", "bind", held_id, "--accession", "ACC1002")
    assert bind.returncode == 0, bind.stderr
    assert wait_until(lambda: len(received(pacs.output_dir)) == 2, 30), gateway.log()
    rebound = next(ds for ds in received(pacs.output_dir) if ds.AccessionNumber == "ACC1002")
    assert str(rebound.PatientName) == "Yamada^Tarou=山田^太郎=やまだ^たろう"
    assert rebound.StudyInstanceUID == JAPANESE.StudyInstanceUID

    select = cli(config, "procedure", "select", "ACC1002")
    assert select.returncode == 0, select.stderr
    drop(drop_dir, "no-identity.png", png_bytes(3))
    assert wait_until(lambda: len(received(pacs.output_dir)) == 3, 30), gateway.log()
    selected = [ds for ds in received(pacs.output_dir) if ds.AccessionNumber == "ACC1002"]
    assert len(selected) == 2
    assert {ds.PatientID for ds in selected} == {"PID-JP"}
    audit = (gateway.root / "state" / "audit.jsonl").read_text()
    assert '"procedure select"' in audit and "bind" in audit
    assert "Müller" not in gateway.log() and "PID-LAT" not in gateway.log()


def storescu_send(port: int, path: Path) -> None:
    binary = require_tool("storescu")
    proc = subprocess.run(
        [binary, "-aet", "MODALITY", "-aec", "EDGE_GW", "127.0.0.1", str(port), str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def modality_object(tmp_path: Path, accession: str, patient_id: str) -> Path:
    ds = Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.PatientName = "Typed^Wrongly"
    ds.PatientID = patient_id
    ds.AccessionNumber = accession
    ds.Modality = "OT"
    ds.ConversionType = "WSD"
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    path = tmp_path / f"{accession}.dcm"
    ds.save_as(path, enforce_file_format=True)
    return path


MWL_KEYS = [
    "PatientName",
    "PatientID",
    "AccessionNumber",
    "ScheduledProcedureStepSequence[0].Modality=US",
    f"ScheduledProcedureStepSequence[0].ScheduledProcedureStepStartDate={TODAY}",
    "ScheduledProcedureStepSequence[0].ScheduledProcedureStepID",
]


def test_modality_keeps_its_worklist_through_an_ris_outage_and_its_objects_are_coerced(
    room: tuple[GatewayProcess, WlmScp, StoreSCP, int], tmp_path: Path
) -> None:
    gateway, ris, pacs, port = room
    before, _ = findscu(port, MWL_KEYS, tmp_path / "before")
    ris.stop()
    during, _ = findscu(port, MWL_KEYS, tmp_path / "during")

    def answers(responses: list[Dataset]) -> list[tuple[str, str, str]]:
        return sorted((r.AccessionNumber, str(r.PatientName), r.PatientID) for r in responses)

    assert answers(before) == answers(during)
    assert [a for a, *_ in answers(during)] == ["ACC1001", "ACC1002"]
    assert ("ACC1001", "Müller^Jürgen", "PID-LAT") in answers(during)

    storescu_send(port, modality_object(tmp_path, "ACC1001", "PID-LAT"))
    storescu_send(port, modality_object(tmp_path, "ACC7777", "OTHER"))
    assert wait_until(lambda: len(received(pacs.output_dir)) == 2, 30), gateway.log()
    by_accession = {ds.AccessionNumber: ds for ds in received(pacs.output_dir)}
    coerced = by_accession["ACC1001"]
    assert str(coerced.PatientName) == "Müller^Jürgen"
    assert coerced.StudyInstanceUID == LATIN.StudyInstanceUID
    original = coerced.OriginalAttributesSequence[0].ModifiedAttributesSequence[0]
    assert str(original.PatientName) == "Typed^Wrongly"
    untouched = by_accession["ACC7777"]
    assert str(untouched.PatientName) == "Typed^Wrongly" and untouched.PatientID == "OTHER"


def test_the_running_daemon_serves_the_local_api_on_its_socket(
    room: tuple[GatewayProcess, WlmScp, StoreSCP, int],
) -> None:
    import httpx

    gateway, _ris, pacs, _port = room
    sock = gateway.root / "state" / "api.sock"
    transport = httpx.HTTPTransport(uds=str(sock))
    with httpx.Client(transport=transport, base_url="http://gateway") as api:
        assert api.get("/healthz").json() == {"status": "ok"}
        worklist = api.get("/api/v1/worklist").json()
        assert sorted(i["accession_number"] for i in worklist["items"]) == ["ACC1001", "ACC1002"]
        selected = api.put("/api/v1/procedure", json={"accession_number": "ACC1001"})
        assert selected.status_code == 200, selected.text
        drop(gateway.root / "drop", "from-the-device.png", png_bytes(9))
        assert wait_until(lambda: len(received(pacs.output_dir)) == 1, 30), gateway.log()
        assert api.delete("/api/v1/procedure").status_code in (200, 204)
    (bound,) = received(pacs.output_dir)
    assert bound.AccessionNumber == "ACC1001" and bound.PatientID == "PID-LAT"
    audit = (gateway.root / "state" / "audit.jsonl").read_text()
    assert '"actor": "local:' in audit
