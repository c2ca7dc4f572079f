"""Reconciler and `held` CLI: held objects made by the real converter, bound, checked with
dciodvfy, delivered to DCMTK storescp by a real DeliveryLane; discard; the audit trail."""

from __future__ import annotations

import argparse
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pydicom
import pytest

from gateway.audit import AUDIT_FILE, AuditLog
from gateway.clock import SystemClock
from gateway.config import GatewayConfig, RetrySettings
from gateway.convert.converter import Converter
from gateway.convert.grouping import StudyGrouper
from gateway.convert.uids import UidFactory
from gateway.forward.backoff import Backoff
from gateway.forward.lane import DeliveryLane
from gateway.forward.sender import StoreSender
from gateway.identity import PatientIdentity
from gateway.ingest.items import RawItem
from gateway.spool.entries import DeliveryState, ObjectSource, SourceChannel
from gateway.spool.store import Spool
from gateway.worklist.binding import HELD_NO_IDENTITY, Binding
from gateway.worklist.item import WorklistItem
from gateway.worklist.reconcile import (
    InvalidIdentityError,
    ItemNotFoundError,
    ObjectNotHeldError,
    ReconcileError,
    Reconciler,
)
from tests.convert.builders import assert_valid_dicom, gray_image, minimal_pdf
from tests.convert.conftest import MTIME, make_settings
from tests.forward.conftest import make_destination
from tests.harness import write_config
from tests.peers import StoreSCP, free_port
from tests.worklist.factory import make_item

ITEM = make_item(
    patient_name="Doe^Jane",
    patient_id="PID001",
    accession_number="ACC001",
    study_instance_uid="1.2.826.0.1.3680043.10.1.77",
    requested_procedure_id="RP001",
    step_id="SPS001",
    birth_date="19800101",
    sex="F",
)
OTHER = make_item(
    patient_name="Müller^Jörg",
    patient_id="PID002",
    accession_number="ACC002",
    study_instance_uid="1.2.826.0.1.3680043.10.1.78",
    requested_procedure_id="RP002",
    step_id="SPS002",
)
TWIN = make_item(accession_number="ACC002", study_instance_uid="1.2.826.0.1.3680043.10.1.79")


HeldCli = Callable[..., tuple[int, str, str]]


class FakeWorklist:
    """The cache's lookups over a fixed list (the real WorklistCache is tested on its own)."""

    def __init__(self, items: list[WorklistItem]) -> None:
        self.items = items

    def get(self, key: str) -> WorklistItem | None:
        return next((i for i in self.items if i.key == key), None)

    def find(
        self, *, accession_number: str | None = None, patient_id: str | None = None
    ) -> list[WorklistItem]:
        if not accession_number and not patient_id:
            return []
        return [
            i
            for i in self.items
            if (not accession_number or i.accession_number == accession_number)
            and (not patient_id or i.patient_id == patient_id)
        ]


@dataclass
class Env:
    root: Path
    spool: Spool
    converter: Converter
    audit: AuditLog
    reconciler: Reconciler
    made: int = 0

    def held_object(self, kind: str, name: str = "capture", hint: str | None = None) -> int:
        """Drop a PNG or PDF with no identity through the real converter into the spool.

        ``hint``: the valid patient ID of an identity its file name half-gave.
        """
        drop = self.root / "drop"
        drop.mkdir(exist_ok=True)
        path = drop / f"{name}.{kind}"
        self.made += 1  # different content each time: same bytes would be the same instance
        if kind == "png":
            gray_image(seed=self.made).save(path)
        else:
            path.write_bytes(minimal_pdf(text_pages=self.made))
        item = RawItem(
            path=path,
            source="export",
            size=path.stat().st_size,
            mtime=MTIME,
            binding=Binding.from_identity(PatientIdentity()),
        )
        converted = self.converter.convert(item, self.spool.staging_path())
        assert converted.held_reason == HELD_NO_IDENTITY
        origin = ObjectSource(
            SourceChannel.FILE,
            "export",
            converted.source_sha256,
            MTIME,
            file_name=path.name,
            hint_patient_id=hint,
        )
        return self.spool.enqueue(converted, "export", origin).object_id

    def payload(self, object_id: int) -> Path:
        info = self.spool.show(object_id)
        assert info is not None and info.payload is not None
        return info.payload

    def audit_lines(self) -> list[dict[str, object]]:
        path = self.root / "state" / AUDIT_FILE
        return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    clock = SystemClock()
    settings = make_settings()
    uids = UidFactory(settings.uid_root)
    grouper = StudyGrouper(tmp_path / "grouping.sqlite", settings.study_window_seconds, uids)
    grouper.open()
    spool = Spool(tmp_path / "state", ["pacs"], 1 << 30, clock)
    spool.open()
    audit = AuditLog(tmp_path / "state" / AUDIT_FILE, clock)
    worklist = FakeWorklist([ITEM, OTHER, TWIN])
    reconciler = Reconciler(spool, worklist, audit, spool.staging_dir, clock)
    yield Env(tmp_path, spool, Converter(settings, grouper, uids), audit, reconciler)
    spool.close()
    grouper.close()


def _assert_carries(path: Path, item: WorklistItem) -> pydicom.Dataset:
    ds = pydicom.dcmread(path)
    assert str(ds.PatientName) == item.patient_name
    assert ds.PatientID == item.patient_id
    assert ds.PatientBirthDate == item.patient_birth_date
    assert ds.PatientSex == item.patient_sex
    assert ds.StudyInstanceUID == item.study_instance_uid
    assert ds.AccessionNumber == item.accession_number
    assert str(ds.ReferringPhysicianName) == item.referring_physician_name
    (request,) = ds.RequestAttributesSequence
    assert request.RequestedProcedureID == item.requested_procedure_id
    assert request.ScheduledProcedureStepID == item.scheduled_procedure_step_id
    return ds


@pytest.mark.peers
@pytest.mark.parametrize("kind", ["png", "pdf"])
def test_binding_a_held_object_to_an_item_gives_a_valid_object_with_the_items_values(
    env: Env, kind: str
) -> None:
    object_id = env.held_object(kind)
    before = pydicom.dcmread(env.payload(object_id))
    assert [i.object_id for i in env.reconciler.list_held()] == [object_id]

    result = env.reconciler.bind_to_item(object_id, ITEM.key, "cli:tester")

    ds = _assert_carries(env.payload(object_id), ITEM)
    assert ds.SOPInstanceUID == before.SOPInstanceUID == result.sop_instance_uid
    assert result.study_instance_uid == ITEM.study_instance_uid
    history = ds.OriginalAttributesSequence[0]
    assert history.ReasonForTheAttributeModification == "CORRECT"
    assert history.ModifiedAttributesSequence[0].PatientID == ""
    if kind == "png":
        assert ds.PixelData == before.PixelData
    else:
        assert ds.EncapsulatedDocument == before.EncapsulatedDocument
    assert_valid_dicom(env.payload(object_id))  # no error, no avoidable warning
    info = env.spool.show(object_id)
    assert info is not None and info.held_reason is None
    assert info.study_instance_uid == ITEM.study_instance_uid
    assert [d.state for d in info.deliveries] == [DeliveryState.PENDING]
    assert env.reconciler.list_held() == []
    (line,) = env.audit_lines()
    assert line["actor"] == "cli:tester"
    assert line["action"] == "held.bind_item"
    assert line["target"] == f"object:{object_id}"
    assert line["details"] == {
        "item_key": ITEM.key,
        "accession_number": "ACC001",
        "sop_instance_uid": result.sop_instance_uid,
        "study_instance_uid": ITEM.study_instance_uid,
        "deliveries": 1,
    }


@pytest.mark.peers
def test_a_non_ascii_patient_gets_utf8_and_stays_valid(env: Env) -> None:
    object_id = env.held_object("png")
    env.reconciler.bind_to_accession(object_id, "ACC001", "cli:tester")  # unique accession
    other_id = env.held_object("png", name="second")
    env.reconciler.bind_to_item(other_id, OTHER.key, "cli:tester")
    ds = pydicom.dcmread(env.payload(other_id))
    assert ds.SpecificCharacterSet == "ISO_IR 192"
    assert str(ds.PatientName) == "Müller^Jörg"
    assert_valid_dicom(env.payload(other_id))  # no error, no avoidable warning


@pytest.mark.peers
def test_the_bound_object_reaches_storescp_with_the_bound_patient(
    env: Env, storescp_factory: type[StoreSCP]
) -> None:
    port = free_port()
    pacs = storescp_factory(env.root / "pacs", port=port).start()
    object_id = env.held_object("png")
    env.reconciler.bind_to_item(object_id, ITEM.key, "cli:tester")

    clock = SystemClock()
    backoff = Backoff(RetrySettings(initial_seconds=0.2, max_seconds=1.0), uniform=lambda: 0.5)
    sender = StoreSender(make_destination(port), "EDGE_GW", None, clock)
    lane = DeliveryLane(
        make_destination(port), env.spool, sender, backoff, clock, logging.getLogger("test")
    )
    stop = threading.Event()
    thread = threading.Thread(target=lane.run, args=(stop,))
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            info = env.spool.show(object_id)
            assert info is not None
            if info.deliveries[0].state == DeliveryState.SENT:
                break
            time.sleep(0.05)
    finally:
        stop.set()
        env.spool.wake_all()
        thread.join(15)
    assert info.deliveries[0].state == DeliveryState.SENT, info.deliveries[0]
    (received,) = pacs.received()
    _assert_carries(received, ITEM)


def test_accession_lookup_must_be_unique(env: Env) -> None:
    object_id = env.held_object("png")
    with pytest.raises(ItemNotFoundError, match="matches 2 worklist items"):
        env.reconciler.bind_to_accession(object_id, "ACC002", "cli:tester")
    with pytest.raises(ItemNotFoundError, match="no worklist item"):
        env.reconciler.bind_to_accession(object_id, "NOPE", "cli:tester")
    with pytest.raises(ItemNotFoundError, match="unknown or expired"):
        env.reconciler.bind_to_item(object_id, "0" * 32, "cli:tester")
    assert [i.object_id for i in env.reconciler.list_held()] == [object_id]
    assert not (env.root / "state" / AUDIT_FILE).exists()  # refusals change nothing


@pytest.mark.peers
def test_typed_demographics_bind_the_patient_and_no_order(env: Env) -> None:
    object_id = env.held_object("pdf")
    identity = PatientIdentity(
        patient_id="TYPED-9",
        patient_name="Smith^Anna",
        accession_number="ACC777",
        birth_date="19750203",
        sex="F",
    )
    env.reconciler.bind_to_demographics(object_id, identity, "api:nurse")

    ds = pydicom.dcmread(env.payload(object_id))
    assert (ds.PatientID, str(ds.PatientName), ds.AccessionNumber) == (
        "TYPED-9",
        "Smith^Anna",
        "ACC777",
    )
    assert (ds.PatientBirthDate, ds.PatientSex) == ("19750203", "F")
    assert "RequestAttributesSequence" not in ds
    assert_valid_dicom(env.payload(object_id))  # no error, no avoidable warning
    (line,) = env.audit_lines()
    assert line["action"] == "held.bind_demographics"
    assert line["details"]["fields"] == [  # type: ignore[index]
        "patient_id",
        "patient_name",
        "birth_date",
        "sex",
        "accession_number",
    ]
    text = (env.root / "state" / AUDIT_FILE).read_text()
    assert "TYPED-9" not in text and "Smith" not in text and "19750203" not in text


def test_held_objects_bound_to_two_patients_never_share_a_study(env: Env) -> None:
    # Two identity-less drops in one study window, each bound by the operator to its own
    # patient: binding keeps the Study and Series UIDs, so the ingest must have given each its
    # own (issue 10 review: both were grouped under "no patient ID, no accession").
    first = env.held_object("png", name="P501_" + "L" * 70 + "_a")
    second = env.held_object("png", name="P502_" + "L" * 70 + "_a")
    for object_id, pid in ((first, "TYPED-1"), (second, "TYPED-2")):
        identity = PatientIdentity(patient_id=pid, patient_name="Smith^Anna")
        env.reconciler.bind_to_demographics(object_id, identity, "api:nurse")
    one, two = (pydicom.dcmread(env.payload(object_id)) for object_id in (first, second))
    assert (one.PatientID, two.PatientID) == ("TYPED-1", "TYPED-2")
    assert one.StudyInstanceUID != two.StudyInstanceUID
    assert one.SeriesInstanceUID != two.SeriesInstanceUID
    # The queue's record of the study follows the file: two studies there, too.
    infos = [env.spool.show(object_id) for object_id in (first, second)]
    assert len({info.study_instance_uid for info in infos if info is not None}) == 2


@pytest.mark.parametrize(
    ("identity", "message"),
    [
        (PatientIdentity(patient_name="Smith^Anna"), "patient ID is required"),
        (PatientIdentity(patient_id="   "), "patient ID is required"),
        (PatientIdentity(patient_id="P\\1"), "patient ID contains"),
        (PatientIdentity(patient_id="P1", birth_date="1975-02-03"), "YYYYMMDD"),
        (PatientIdentity(patient_id="P1", birth_date="19750231"), "YYYYMMDD"),
        (PatientIdentity(patient_id="P1", sex="X"), "M, F or O"),
        (PatientIdentity(patient_id="P1", accession_number="A" * 17), "accession number"),
    ],
)
def test_invalid_demographics_are_refused(
    env: Env, identity: PatientIdentity, message: str
) -> None:
    object_id = env.held_object("png")
    with pytest.raises(InvalidIdentityError, match=message):
        env.reconciler.bind_to_demographics(object_id, identity, "cli:tester")
    assert [i.object_id for i in env.reconciler.list_held()] == [object_id]


def test_discard_is_audited_and_a_second_action_is_refused(env: Env) -> None:
    object_id = env.held_object("png")
    kept = env.reconciler.discard(object_id, "test shot, no patient", "cli:tester")
    assert kept.exists()
    assert env.reconciler.list_held() == []
    (line,) = env.audit_lines()
    assert (line["action"], line["target"]) == ("held.discard", f"object:{object_id}")
    assert line["details"] == {"reason": "test shot, no patient", "kept": str(kept)}
    with pytest.raises(ObjectNotHeldError):
        env.reconciler.discard(object_id, "again", "cli:tester")
    with pytest.raises(ObjectNotHeldError):
        env.reconciler.bind_to_item(object_id, ITEM.key, "cli:tester")
    with pytest.raises(ReconcileError, match="reason"):
        env.reconciler.discard(env.held_object("png", "other"), " ", "cli:tester")


def test_show_gives_the_header_values_and_candidate_items(env: Env) -> None:
    object_id = env.held_object("png")
    view = env.reconciler.show(object_id)
    assert view.info.held_reason == HELD_NO_IDENTITY
    assert view.attributes["PatientID"] == ""
    assert view.attributes["Modality"] == "OT"
    assert view.candidates == ()  # nothing to go by: no accession, no patient ID


def test_a_patient_id_the_file_name_half_gave_finds_candidates_but_binds_nothing(
    env: Env,
) -> None:
    object_id = env.held_object("png", hint=ITEM.patient_id)
    view = env.reconciler.show(object_id)
    assert ITEM in view.candidates  # offered to the operator...
    assert {i.patient_id for i in view.candidates} == {ITEM.patient_id}
    assert view.attributes["PatientID"] == ""  # ...but not written into the object
    assert [i.object_id for i in env.reconciler.list_held()] == [object_id]  # still held


# -- the `held` CLI --------------------------------------------------------------------------


@pytest.fixture
def held_cli(
    env: Env, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> Iterator[HeldCli]:
    """Runs `held ...` in-process against env's state dir, as `cli:tester`."""
    from contextlib import contextmanager

    from gateway.cli_held import register

    config = write_config(env.root, free_port())
    monkeypatch.setenv("SUDO_USER", "tester")

    @contextmanager
    def open_cache(config: GatewayConfig) -> Iterator[FakeWorklist]:
        assert config.gateway.state_dir == env.root / "state"
        yield FakeWorklist([ITEM, OTHER, TWIN])

    parser = argparse.ArgumentParser(prog="dicom-gateway")
    register(parser.add_subparsers(dest="command", required=True), open_cache)

    def run(*argv: str) -> tuple[int, str, str]:
        args = parser.parse_args(["held", *argv, "--config", str(config)])
        code = int(args.func(args))
        out, err = capsys.readouterr()
        return code, out, err

    yield run


def test_cli_held_list_says_how_many_are_left_out_and_pages_with_offset(
    env: Env, held_cli: HeldCli
) -> None:
    ids = [env.held_object("png", f"p{i}") for i in range(3)]
    code, out, _ = held_cli("list", "--limit", "2")
    assert code == 0
    assert out.splitlines()[-1] == "showing 1-2 of 3; next: --offset 2"
    assert "from export: p0.png, arrived " in out
    code, out, err = held_cli("list", "--limit", "2", "--offset", "2", "--json")
    assert [r["object_id"] for r in json.loads(out)] == ids[2:]
    assert err.strip() == "showing 3-3 of 3"


def test_cli_lists_binds_shows_and_discards(env: Env, held_cli: HeldCli) -> None:
    run = held_cli
    first, second = env.held_object("png", "a"), env.held_object("pdf", "b")

    code, out, _ = run("list", "--json")
    assert code == 0
    assert [r["object_id"] for r in json.loads(out)] == [first, second]
    code, out, _ = run("list")
    assert code == 0 and HELD_NO_IDENTITY in out

    code, out, _ = run("show", str(first))
    assert code == 0 and json.loads(out)["info"]["object_id"] == first

    code, out, _ = run("bind", str(first), "--accession", "ACC001")
    assert code == 0 and f"object {first} bound" in out
    code, _, err = run("bind", str(first), "--accession", "ACC001")
    assert code == 1 and "not held" in err
    code, _, err = run("bind", str(second), "--patient-id", "P1")
    assert code == 2 and "--patient-name" in err
    code, _, err = run("bind", str(second))
    assert code == 2

    code, out, _ = run("discard", str(second), "--reason", "duplicate export")
    assert code == 0 and "discarded" in out
    assert [(r["actor"], r["action"]) for r in env.audit_lines()] == [
        ("cli:tester", "held.bind_item"),
        ("cli:tester", "held.discard"),
    ]
    code, out, _ = run("list", "--json")
    assert json.loads(out) == []
